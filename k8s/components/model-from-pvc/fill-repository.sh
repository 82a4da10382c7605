#!/bin/sh
# Copy one repository snapshot from object storage onto the shared volume, once.
#   TVISION_SNAPSHOT_SOURCE  s3://BUCKET/PREFIX/snapshots/DIGEST (what `tvision repo push` prints;
#                            the init container's env makes it from the overlay's STORE and ID)
#   AWS_ENDPOINT_URL         optional, for S3-compatible stores (read by the AWS CLI)
#   TVISION_REPOSITORY_DIR   the volume's mount path (default /models)
# The copy goes to a directory of this pod's own and is renamed into place only when the
# snapshot's manifest (written last by `tvision repo push`) arrived, so a pod never serves
# a partial copy, and pods starting together do not write into each other's copy.
set -eu
source="${TVISION_SNAPSHOT_SOURCE%/}"
snapshot="${source##*/}"
volume="${TVISION_REPOSITORY_DIR:-/models}"
target="${volume}/${snapshot}"
if [ -f "${target}/tvision-snapshot.json" ]; then
  echo "snapshot ${snapshot} is already on the volume"
  exit 0
fi
partial="${volume}/.partial-${snapshot}-${HOSTNAME}"
rm -rf "${partial}"
aws s3 cp --recursive --only-show-errors "${source}/" "${partial}/"
if [ ! -f "${partial}/tvision-snapshot.json" ]; then
  echo "error: ${source} has no tvision-snapshot.json: not a complete snapshot" >&2
  rm -rf "${partial}"
  exit 1
fi
if ! mv -T "${partial}" "${target}" 2>/dev/null; then
  # Another pod finished first; its copy is the same immutable snapshot.
  rm -rf "${partial}"
fi
echo "snapshot ${snapshot} copied to ${target}"
