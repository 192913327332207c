"""Ingress: the HTTP API (FastAPI) in front of the three model deployments.

`POST /score` takes a radiograph in the multipart field `xray`, reads it once (refusing oversized uploads
before decoding), and runs `deepxray.pipeline.score_radiograph` with models that call the model deployments'
handles: the body-part view and the detector view go to `BodyPart.classify` and `JointDetection.detect`, the
ten joint crops (cut here from the full-resolution image, so the image itself never leaves this process) go to
`RatingenScore.score` all at once, where `@serve.batch` runs them as one forward pass.

The FastAPI app is built by `create_app(service)` from a `ScoringService`, which only needs three async model
callables: the deployment wires in `HandleBackend` (Ray handles), unit tests wire in fakes and run the same
routes, error mapping and request ids without a Ray cluster.

Errors are `{"error": code, "detail": sentence, "request_id": id}` with the architecture's statuses: 400 (empty,
undecodable or truncated file, or no `xray` field), 413 (upload over the limit, or too many pixels), 415 (not a
format we read), 422 (not a hand, joints not found), 503 with `Retry-After` (this replica already scores
`max_scoring` images with `max_waiting` more waiting, or a model deployment's queue is full,
`max_queued_requests`), 504 (a model stage did not answer within `stage_timeout_s`). Anything unforeseen is a
500 in the same shape, with the request id to find it in the log; no bad file gets that far. (Only when the
ingress's own Serve queue overflows too does Ray's proxy answer its 503, with `Retry-After` but in plain text.)

Every answer carries the request id (JSON `request_id` and header `X-Request-ID`): the client's `X-Request-ID`
when it is a plain token, else a new one. Behind Ray's proxy the proxy itself assigns (a uuid4) and echoes that
header, and the same id tags Serve's own log lines for the request. Logs hold the id, status, sizes and timings
only: never the upload, its file name or anything from its header (pydicom's own warnings, which quote header
values, are silenced in the ingress replica).

Timeouts: a Ray 2.60 DeploymentHandle has no per-call timeout for async callers (only the blocking
`.result(timeout_s=...)`), so each model call is awaited under `asyncio.wait_for` and its DeploymentResponse
cancelled when the stage runs out of time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from ray import serve
from starlette.datastructures import Headers, MutableHeaders, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from deepxray.deployments.common import IngressSettings, get_logger, keep_patient_data_out_of_logs, to_wire
from deepxray.imaging import SUPPORTED_FORMATS, ImagingError
from deepxray.pipeline import Models, ScoringError, Timings, score_radiograph

UPLOAD_FIELD = "xray"
# Room for the multipart boundaries and part headers around the file, on top of the file size limit.
MULTIPART_OVERHEAD = 64 * 2**10
# A client's request id is used as given only when it is a plain token (it goes into logs and headers).
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MODEL_NAMES = ("body_part", "joint_detection", "ratingen_score")
# Longest wait for the models' readiness (GET /readyz), versions and cards (GET /v1/models): small calls that
# do not queue behind predictions as long as a replica has room.
STATUS_TIMEOUT_S = 5.0


# ----------------------------------------------------------------------------------------------------- errors


class ServiceError(Exception):
    """An answer other than 200, raised anywhere below the routes; `to_json` is the error body."""

    status = 500
    code = "internal_error"

    def __init__(self, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}

    def to_json(self) -> dict:
        return {"error": self.code, "detail": self.detail}


class MissingUploadError(ServiceError):
    status = 400
    code = "missing_file"


class MalformedRequestError(ServiceError):
    status = 400
    code = "bad_request"


class UploadTooLargeError(ServiceError):
    status = 413
    code = "too_large"


class OverloadedError(ServiceError):
    status = 503
    code = "overloaded"

    def __init__(self, detail: str, retry_after_s: float):
        super().__init__(detail, {"Retry-After": str(max(0, int(np.ceil(retry_after_s))))})


class NotReadyError(ServiceError):
    status = 503
    code = "not_ready"


class StageTimeoutError(ServiceError):
    status = 504
    code = "stage_timeout"


def _missing_upload() -> MissingUploadError:
    return MissingUploadError(
        f"Send the radiograph as multipart/form-data in the field '{UPLOAD_FIELD}', "
        f'e.g. curl -F "{UPLOAD_FIELD}=@hand.png" http://127.0.0.1:8000/score.'
    )


def translate_model_error(exc: BaseException, stage: str | None, retry_after_s: float) -> ServiceError | None:
    """The answer for a failure of a call to a model deployment, or None when it is not one we expect.

    Ray Serve raises `BackPressureError` in the caller when the deployment's queue (`max_queued_requests`) is
    full, and `DeploymentUnavailableError` / an actor error while replicas are missing or restarting: all
    mean "try again shortly" (503 with Retry-After), not a fault of the request.
    """
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

    model = f"the {stage} model" if stage else "a model"
    if isinstance(exc, BackPressureError):
        retry = exc.retry_after_s if exc.retry_after_s is not None else retry_after_s
        return OverloadedError(
            f"The service is at capacity ({model}'s queue is full); retry in {max(1, int(np.ceil(retry)))} s.", retry
        )
    if isinstance(exc, DeploymentUnavailableError | ReplicaUnavailableError | RayActorError):
        return OverloadedError(
            f"{model.capitalize()} is not available right now (restarting); retry shortly.", retry_after_s
        )
    return None


# ----------------------------------------------------------------------------------------------- the models


class ModelBackend(Protocol):
    """The three models as the ingress sees them. Each call returns an awaitable (a DeploymentResponse for Ray
    handles, a coroutine for fakes); `cancel()` on it, where it exists, is called when the stage times out."""

    def classify(self, view: np.ndarray) -> Awaitable[np.ndarray]: ...

    def detect(self, view: np.ndarray) -> Awaitable[np.ndarray]: ...

    def score(self, crop: np.ndarray) -> Awaitable[np.ndarray]: ...

    async def info(self) -> dict[str, dict]: ...

    async def cards(self) -> dict[str, dict]: ...


class HandleBackend:
    """The model deployments through their DeploymentHandles; arrays travel as float16 (see `to_wire`)."""

    def __init__(self, body_part, joint_detection, ratingen_score):
        self.handles = {"body_part": body_part, "joint_detection": joint_detection, "ratingen_score": ratingen_score}

    def classify(self, view: np.ndarray):
        return self.handles["body_part"].classify.remote(to_wire(view))

    def detect(self, view: np.ndarray):
        return self.handles["joint_detection"].detect.remote(to_wire(view))

    def score(self, crop: np.ndarray):
        return self.handles["ratingen_score"].score.remote(to_wire(crop))

    async def info(self) -> dict[str, dict]:
        answers = await asyncio.gather(*(handle.info.remote() for handle in self.handles.values()))
        return dict(zip(self.handles, answers, strict=True))

    async def cards(self) -> dict[str, dict]:
        answers = await asyncio.gather(*(handle.card.remote() for handle in self.handles.values()))
        return dict(zip(self.handles, answers, strict=True))


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
                f"retry in {max(1, int(np.ceil(self.retry_after_s)))} s.",
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
    """The ingress's logic without HTTP: model stages with timeouts, scoring, readiness, model cards."""

    def __init__(self, backend: ModelBackend, settings: IngressSettings | None = None):
        self.backend = backend
        self.settings = settings or IngressSettings()
        self.gate = AdmissionGate(self.settings.max_scoring, self.settings.max_waiting, self.settings.retry_after_s)
        self._versions: dict[str, str] | None = None

    def stage(self, name: str, call: Callable[[np.ndarray], Awaitable[np.ndarray]]):
        """`call` as the pipeline's async model: answers within `stage_timeout_s` or raises a ServiceError."""
        timeout = self.settings.stage_timeout_s

        async def run(array: np.ndarray) -> np.ndarray:
            pending = None
            try:
                pending = call(array)
                return await asyncio.wait_for(_result(pending), timeout)
            except TimeoutError:
                cancel = getattr(pending, "cancel", None)
                if cancel is not None:
                    with contextlib.suppress(Exception):  # best effort: Ray drops the request if it can
                        cancel()
                raise StageTimeoutError(
                    f"The {name} model did not answer within {timeout:g} s; the service may be overloaded. "
                    "Try again later."
                ) from None
            except ServiceError:
                raise
            except Exception as exc:
                translated = translate_model_error(exc, name, self.settings.retry_after_s)
                if translated is None:
                    raise
                raise translated from None

        return run

    async def versions(self) -> dict[str, str]:
        """`name@version` of each model, asked once (a model change redeploys the ingress too)."""
        if self._versions is None:
            self._remember_versions(await self._ask(self.backend.info, "model versions", STATUS_TIMEOUT_S))
        return self._versions

    def _remember_versions(self, info: dict[str, dict]) -> None:
        self._versions = {name: info[name]["tag"] for name in MODEL_NAMES}

    async def _ask(self, call: Callable[[], Awaitable[dict]], what: str, timeout: float) -> dict:
        try:
            return await asyncio.wait_for(call(), timeout)
        except TimeoutError:
            raise StageTimeoutError(f"The models did not report their {what} within {timeout:g} s.") from None
        except ServiceError:
            raise
        except Exception as exc:
            translated = translate_model_error(exc, None, self.settings.retry_after_s)
            if translated is None:
                raise
            raise translated from None

    def models(self, versions: dict[str, str]) -> Models:
        return Models(
            classify=self.stage("body-part", self.backend.classify),
            detect=self.stage("joint-detection", self.backend.detect),
            score=self.stage("Ratingen score", self.backend.score),
            versions=versions,
        )

    async def score(self, data: bytes, request_id: str, timings: Timings) -> dict:
        """The `/score` answer for an uploaded file (raises ImagingError, ScoringError or ServiceError)."""
        models = self.models(await self.versions())
        return await score_radiograph(data, models, self.settings.limits(), request_id, timings)

    async def readiness(self) -> dict[str, dict]:
        """Each model's info; raises NotReadyError unless every one is loaded and warm."""
        try:
            info = await self._ask(self.backend.info, "readiness", STATUS_TIMEOUT_S)
        except ServiceError as exc:
            raise NotReadyError(f"Not every model is ready: {exc.detail}") from None
        not_ready = [name for name in MODEL_NAMES if not info.get(name, {}).get("ready")]
        if not_ready:
            raise NotReadyError(f"Not ready yet: {', '.join(not_ready)}.")
        self._remember_versions(info)
        return info

    async def cards(self) -> dict[str, dict]:
        return await self._ask(self.backend.cards, "model cards", STATUS_TIMEOUT_S)


# ------------------------------------------------------------------------------------------------ the upload


class _InMemoryMultiPartParser(MultiPartParser):
    """Starlette's multipart parser, keeping the (size-capped) file in memory instead of spooling it to disk."""

    def __init__(self, headers: Headers, stream, spool_max_size: int):
        super().__init__(headers, stream, max_files=1, max_fields=16, max_part_size=64 * 2**10)
        self.spool_max_size = spool_max_size


async def read_upload(request: Request, max_bytes: int) -> bytes:
    """The bytes of the `xray` file, reading no more than the limit allows.

    A declared Content-Length over the limit is refused before the body is read; a body that grows past it
    (chunked uploads) is refused as soon as it does.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise _missing_upload()
    body_cap = max_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_cap:
        raise _too_large(int(declared), max_bytes)

    async def capped_body():
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_cap:
                raise _too_large(None, max_bytes)
            yield chunk

    try:
        form = await _InMemoryMultiPartParser(request.headers, capped_body(), spool_max_size=body_cap).parse()
    except MultiPartException as exc:
        raise MalformedRequestError(f"The multipart body could not be parsed: {exc.message}") from None
    except ClientDisconnect:
        raise MalformedRequestError("The upload ended before it was complete.") from None
    try:
        upload = form.get(UPLOAD_FIELD)
        if not isinstance(upload, UploadFile):
            raise _missing_upload()
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    return data


def _too_large(size: int | None, max_bytes: int) -> UploadTooLargeError:
    limit = f"the limit is {_readable(max_bytes)}"
    if size is None:
        return UploadTooLargeError(f"The upload is larger than allowed; {limit}.")
    return UploadTooLargeError(f"The upload has {_readable(size)}; {limit}.")


def _readable(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


# ---------------------------------------------------------------------------------------------- the HTTP app


class BodyPartAnswer(BaseModel):
    label: str
    probability: float


class JointAnswer(BaseModel):
    score: int
    probabilities: list[float]
    center: list[float]
    box: list[float]
    confidence: float


class ScoreAnswer(BaseModel):
    """The 200 answer of `POST /score` (documentation; the pipeline assembles it)."""

    scores: dict[str, int]
    total: int
    body_part: BodyPartAnswer
    laterality: Literal["L", "R"]
    joints: dict[str, JointAnswer]
    models: dict[str, str]
    request_id: str
    notice: str


class ErrorAnswer(BaseModel):
    error: str
    detail: str
    request_id: str


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [UPLOAD_FIELD],
                    "properties": {
                        UPLOAD_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": f"The radiograph: {', '.join(f.upper() for f in SUPPORTED_FORMATS)}.",
                        }
                    },
                }
            }
        },
    }
}
_ERRORS = {
    400: "Empty, undecodable or truncated file, or no `xray` field.",
    413: "Upload over the size limit, or more pixels than the pixel limit (decompression bomb).",
    415: "Not an image format the service reads (the detail lists those it does).",
    422: "Not a hand (the detail names what the body-part model saw), or the joints were not found.",
    503: "Overloaded (a queue is full): retry after `Retry-After` seconds.",
    504: "A model stage did not answer in time.",
}


def request_id_of(request: Request) -> str:
    return getattr(request.state, "request_id", "") or uuid.uuid4().hex


def error_response(exc: BaseException, request_id: str) -> JSONResponse:
    """The JSON answer for an exception: the architecture's table for expected ones, 500 for the rest."""
    if isinstance(exc, ImagingError | ScoringError | ServiceError):
        headers = getattr(exc, "headers", {})
        return JSONResponse({**exc.to_json(), "request_id": request_id}, status_code=exc.status, headers=headers)
    return JSONResponse(
        {
            "error": "internal_error",
            "detail": f"Something went wrong on our side; quote request id {request_id} when reporting it.",
            "request_id": request_id,
        },
        status_code=500,
    )


def _log_unexpected(exc: BaseException, request_id: str) -> None:
    # The exception's message is left out: it might quote a piece of the upload. Type and frames are enough.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    get_logger().error("unexpected error request_id=%s type=%s\n%s", request_id, type(exc).__name__, frames)


class RequestIdMiddleware:
    """Gives every request an id (`request.state.request_id`), puts it on every answer, and turns an
    unexpected exception into a JSON 500 that carries it."""

    def __init__(self, app, proxy_echoes_request_id: bool = False):
        self.app = app
        self.proxy_echoes_request_id = proxy_echoes_request_id

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        # Ray's proxy appends X-Request-ID (the one it passed in) to every answer; add ours only when it won't.
        add_header = not (self.proxy_echoes_request_id and incoming == request_id)
        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if add_header:
                    MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            _log_unexpected(exc, request_id)
            if started:
                raise
            await error_response(exc, request_id)(scope, receive, send_with_id)


def create_app(service: ScoringService, proxy_echoes_request_id: bool = False) -> FastAPI:
    """The HTTP API over a ScoringService (Ray handles in the deployment, fakes in unit tests)."""
    app = FastAPI(
        title="DeepXRay",
        summary="Ratingen erosion scores of the ten MCP/PIP joints on a hand radiograph. Research use only.",
        version="0.1.0",
    )
    app.add_middleware(RequestIdMiddleware, proxy_echoes_request_id=proxy_echoes_request_id)
    log = get_logger()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code, detail = {
            404: ("not_found", "There is no such endpoint here; see /docs for the API."),
            405: ("method_not_allowed", f"This endpoint does not take {request.method}; see /docs for the API."),
        }.get(exc.status_code, ("http_error", str(exc.detail)))
        body = {"error": code, "detail": detail, "request_id": request_id_of(request)}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error_response(
            MalformedRequestError("The request is not what this endpoint takes."), request_id_of(request)
        )

    @app.post(
        "/score",
        summary="Score a hand radiograph",
        response_model=ScoreAnswer,
        responses={status: {"model": ErrorAnswer, "description": text} for status, text in _ERRORS.items()},
        openapi_extra=_UPLOAD_BODY,
    )
    async def score(request: Request) -> Any:
        """Upload a hand radiograph (PNG 8/16-bit, JPEG, TIFF, DICOM) in the multipart field `xray`; get the
        Ratingen score of each of the ten joints, the body part, laterality, joint positions and model versions.
        """
        request_id = request_id_of(request)
        timings = Timings()
        size, wait_s, upload_s = -1, 0.0, 0.0
        start = time.perf_counter()
        try:
            async with service.gate.admit():
                wait_s = time.perf_counter() - start
                data = await read_upload(request, service.settings.max_upload_bytes)
                upload_s = time.perf_counter() - start - wait_s
                size = len(data)
                answer = await service.score(data, request_id, timings)
            response = JSONResponse(answer)
        except (ImagingError, ScoringError, ServiceError) as exc:
            response = error_response(exc, request_id)
        except Exception as exc:
            _log_unexpected(exc, request_id)
            response = error_response(exc, request_id)
        log.info(
            "score request_id=%s status=%d bytes=%d wait_ms=%.1f upload_ms=%.1f decode_ms=%.1f body_part_ms=%.1f "
            "detect_ms=%.1f crop_ms=%.1f score_ms=%.1f total_ms=%.1f",
            request_id,
            response.status_code,
            size,
            1000 * wait_s,
            1000 * upload_s,
            *(1000 * getattr(timings, step) for step in ("decode", "body_part", "detect", "crop", "score")),
            1000 * (time.perf_counter() - start),
        )
        return response

    @app.get("/healthz", summary="Alive")
    async def healthz(request: Request) -> dict:
        return {"status": "ok", "request_id": request_id_of(request)}

    @app.get("/readyz", summary="Every model loaded and warm", responses={503: {"model": ErrorAnswer}})
    async def readyz(request: Request) -> Any:
        request_id = request_id_of(request)
        try:
            info = await service.readiness()
        except ServiceError as exc:
            return error_response(exc, request_id)
        models = {name: {"tag": item.get("tag"), "ready": bool(item.get("ready"))} for name, item in info.items()}
        return {"status": "ready", "models": models, "request_id": request_id}

    @app.get("/v1/models", summary="The model cards")
    async def model_cards(request: Request) -> Any:
        request_id = request_id_of(request)
        try:
            cards = await service.cards()
        except ServiceError as exc:
            return error_response(exc, request_id)
        return {"models": cards, "request_id": request_id}

    return app


# --------------------------------------------------------------------------------------------- the deployment


@serve.deployment(
    name="Ingress",
    num_replicas=1,
    # Fewer malloc arenas for the decoding threads keeps the replica's memory flat (see serve_config.yaml).
    ray_actor_options={"num_cpus": 0.5, "runtime_env": {"env_vars": {"MALLOC_ARENA_MAX": "2"}}},
    # Room for the admission gate's 4 scoring + 4 waiting, plus health, readiness and model-card calls; Serve's
    # own queue behind it is the last resort (its 503 is plain text, the gate's is the API's JSON).
    max_ongoing_requests=16,
    max_queued_requests=8,
    backpressure_config={"retry_after_s": 1},
    health_check_period_s=10,
    health_check_timeout_s=30,
)
@serve.ingress()
class Ingress:
    """The HTTP ingress: `create_app` over the three model deployments' handles.

    Args:
        body_part, joint_detection, ratingen_score: Handles of the model deployments (bound deployments in
            `deepxray.app`, which Serve turns into handles).
        settings: `IngressSettings` or its dict; None for the defaults.
    """

    def __init__(self, body_part, joint_detection, ratingen_score, settings: IngressSettings | dict | None = None):
        keep_patient_data_out_of_logs()
        self.settings = IngressSettings.model_validate(settings or {})
        self.service = ScoringService(HandleBackend(body_part, joint_detection, ratingen_score), self.settings)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.service, proxy_echoes_request_id=True)
