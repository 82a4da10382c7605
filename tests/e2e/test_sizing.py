"""/dev/shm sizing from the limits (tvision.sizing), read from a real export."""

from __future__ import annotations

import pytest

from tvision import sizing
from tvision.edge import EdgeLimits
from tvision.server import ServerPorts, TritonServer
from tvision_export.options import ServingOptions

MIB = 2**20


def test_the_repositorys_worst_case_matches_the_plan_for_its_options(cpu_repository) -> None:
    """Two ways to the same number: from the exported configs, and from the options."""
    limit = EdgeLimits().max_request_bytes
    from_configs = sizing.repository_shared_memory_bytes(cpu_repository, limit)
    planned = sizing.plan_for_options(
        ServingOptions(), limit, tensor_bytes=3 * 224 * 224 * 4, num_classes=1000
    )
    assert from_configs == planned.total_bytes
    # The intake model runs batches of one: it holds one request in and out, not 32.
    assert planned.intake_bytes == 2 * (MIB + 2 * limit)


def test_fake_small_dev_shm_makes_the_launcher_warn(cpu_repository, monkeypatch) -> None:
    """A fake: /dev/shm's size is replaced, since this machine's cannot be shrunk for one
    test; the plan it is compared with is the real repository's."""
    monkeypatch.setattr(sizing, "dev_shm_bytes", lambda path="/dev/shm": 64 * MIB)
    server = TritonServer(cpu_repository, ServerPorts.free())
    with pytest.warns(UserWarning, match="/dev/shm holds 0.1 GiB"):
        server._check_shared_memory()
    monkeypatch.setattr(sizing, "dev_shm_bytes", lambda path="/dev/shm": 64 * 2**30)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        server._check_shared_memory()
