"""The HTTP API: `create_app(service)` builds the FastAPI app over a `ScoringService`.

Routes: `POST /score` (the radiograph in the multipart field `xray` or as the body itself; scope `score`), `GET /healthz`, `GET /readyz`,
`GET /v1/models` (the model cards; scope `read`), and the OpenAPI docs at `/docs` and `/redoc`, whose Swagger UI and ReDoc
assets the service serves itself (`fastapi-offline`), so the page works without any outside address.

Errors are `{"error": code, "detail": sentence, "request_id": id}` (`ErrorAnswer`) with the architecture's
statuses: 400 (empty, undecodable or truncated file, or no `xray` field), 401 and 403 (no valid credential, or
not the scope the route needs, when access control is on: `deepxray.api.auth`, checked before the upload is
read), 413 (upload over the limit, or too many
pixels), 415 (not a format we read), 422 (not a hand, joints not found), 503 with `Retry-After` (this replica
already scores `max_scoring` images with `max_waiting` more waiting, a model deployment's queue is full, or a
film met two versions of a model during a rollout, twice: `models_updating`), 504
(a model stage did not answer within `stage_timeout_s`). Each is an `ApiError` raised where it is found and
rendered by the one exception handler below; anything unforeseen is a 500 in the same shape (see
`deepxray.api.middleware`). Logs hold the id, status, sizes and timings only: never the upload or its name.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from deepxray.api.auth import OPEN_WARNING, Access
from deepxray.api.cases import CaseDesk, add_case_routes, open_desk
from deepxray.api.errors import UPLOAD_FIELD, ApiError, MalformedRequestError
from deepxray.api.middleware import RequestIdMiddleware, error_response, request_id_of
from deepxray.api.schemas import ChestAnswer, ErrorAnswer, HealthAnswer, ModelCardsAnswer, ReadyAnswer, ScoreAnswer
from deepxray.api.service import ScoringService
from deepxray.api.upload import RAW_MEDIA_TYPES, read_upload
from deepxray.imaging import SUPPORTED_FORMATS
from deepxray.logs import get_logger
from deepxray.pipeline import FilmCapture, Timings

# The review page: plain HTML, JavaScript and CSS in the package, served as they are (no build step, no CDN).
STATIC_DIR = Path(__file__).with_name("static")

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
        }
        | {
            media_type: {"schema": {"type": "string", "format": "binary", "description": "The radiograph itself."}}
            for media_type in RAW_MEDIA_TYPES
        },
    }
}
# `?overlay=true` on /score and /analyze (module level: the annotations are strings FastAPI resolves here).
OverlayQuery = Annotated[
    bool, Query(description="Add `overlay`: a PNG of the film with the joints' boxes and scores (base64)")
]
_AUTH_ERRORS = {
    401: "No credential, a malformed one, or one that does not pass (RFC 6750; see `WWW-Authenticate`).",
    403: "The credential lacks the scope this endpoint needs (`insufficient_scope`).",
}
_ERRORS = {
    400: "Empty, undecodable or truncated file, or no `xray` field.",
    **_AUTH_ERRORS,
    413: "Upload over the size limit, or more pixels than the pixel limit (decompression bomb).",
    415: "Not an image format the service reads (the detail lists those it does).",
    422: "Not a hand (the detail names what the body-part model saw), or the joints were not found.",
    503: "Overloaded (a queue is full), or the models being updated (`models_updating`): retry after `Retry-After` seconds.",
    504: "A model stage did not answer in time.",
}
_HTTP_ERRORS = {
    404: ("not_found", "There is no such endpoint here; see /docs for the API."),
    405: ("method_not_allowed", "This endpoint does not take {method}; see /docs for the API."),
}


def _register_error_handlers(app: FastAPI) -> None:
    """One handler renders every ApiError; FastAPI's own 404/405/validation errors get the same shape."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc, request_id_of(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code, detail = _HTTP_ERRORS.get(exc.status_code, ("http_error", str(exc.detail)))
        error = ApiError(detail.format(method=request.method), getattr(exc, "headers", None))
        error.status, error.code = exc.status_code, code
        return error_response(error, request_id_of(request))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error_response(MalformedRequestError(), request_id_of(request))


def create_app(
    service: ScoringService,
    proxy_echoes_request_id: bool = False,
    access: Access | None = None,
    desk: CaseDesk | None = None,
) -> FastAPI:
    """The HTTP API over a ScoringService (Ray handles in the deployment, in-process models or fakes elsewhere),
    with the access control of `access` and the case store of `desk` (defaults: those `service.settings`
    describe)."""
    access = access if access is not None else Access(service.settings)
    desk = desk if desk is not None else open_desk(service.settings)
    app = FastAPIOffline(
        title="DeepXRay",
        summary="Ratingen erosion scores of the ten MCP/PIP joints on a hand radiograph. Research use only.",
        version="0.1.0",
        # Swagger UI would ask an outside validator to badge the schema: nothing leaves the hospital network.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.add_middleware(RequestIdMiddleware, proxy_echoes_request_id=proxy_echoes_request_id)
    _register_error_handlers(app)
    log = get_logger()
    if access.is_open:
        log.warning(OPEN_WARNING)

    async def answer_upload(request: Request, run, overlay: bool, route: str) -> dict:
        """The body of `/score` and `/analyze`: the admission gate, the upload, `run(data, request_id, timings,
        capture)`, the case store and picture where the answer is a hand's, and one log line."""
        request_id = request_id_of(request)
        timings = Timings()
        status, size, wait_s, upload_s, keep_s = 500, -1, 0.0, 0.0, 0.0
        start = time.perf_counter()
        try:
            async with service.gate.admit():
                wait_s = time.perf_counter() - start
                data = await read_upload(request, service.settings.max_upload_bytes)
                upload_s = time.perf_counter() - start - wait_s
                size = len(data)
                capture = FilmCapture()
                answer = await run(data, request_id, timings, capture)
                if "hands" in answer and (desk.store is not None or overlay):
                    keep_start = time.perf_counter()
                    answer |= await asyncio.to_thread(desk.additions, answer, capture, data, overlay)
                    keep_s = time.perf_counter() - keep_start
            status = 200
            return answer
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            log.info(
                "%s request_id=%s status=%d bytes=%d wait_ms=%.1f upload_ms=%.1f decode_ms=%.1f "
                "body_part_ms=%.1f detect_ms=%.1f crop_ms=%.1f score_ms=%.1f case_ms=%.1f total_ms=%.1f",
                route,
                request_id,
                status,
                size,
                1000 * wait_s,
                1000 * upload_s,
                *(1000 * getattr(timings, step) for step in ("decode", "body_part", "detect", "crop", "score")),
                1000 * keep_s,
                1000 * (time.perf_counter() - start),
            )

    @app.post(
        "/score",
        summary="Score a hand radiograph",
        response_model=ScoreAnswer,
        response_model_exclude_unset=True,  # `case_id` and `overlay` only where the answer has them
        responses={status: {"model": ErrorAnswer, "description": text} for status, text in _ERRORS.items()},
        openapi_extra=_UPLOAD_BODY,
        dependencies=[Depends(access.requires("score"))],
    )
    async def score(request: Request, overlay: OverlayQuery = False) -> Any:
        """Upload a hand radiograph (PNG 8/16-bit, JPEG, TIFF, DICOM) in the multipart field `xray`, or as the body
        itself (Content-Type image/png, image/jpeg, application/dicom or application/octet-stream); get the
        Ratingen score of each of the ten joints, the body part, laterality, joint positions and model versions.
        When the service keeps cases, the answer names its `case_id`.
        """
        return await answer_upload(request, service.score, overlay, "score")

    @app.post(
        "/analyze",
        summary="Score a hand radiograph, or find the CheXpert findings on a chest radiograph",
        response_model=ScoreAnswer | ChestAnswer,
        response_model_exclude_unset=True,
        responses={status: {"model": ErrorAnswer, "description": text} for status, text in _ERRORS.items()},
        openapi_extra=_UPLOAD_BODY,
        dependencies=[Depends(access.requires("score"))],
    )
    async def analyze(request: Request, overlay: OverlayQuery = False) -> Any:
        """Upload a radiograph as for `/score`. The body-part model routes it: a hand gets the `/score` answer, a
        chest the probabilities of CheXpert's fourteen labels, the positive ones at the thresholds of the model's
        card, and a heatmap for each; any other film is refused (422) as on `/score`.
        """
        return await answer_upload(request, service.analyze, overlay, "analyze")

    @app.get("/healthz", summary="Alive", response_model=HealthAnswer)
    async def healthz(request: Request) -> Any:
        return {"status": "ok", "request_id": request_id_of(request)}

    @app.get(
        "/readyz",
        summary="Every model loaded and warm",
        response_model=ReadyAnswer,
        responses={503: {"model": ErrorAnswer, "description": "Not every model is ready"}},
    )
    async def readyz(request: Request) -> Any:
        info = await service.readiness()
        models = {name: {"tag": item.get("tag"), "ready": bool(item.get("ready"))} for name, item in info.items()}
        return {"status": "ready", "models": models, "request_id": request_id_of(request)}

    @app.get(
        "/v1/models",
        summary="The model cards",
        response_model=ModelCardsAnswer,
        responses={status: {"model": ErrorAnswer, "description": text} for status, text in _AUTH_ERRORS.items()},
        dependencies=[Depends(access.requires("read"))],
    )
    async def model_cards(request: Request) -> Any:
        return {"models": await service.cards(), "request_id": request_id_of(request)}

    add_case_routes(app, desk, access, _AUTH_ERRORS)

    @app.get("/", summary="The review page", include_in_schema=False)
    async def review_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
