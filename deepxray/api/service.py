"""The ingress's logic without HTTP: the three models as timed stages, the admission gate, readiness and cards.

`ScoringService` needs only a `ModelBackend`: the ingress deployment gives it the model deployments' handles
(`deepxray.deployments.ingress.HandleBackend`), the monolith baseline in-process models, unit tests fakes.

Timeouts: a Ray 2.60 DeploymentHandle has no per-call timeout for async callers (only the blocking
`.result(timeout_s=...)`), so every model call is awaited under `asyncio.wait_for` (in `ScoringService.within`,
the one place for it) and its DeploymentResponse cancelled when the stage runs out of time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np

from deepxray.api.errors import (
    ApiError,
    NotReadyError,
    OverloadedError,
    StageTimeoutError,
    retry_seconds,
    translate_model_error,
)
from deepxray.models.registry import MODEL_NAMES
from deepxray.pipeline import FilmCapture, Models, Timings, score_radiograph
from deepxray.settings import Settings

# Longest wait for the models' readiness (GET /readyz), versions and cards (GET /v1/models): small calls that
# do not queue behind predictions as long as a replica has room.
STATUS_TIMEOUT_S = 5.0


class ModelBackend(Protocol):
    """The three models as the ingress sees them. Each call returns an awaitable (a DeploymentResponse for Ray
    handles, a coroutine for fakes); `cancel()` on it, where it exists, is called when the stage times out."""

    def classify(self, view: np.ndarray) -> Awaitable[np.ndarray]: ...

    def detect(self, view: np.ndarray) -> Awaitable[np.ndarray]: ...

    def score(self, crop: np.ndarray) -> Awaitable[np.ndarray]: ...

    async def info(self) -> dict[str, dict]: ...

    async def cards(self) -> dict[str, dict]: ...


async def _result(awaitable: Awaitable):
    return await awaitable


class AdmissionGate:
    """At most `max_scoring` images scored at once by this replica, at most `max_waiting` more waiting.

    The ingress limits its own load instead of leaving it all to Serve's `max_queued_requests`, because Serve's
    proxy answers its 503 in plain text: here the refusal is the API's JSON error, with `Retry-After`, and it
    comes before the upload is read. (Serve's limits stay as the last resort behind this one.)
    """

    def __init__(self, max_scoring: int, max_waiting: int, retry_after_s: float):
        self.max_scoring, self.max_waiting, self.retry_after_s = max_scoring, max_waiting, retry_after_s
        self._slots = asyncio.Semaphore(max_scoring)
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def admit(self):
        if self._slots.locked() and self.waiting >= self.max_waiting:
            raise OverloadedError(
                f"The service is at capacity ({self.max_scoring} images being scored and {self.waiting} waiting); "
                f"retry in {retry_seconds(self.retry_after_s)} s.",
                self.retry_after_s,
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()


class ScoringService:
    """Model stages with timeouts, scoring, readiness and model cards over a `ModelBackend`."""

    def __init__(self, backend: ModelBackend, settings: Settings | None = None):
        self.backend = backend
        self.settings = settings if settings is not None else Settings()
        self.gate = AdmissionGate(self.settings.max_scoring, self.settings.max_waiting, self.settings.retry_after_s)
        self._versions: dict[str, str] | None = None

    async def within(self, start: Callable[[], Awaitable], timeout: float, late: str, stage: str | None = None):
        """The result of the call `start()` begins, or an `ApiError`: 504 with the sentence `late` after
        `timeout` seconds (the pending call cancelled), 503 for Ray's overload and restart errors."""
        pending = None
        try:
            pending = start()
            return await asyncio.wait_for(_result(pending), timeout)
        except TimeoutError:
            cancel = getattr(pending, "cancel", None)
            if cancel is not None:
                with contextlib.suppress(Exception):  # best effort: Ray drops the request if it can
                    cancel()
            raise StageTimeoutError(late) from None
        except Exception as exc:
            translated = translate_model_error(exc, stage, self.settings.retry_after_s)
            if translated is None:
                raise
            raise translated from None

    def stage(self, name: str, call: Callable[[np.ndarray], Awaitable[np.ndarray]]):
        """`call` as the pipeline's async model: answers within `stage_timeout_s` or raises an ApiError."""
        timeout = self.settings.stage_timeout_s
        late = f"The {name} model did not answer within {timeout:g} s; the service may be overloaded. Try again later."

        async def run(array: np.ndarray) -> np.ndarray:
            return await self.within(lambda: call(array), timeout, late, name)

        return run

    async def _ask(self, call: Callable[[], Awaitable[dict]], what: str) -> dict:
        late = f"The models did not report their {what} within {STATUS_TIMEOUT_S:g} s."
        return await self.within(call, STATUS_TIMEOUT_S, late)

    async def versions(self) -> dict[str, str]:
        """`name@version` of each model, asked once (a model change redeploys the ingress too)."""
        if self._versions is None:
            self._remember_versions(await self._ask(self.backend.info, "model versions"))
        return self._versions

    def _remember_versions(self, info: dict[str, dict]) -> None:
        self._versions = {name: info[name]["tag"] for name in MODEL_NAMES}

    def models(self, versions: dict[str, str]) -> Models:
        return Models(
            classify=self.stage("body-part", self.backend.classify),
            detect=self.stage("joint-detection", self.backend.detect),
            score=self.stage("Ratingen score", self.backend.score),
            versions=versions,
        )

    async def score(
        self, data: bytes, request_id: str, timings: Timings, capture: FilmCapture | None = None
    ) -> dict[str, Any]:
        """The `/score` answer for an uploaded file (raises an ApiError for anything but a scored hand); `capture`
        receives the decoded film and the joints' embeddings."""
        models = self.models(await self.versions())
        return await score_radiograph(data, models, self.settings, request_id, timings, capture)

    async def readiness(self) -> dict[str, dict]:
        """Each model's info; raises NotReadyError unless every one is loaded and warm."""
        try:
            info = await self._ask(self.backend.info, "readiness")
        except ApiError as exc:
            raise NotReadyError(f"Not every model is ready: {exc.detail}") from None
        not_ready = [name for name in MODEL_NAMES if not info.get(name, {}).get("ready")]
        if not_ready:
            raise NotReadyError(f"Not ready yet: {', '.join(not_ready)}.")
        self._remember_versions(info)
        return info

    async def cards(self) -> dict[str, dict]:
        return await self._ask(self.backend.cards, "model cards")
