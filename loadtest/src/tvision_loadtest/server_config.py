"""The served model's configuration, as a digest that a baseline keeps and compares.

Read with tritonclient's gRPC client, which the SDK depends on: the SDK exposes no call
for a model's whole config.
"""

from __future__ import annotations

import hashlib
import json


def digest(host: str, model: str) -> str:
    """A digest of the served ensemble's and its composing models' configs (open APIs)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(host)
    try:
        configs = {}
        pending = [model]
        while pending:
            name = pending.pop()
            config = client.get_model_config(name, as_json=True)["config"]
            configs[name] = config
            for step in config.get("ensemble_scheduling", {}).get("step", []):
                pending.append(step["model_name"])
        return hashlib.sha256(json.dumps(configs, sort_keys=True).encode()).hexdigest()
    finally:
        client.close()
