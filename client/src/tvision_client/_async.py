"""The asyncio client: the same methods as ``Client``, each awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, overload

import grpc
from tritonclient.grpc import service_pb2

from tvision_client import _core
from tvision_client._base import ClientBase, async_channel
from tvision_client._errors import ClientError, UnavailableError
from tvision_client._images import ImageInput
from tvision_client._types import Classification, ModelInfo, RetryPolicy, TLSConfig


class AsyncClient(ClientBase):
    """An asyncio client; arguments and behaviour as for ``Client``."""

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
            channel_factory=async_channel,
        )

    async def _call(self, method: str, request: object, what: str, timeout_s: float | None) -> Any:
        call = self._retrying_call(timeout_s, what)
        while True:
            index, stub, attempt_timeout_s = self._begin(call)
            try:
                try:
                    return await getattr(stub, method)(
                        request, timeout=attempt_timeout_s, metadata=self._metadata
                    )
                finally:
                    self._end(index)  # before the backoff: a sleeping retry is not in flight
            except grpc.RpcError as exc:
                await asyncio.sleep(call.after_failure(index, exc))

    async def is_ready(self, timeout_s: float | None = None) -> bool:
        """True when a server answers that it and the default model are ready."""
        try:
            reply = await self._call("ModelReady", *self._ready_request(), timeout_s)
        except ClientError:
            return False
        return bool(reply.ready)

    async def wait_until_ready(
        self, timeout_s: float = 60.0, poll_interval_s: float = 0.25
    ) -> None:
        """Wait until ``is_ready()``.

        Raises:
            UnavailableError: not ready within ``timeout_s``.
        """
        deadline = _core.Deadline(timeout_s)
        while not deadline.expired():
            if await self.is_ready(timeout_s=max(0.1, min(2.0, deadline.remaining_s()))):
                return
            await asyncio.sleep(min(poll_interval_s, deadline.remaining_s()))
        raise UnavailableError(f"model {self.model!r} was not ready within {timeout_s:g} s")

    async def model_info(
        self, model: str | None = None, timeout_s: float | None = None
    ) -> ModelInfo:
        """As ``Client.model_info``.

        Raises:
            ModelNotFoundError: the server has no such model.
            ClientError: any other failure.
        """
        name, cached = self._cached_info(model)
        if cached is not None:
            return cached
        what = f"metadata of model {name!r}"
        try:
            metadata = await self._call(
                "ModelMetadata", service_pb2.ModelMetadataRequest(name=name), what, timeout_s
            )
            config = await self._call(
                "ModelConfig", service_pb2.ModelConfigRequest(name=name), what, timeout_s
            )
        except ClientError as exc:
            error = self._info_error(name, exc)
            if error is exc:
                raise
            raise error from exc.__cause__
        return self._remember_info(name, metadata, config)

    async def classify(
        self,
        image: ImageInput,
        top_k: int = 5,
        *,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> Classification:
        """As ``Client.classify``.

        Raises:
            InvalidImageError, InvalidInputError, ModelNotFoundError, UnavailableError,
            DeadlineExceededError, ClientError.
        """
        name = model or self.model
        info = await self.model_info(name, timeout_s)
        request = self._classify_request(info, image, name, top_k)
        try:
            response = await self._call("ModelInfer", request, f"classify with {name!r}", timeout_s)
        except ClientError as exc:
            named = _core.naming_the_file(exc, image)
            if named is exc:
                raise
            raise named from exc.__cause__
        return _core.parse_classifications(response, 1, name)[0]

    @overload
    async def classify_batch(
        self,
        images: Iterable[ImageInput],
        top_k: int = ...,
        *,
        model: str | None = ...,
        timeout_s: float | None = ...,
        return_exceptions: Literal[False] = ...,
    ) -> list[Classification]: ...

    @overload
    async def classify_batch(
        self,
        images: Iterable[ImageInput],
        top_k: int = ...,
        *,
        model: str | None = ...,
        timeout_s: float | None = ...,
        return_exceptions: Literal[True],
    ) -> list[Classification | ClientError]: ...

    async def classify_batch(
        self,
        images: Iterable[ImageInput],
        top_k: int = 5,
        *,
        model: str | None = None,
        timeout_s: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Classification] | list[Classification | ClientError]:
        """As ``Client.classify_batch``.

        Raises:
            ClientError: an image failed and ``return_exceptions`` is False.
        """
        items = list(images)
        if not items:
            return []
        await self.model_info(model, timeout_s)
        semaphore = asyncio.Semaphore(max(1, self.max_concurrency))

        async def one(image: ImageInput) -> Classification | ClientError:
            async with semaphore:
                try:
                    return await self.classify(image, top_k, model=model, timeout_s=timeout_s)
                except ClientError as exc:
                    if not return_exceptions:
                        raise
                    return exc

        return list(await asyncio.gather(*(one(image) for image in items)))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
