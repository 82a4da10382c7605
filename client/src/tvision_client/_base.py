"""State and I/O-free steps shared by ``Client`` and ``AsyncClient``.

The two clients differ only in how they call (``grpc`` or ``grpc.aio`` channels, blocking
or awaited); everything they hold and every request they build comes from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tvision_client import _core
from tvision_client._errors import ClientError
from tvision_client._images import ImageInput, encode_image
from tvision_client._types import ModelInfo, RetryPolicy, RetryStats, TLSConfig

# (target, credentials or None for plaintext, options) -> a grpc or grpc.aio channel
ChannelFactory = Callable[[str, "grpc.ChannelCredentials | None", list[tuple[str, Any]]], Any]


class ClientBase:
    def __init__(
        self,
        target: str | Sequence[str],
        *,
        model: str,
        timeout_s: float,
        retry: RetryPolicy | None,
        tls: TLSConfig | None,
        metadata: dict[str, str] | None,
        max_message_bytes: int,
        max_concurrency: int,
        channel_factory: ChannelFactory,
    ) -> None:
        self.endpoints = _core.parse_endpoints(target)
        self.model = model
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.max_message_bytes = max_message_bytes
        self.max_concurrency = max_concurrency
        self._metadata = tuple((key.lower(), value) for key, value in (metadata or {}).items())
        options = _core.channel_options(max_message_bytes, tls)
        credentials = _core.channel_credentials(tls) if tls is not None else None
        self._channels = [
            channel_factory(endpoint, credentials, options) for endpoint in self.endpoints
        ]
        self._stubs = [service_pb2_grpc.GRPCInferenceServiceStub(ch) for ch in self._channels]
        self._picker = _core.LeastOutstanding(len(self._stubs))
        self._retry_budget = _core.RetryBudget(self.retry)
        self._cool_down = _core.EndpointCoolDown()
        self._model_info: dict[str, ModelInfo] = {}

    def _deadline(self, timeout_s: float | None) -> _core.Deadline:
        return _core.Deadline(timeout_s if timeout_s is not None else self.timeout_s)

    def _retrying_call(self, timeout_s: float | None, what: str) -> _core.RetryingCall:
        return _core.RetryingCall(
            self.retry,
            self._deadline(timeout_s),
            what,
            endpoints=len(self._stubs),
            budget=self._retry_budget,
            cool_down=self._cool_down,
        )

    def retry_stats(self) -> RetryStats:
        """Calls made, retries spent and retries the budget refused, since the client began."""
        return self._retry_budget.stats()

    def _begin(self, call: _core.RetryingCall) -> tuple[int, Any, float]:
        """Pick an endpoint for the next attempt of ``call``: its index, its stub and the
        attempt's timeout. The attempt is in flight until ``_end(index)``."""
        index = self._picker.pick(avoid=call.avoid())
        return index, self._stubs[index], call.begin_attempt(index)

    def _end(self, index: int) -> None:
        self._picker.done(index)

    def _ready_request(self) -> tuple[service_pb2.ModelReadyRequest, str]:
        return service_pb2.ModelReadyRequest(name=self.model), f"readiness of {self.model!r}"

    def _cached_info(self, model: str | None) -> tuple[str, ModelInfo | None]:
        name = model or self.model
        return name, self._model_info.get(name)

    def _remember_info(self, name: str, metadata: Any, config: Any) -> ModelInfo:
        info = _core.parse_model_info(metadata, config)
        self._model_info[name] = info
        return info

    @staticmethod
    def _info_error(name: str, exc: ClientError) -> ClientError:
        """An unknown model becomes ModelNotFoundError; other errors pass through."""
        if exc.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            return _core.not_found_error(name, exc.__cause__)
        return exc

    def _classify_request(
        self, info: ModelInfo, image: ImageInput, name: str, top_k: int
    ) -> service_pb2.ModelInferRequest:
        data = encode_image(image)
        limit = _core.image_byte_limit(info, self.max_message_bytes)
        _core.check_image_size(data, _core.image_name(image), limit)
        names = _core.TensorNames(info.input_name, info.output_name)
        return _core.build_infer_request(name, names, [data], top_k)


def sync_channel(
    target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)


def async_channel(
    target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)
