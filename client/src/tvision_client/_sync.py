"""The blocking client. All logic is in ``_core``; this module only makes the calls."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Literal, overload

import grpc
from tritonclient.grpc import service_pb2

from tvision_client import _core
from tvision_client._base import ClientBase, sync_channel
from tvision_client._errors import ClientError, UnavailableError
from tvision_client._images import ImageInput
from tvision_client._types import Classification, ModelInfo, RetryPolicy, TLSConfig


class Client(ClientBase):
    """A blocking client for one tvision (Triton) deployment.

    Args:
        target: ``"host:port"``, several as a list or comma-separated (each call to the
            one with the fewest calls in flight, failing over between them), or
            ``"dns:///name:port"`` for a headless Service.
        model: the ensemble to call by default.
        timeout_s: the default deadline of each call, retries included.
        retry: the retry policy, with each attempt's timeout; ``NO_RETRY`` disables
            retries.
        tls: server TLS or mutual TLS; None for a plaintext channel.
        metadata: headers sent with every call, e.g. ``{"authorization": "Bearer ..."}``.
        max_message_bytes: the gRPC message limit set on the channel, both directions.
        max_concurrency: how many requests ``classify_batch`` keeps in flight.
    """

    def __init__(
        self,
        target: str | Sequence[str] = "localhost:8001",
        *,
        model: str = _core.DEFAULT_MODEL,
        timeout_s: float = _core.DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        tls: TLSConfig | None = None,
        metadata: dict[str, str] | None = None,
        max_message_bytes: int = _core.DEFAULT_MAX_MESSAGE_BYTES,
        max_concurrency: int = _core.DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        super().__init__(
            target,
            model=model,
            timeout_s=timeout_s,
            retry=retry,
            tls=tls,
            metadata=metadata,
            max_message_bytes=max_message_bytes,
            max_concurrency=max_concurrency,
            channel_factory=sync_channel,
        )

    # -- the one place that calls the server -------------------------------------------

    def _call(self, method: str, request: object, what: str, timeout_s: float | None) -> Any:
        call = self._retrying_call(timeout_s, what)
        while True:
            index, stub, attempt_timeout_s = self._begin(call)
            try:
                try:
                    return getattr(stub, method)(
                        request, timeout=attempt_timeout_s, metadata=self._metadata
                    )
                finally:
                    self._end(index)  # before the backoff: a sleeping retry is not in flight
            except grpc.RpcError as exc:
                time.sleep(call.after_failure(index, exc))

    # -- health and metadata -----------------------------------------------------------

    def is_ready(self, timeout_s: float | None = None) -> bool:
        """True when a server answers that it and the default model are ready."""
        try:
            reply = self._call("ModelReady", *self._ready_request(), timeout_s)
        except ClientError:
            return False
        return bool(reply.ready)

    def wait_until_ready(self, timeout_s: float = 60.0, poll_interval_s: float = 0.25) -> None:
        """Block until ``is_ready()``.

        Raises:
            UnavailableError: not ready within ``timeout_s``.
        """
        deadline = _core.Deadline(timeout_s)
        while not deadline.expired():
            if self.is_ready(timeout_s=max(0.1, min(2.0, deadline.remaining_s()))):
                return
            time.sleep(min(poll_interval_s, deadline.remaining_s()))
        raise UnavailableError(f"model {self.model!r} was not ready within {timeout_s:g} s")

    def model_info(self, model: str | None = None, timeout_s: float | None = None) -> ModelInfo:
        """Input and output names, labels count and limits, read from the server (cached).

        Raises:
            ModelNotFoundError: the server has no such model.
            ClientError: any other failure.
        """
        name, cached = self._cached_info(model)
        if cached is not None:
            return cached
        what = f"metadata of model {name!r}"
        try:
            metadata = self._call(
                "ModelMetadata", service_pb2.ModelMetadataRequest(name=name), what, timeout_s
            )
            config = self._call(
                "ModelConfig", service_pb2.ModelConfigRequest(name=name), what, timeout_s
            )
        except ClientError as exc:
            error = self._info_error(name, exc)
            if error is exc:
                raise
            raise error from exc.__cause__
        return self._remember_info(name, metadata, config)

    # -- classification ----------------------------------------------------------------

    def classify(
        self,
        image: ImageInput,
        top_k: int = 5,
        *,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> Classification:
        """Classify one image: a path, bytes, a binary file, a PIL image or an HxWx3 array.

        Raises:
            InvalidImageError: the image was rejected before sending.
            InvalidInputError: the server could not decode or accept the image.
            ModelNotFoundError, UnavailableError, DeadlineExceededError, ClientError.
        """
        name = model or self.model
        info = self.model_info(name, timeout_s)
        request = self._classify_request(info, image, name, top_k)
        try:
            response = self._call("ModelInfer", request, f"classify with {name!r}", timeout_s)
        except ClientError as exc:
            named = _core.naming_the_file(exc, image)
            if named is exc:
                raise
            raise named from exc.__cause__
        return _core.parse_classifications(response, 1, name)[0]

    @overload
    def classify_batch(
        self,
        images: Iterable[ImageInput],
        top_k: int = ...,
        *,
        model: str | None = ...,
        timeout_s: float | None = ...,
        return_exceptions: Literal[False] = ...,
    ) -> list[Classification]: ...

    @overload
    def classify_batch(
        self,
        images: Iterable[ImageInput],
        top_k: int = ...,
        *,
        model: str | None = ...,
        timeout_s: float | None = ...,
        return_exceptions: Literal[True],
    ) -> list[Classification | ClientError]: ...

    def classify_batch(
        self,
        images: Iterable[ImageInput],
        top_k: int = 5,
        *,
        model: str | None = None,
        timeout_s: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Classification] | list[Classification | ClientError]:
        """Classify many images, in input order, with at most ``max_concurrency`` in flight.

        Each image is its own request, so Triton's dynamic batcher batches them on the
        server and one bad image fails only itself. With ``return_exceptions=True`` a failed
        image yields its ``ClientError`` in its place; otherwise the first error is raised.

        Raises:
            ClientError: an image failed and ``return_exceptions`` is False.
        """
        items = list(images)
        if not items:
            return []
        self.model_info(model, timeout_s)  # fail fast, once, on an unknown model

        def one(image: ImageInput) -> Classification | ClientError:
            try:
                return self.classify(image, top_k, model=model, timeout_s=timeout_s)
            except ClientError as exc:
                if not return_exceptions:
                    raise
                return exc

        workers = max(1, min(self.max_concurrency, len(items)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tvision") as pool:
            return list(pool.map(one, items))

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
