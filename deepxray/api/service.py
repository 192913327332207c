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

from deepxray.analysis import ChestFindingsOutput, ChestModel, analyze_radiograph
from deepxray.api.errors import (
    ApiError,
    ModelsUpdatingError,
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
    handles, a coroutine for fakes) of (output, the `name@version` tag of the model that computed it);
    `cancel()` on it, where it exists, is called when the stage times out."""

    def classify(self, views: np.ndarray) -> Awaitable[tuple[np.ndarray, str]]: ...  # (n, view) -> (n, classes)

    def detect(self, view: np.ndarray) -> Awaitable[tuple[np.ndarray, str]]: ...

    def score(self, crops: np.ndarray) -> Awaitable[tuple[list, str]]: ...  # (n, crop) -> each crop's output

    # Optional: a backend with the chest-findings model also has `analyze_chest(view)` -> awaitable of
    # ({"probabilities", "thresholds", "heatmaps"}, tag); without it, `/analyze` refuses chests as `/score` does.

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


class VersionsSeen:
    """The model tags that came back with one film's outputs: the answer's `models` (`Models.versions` is this
    object's `versions`, filled as the calls return) and whether a model answered in two versions."""

    def __init__(self):
        self.versions: dict[str, str] = {}
        self._tags: dict[str, set[str]] = {}

    def record(self, model: str, tag: str) -> None:
        self.versions[model] = tag
        self._tags.setdefault(model, set()).add(tag)

    def mixed(self) -> dict[str, list[str]]:
        """The models that answered this film in more than one version, with those versions."""
        return {model: sorted(tags) for model, tags in self._tags.items() if len(tags) > 1}


# Times a film is scored again when its calls met two versions of a model: a rollout replaces a deployment's
# replicas within seconds, so the second pass nearly always meets one version only.
MIXED_VERSION_RETRIES = 1


class ScoringService:
    """Model stages with timeouts, scoring, readiness and model cards over a `ModelBackend`."""

    def __init__(self, backend: ModelBackend, settings: Settings | None = None):
        self.backend = backend
        self.settings = settings if settings is not None else Settings()
        self.gate = AdmissionGate(self.settings.max_scoring, self.settings.max_waiting, self.settings.retry_after_s)

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

    def stage(self, name: str, model: str, call: Callable[[np.ndarray], Awaitable], seen: VersionsSeen):
        """`call` as the pipeline's async model: its output within `stage_timeout_s` (or an ApiError), the tag
        that came with it recorded in `seen`."""
        timeout = self.settings.stage_timeout_s
        late = f"The {name} model did not answer within {timeout:g} s; the service may be overloaded. Try again later."

        async def run(array: np.ndarray):
            output, tag = await self.within(lambda: call(array), timeout, late, name)
            seen.record(model, tag)
            return output

        return run

    async def _ask(self, call: Callable[[], Awaitable[dict]], what: str) -> dict:
        late = f"The models did not report their {what} within {STATUS_TIMEOUT_S:g} s."
        return await self.within(call, STATUS_TIMEOUT_S, late)

    def models(self, seen: VersionsSeen) -> Models:
        """The pipeline's models for one film; the versions of the answer are those that answered its calls."""
        return Models(
            classify=self.stage("body-part", "body_part", self.backend.classify, seen),
            detect=self.stage("joint-detection", "joint_detection", self.backend.detect, seen),
            score=self.stage("Ratingen score", "ratingen_score", self.backend.score, seen),
            versions=seen.versions,
        )

    def chest_model(self, seen: VersionsSeen) -> ChestModel | None:
        """The chest-findings model for one film, or None when the backend has none."""
        analyze = getattr(self.backend, "analyze_chest", None)
        if analyze is None:
            return None
        stage = self.stage("chest-findings", "chest_findings", analyze, seen)

        async def run(view: np.ndarray) -> ChestFindingsOutput:
            output = await stage(view)
            return ChestFindingsOutput(output["probabilities"], output["thresholds"], output["heatmaps"])

        return ChestModel(run)

    async def score(
        self, data: bytes, request_id: str, timings: Timings, capture: FilmCapture | None = None
    ) -> dict[str, Any]:
        """The `/score` answer for an uploaded file (raises an ApiError for anything but a scored hand); `capture`
        receives the decoded film and the joints' embeddings.

        No model version is looked up: each model's output carries the tag of the replica that computed it, so
        an answer names the models that made it, before, during and after a rollout. A film whose calls met two
        versions of a model (replicas being replaced) is scored again, and refused with 503 `models_updating`
        if that happens again, rather than answered with scores of two models.
        """

        def run(seen: VersionsSeen):
            return score_radiograph(data, self.models(seen), self.settings, request_id, timings, capture)

        return await self._in_one_version(run)

    async def analyze(
        self, data: bytes, request_id: str, timings: Timings, capture: FilmCapture | None = None
    ) -> dict[str, Any]:
        """The `/analyze` answer: a hand's `/score` answer, or a chest's findings (`deepxray.analysis`)."""

        def run(seen: VersionsSeen):
            models, chest = self.models(seen), self.chest_model(seen)
            return analyze_radiograph(data, models, chest, self.settings, request_id, timings, capture)

        return await self._in_one_version(run)

    async def _in_one_version(self, run: Callable[[VersionsSeen], Awaitable[dict]]) -> dict[str, Any]:
        """`run`'s answer, made by one version of each model (see `score`)."""
        for _ in range(1 + MIXED_VERSION_RETRIES):
            seen = VersionsSeen()
            answer = await run(seen)
            mixed = seen.mixed()
            if not mixed:
                return answer
        versions = "; ".join(f"{model}: {' and '.join(tags)}" for model, tags in mixed.items())
        raise ModelsUpdatingError(
            f"The models are being updated ({versions} answered the same film); retry shortly.",
            self.settings.retry_after_s,
        )

    async def readiness(self) -> dict[str, dict]:
        """Each model's info; raises NotReadyError unless every one is loaded and warm."""
        try:
            info = await self._ask(self.backend.info, "readiness")
        except ApiError as exc:
            raise NotReadyError(f"Not every model is ready: {exc.detail}") from None
        expected = [*MODEL_NAMES, *(name for name in info if name not in MODEL_NAMES)]  # and the chest model
        not_ready = [name for name in expected if not info.get(name, {}).get("ready")]
        if not_ready:
            raise NotReadyError(f"Not ready yet: {', '.join(not_ready)}.")
        return info

    async def cards(self) -> dict[str, dict]:
        return await self._ask(self.backend.cards, "model cards")
