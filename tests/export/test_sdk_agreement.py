"""The SDK's copies of the exporter's names agree with the originals.

Neither package imports the other (the SDK is installed alone; the exporter is not the
SDK's dependency), so the two names the SDK must know are tied here, where both import.
"""

from __future__ import annotations

from tvision_client import DEFAULT_MODEL
from tvision_client._core import MAX_IMAGE_BYTES_PARAMETER
from tvision_export import contract
from tvision_export.spec import DEFAULT_SPEC


def test_the_sdks_default_model_is_the_exporters_default_spec() -> None:
    # Client() with no model= calls the ensemble that `tvision export` writes by default.
    assert DEFAULT_SPEC.name == DEFAULT_MODEL


def test_the_sdk_reads_the_image_limit_under_the_contracts_name() -> None:
    assert MAX_IMAGE_BYTES_PARAMETER == contract.PARAM_MAX_IMAGE_BYTES


def test_two_default_batches_from_one_address_fit_the_edges_per_client_cap() -> None:
    """classify_batch keeps max_concurrency calls in flight; the server's edge refuses more
    than max_requests_per_client from one address. Two batches at the default must fit."""
    from tvision.edge import EdgeLimits
    from tvision_client._core import DEFAULT_MAX_CONCURRENCY

    assert EdgeLimits().max_requests_per_client >= 2 * DEFAULT_MAX_CONCURRENCY
