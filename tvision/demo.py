"""``tvision demo``: serve the exported repository and classify the bundled sample photos."""

from __future__ import annotations

import sys
from pathlib import Path

from tvision.exit_codes import EXIT_COULD_NOT_RUN, EXIT_OK
from tvision.server import ServerError, ServerPorts, TritonServer


def run_demo(repository: Path, top_k: int = 5) -> int:
    """Start the real server on free loopback ports, classify, print, stop.

    Returns the process exit code.
    """
    from tvision_client import Client, ClientError
    from tvision_export.samples import sample_photos

    server = TritonServer(repository, ServerPorts.free())
    print(f"starting tritonserver on {repository} (free loopback ports) ...", flush=True)
    try:
        server.start()
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    try:
        print(f"ready: gRPC {server.grpc_url}, HTTP {server.http_url}\n", flush=True)
        photos = sample_photos()
        with Client(server.grpc_url, timeout_s=60) as client:
            info = client.model_info()
            print(f"model {info.name}: {info.num_classes} classes, versions {info.versions}\n")
            results = client.classify_batch([photo.path for photo in photos], top_k=top_k)
        for photo, result in zip(photos, results, strict=True):
            print(f"{photo.name} ({photo.path.name})")
            for prediction in result.predictions:
                print(f"  {prediction.score:7.2%}  {prediction.label}")
        return EXIT_OK
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    finally:
        server.stop()
        print("\nserver stopped", flush=True)
