"""The repository a server serves: a local directory or a remote one (``is_remote``, the
one definition in ``tvision_export.snapshots``), and the edge limits its models imply."""

from __future__ import annotations

from pathlib import Path

from tvision.edge import EdgeLimits


def as_served(repository: Path | str) -> Path | str:
    """A remote repository as Triton spells it (s3://...), or a resolved local path."""
    from tvision_export import snapshots

    if snapshots.is_remote(repository):
        return str(repository)
    return Path(repository).resolve()


def served_repository(repository: str, endpoint_url: str | None) -> str | Path:
    """A local path, or a complete remote snapshot as Triton's --model-repository spells it.

    Raises:
        tvision_export.snapshots.StoreError: a remote location that is not a complete
            snapshot, or a store that cannot be reached.
    """
    from tvision_export import snapshots

    if not snapshots.is_remote(repository):
        return Path(repository)
    location = snapshots.StoreLocation.parse(repository, endpoint_url)
    snapshots.require_complete(location)
    return location.triton_uri()


def edge_limits_for(repository: Path | str, **given: int) -> EdgeLimits:
    """Edge limits whose body limit admits one image at the largest byte limit any model
    in a local ``repository`` has; the default limits for a remote one. ``given`` sets
    other limits (``max_requests_per_client=...``)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from tvision_export import contract

    if isinstance(repository, str) or not repository.is_dir():
        return EdgeLimits(**given)
    limits = []
    for config_file in repository.glob("*/config.pbtxt"):
        try:
            config = text_format.Parse(config_file.read_text(), model_config_pb2.ModelConfig())
        except (OSError, text_format.ParseError):
            continue  # Triton names a broken config when it loads it
        value = config.parameters.get(contract.PARAM_MAX_IMAGE_BYTES)
        if value is not None and value.string_value.isdigit():
            limits.append(int(value.string_value))
    return EdgeLimits.for_image_bytes(max(limits), **given) if limits else EdgeLimits(**given)
