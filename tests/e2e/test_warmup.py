"""A fresh real server has run the cpu classifier's warmup at every batch size the exported
config names (README: "Warmup runs the classifier once at every preferred batch size and at
`max_batch_size`, on both targets, before the model reports ready").

This starts its own server: the session server has served requests by the time this runs,
so its statistics cannot tell warmup from traffic.
"""

from __future__ import annotations

import pytest
import tritonclient.grpc as grpcclient

from tests.export.test_warmup import NAMES, warmup_batch_sizes
from tvision.server import temporary_server

pytestmark = pytest.mark.e2e


def test_a_fresh_server_ran_the_classifier_at_every_warmup_batch_size(cpu_repository) -> None:
    expected = warmup_batch_sizes(cpu_repository)
    assert len(expected) == 3
    with temporary_server(cpu_repository) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            # Ready, and not a request sent: every execution counted is the warmup's.
            stats = client.get_inference_statistics(headers=server.admin_grpc_headers)
        finally:
            client.close()
    by_model = {model.name: model for model in stats.model_stats}
    assert by_model[NAMES.ensemble].inference_count == 0
    executed = {
        batch.batch_size: batch.compute_infer.count
        for batch in by_model[NAMES.classifier].batch_stats
    }
    assert set(executed) == expected, executed
    assert all(count >= 1 for count in executed.values()), executed
