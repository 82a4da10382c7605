"""The Locust users: each owns one SDK client and reports each call to Locust."""

from __future__ import annotations

import time
from typing import ClassVar

from locust import User, events, task
from locust.env import Environment

from tvision_client import Client, ClientError
from tvision_loadtest.flags import UserSettings
from tvision_loadtest.images import load_images

REQUEST_TYPE = "grpc"


class TritonUser(User):
    """A user that owns one SDK client and reports each call to Locust."""

    abstract = True
    _images: ClassVar[list[bytes]] = []

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        settings = UserSettings.of(environment.parsed_options)
        self.model = settings.model
        self.top_k = settings.top_k
        if not TritonUser._images:
            TritonUser._images = load_images(settings.images)
        self.client = Client(
            self.host or "127.0.0.1:8001", model=self.model, timeout_s=settings.timeout_s
        )
        self._next_image = 0

    def classify(self, name: str) -> None:
        """Classify the next image; the one place metrics are fired."""
        image = TritonUser._images[self._next_image % len(TritonUser._images)]
        self._next_image += 1
        started = time.perf_counter()
        exception: Exception | None = None
        try:
            self.client.classify(image, top_k=self.top_k)
        except ClientError as exc:
            exception = exc
        events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=len(image),
            exception=exception,
            context={},
        )

    def on_stop(self) -> None:
        self.client.close()


class ClassifyUser(TritonUser):
    """Sends one real image per request, back to back."""

    @task
    def classify_jpeg(self) -> None:
        self.classify("classify")
