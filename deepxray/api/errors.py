"""Every answer other than 200 is an `ApiError`: imaging, the pipeline and the HTTP layer raise its subclasses,
and one exception handler (`deepxray.api.routes`) renders them as `{"error": code, "detail": sentence, ...,
"request_id": id}` with their status and headers. A bad file is a 4xx here, never a 500.

This module imports nothing heavy (Ray only inside `translate_model_error`), so imaging and the pipeline
raise its classes without pulling in the web stack.
"""

from __future__ import annotations

import math

UPLOAD_FIELD = "xray"


class ApiError(Exception):
    """An answer other than 200, with what the client needs to know.

    Attributes:
        status: The HTTP status.
        code: A short machine-readable code (the `error` field).
        detail: A sentence a user understands (the `detail` field); never patient data.
        headers: Extra response headers (e.g. `Retry-After`).
        extra: More fields of the error body (e.g. what the body-part model saw).
    """

    status: int = 500
    code: str = "internal_error"
    default_detail: str = "Something went wrong on our side."

    def __init_subclass__(cls, status: int | None = None, code: str | None = None, **kwargs):
        """A subclass names its status and code in its class line: `class X(ApiError, status=413, code=...)`."""
        super().__init_subclass__(**kwargs)
        cls.status = status or cls.status
        cls.code = code or cls.code

    def __init__(self, detail: str | None = None, headers: dict[str, str] | None = None, **extra):
        self.detail = detail or self.default_detail
        super().__init__(self.detail)
        self.headers = headers or {}
        self.extra = extra

    def to_json(self) -> dict:
        """The error body without the request id (the route adds it)."""
        return {"error": self.code, "detail": self.detail, **self.extra}


class MissingUploadError(ApiError, status=400, code="missing_file"):
    default_detail = (
        f"Send the radiograph as multipart/form-data in the field '{UPLOAD_FIELD}' "
        f'(curl -F "{UPLOAD_FIELD}=@hand.png" http://127.0.0.1:8000/score) or as the body itself with '
        "Content-Type image/png, image/jpeg, application/dicom or application/octet-stream "
        "(curl --data-binary @hand.png -H 'Content-Type: image/png' http://127.0.0.1:8000/score)."
    )


class MalformedRequestError(ApiError, status=400, code="bad_request"):
    default_detail = "The request is not what this endpoint takes."


class UploadTooLargeError(ApiError, status=413, code="too_large"):
    """The upload is over `max_upload_bytes` (the image's pixels are checked by imaging)."""


class OverloadedError(ApiError, status=503, code="overloaded"):
    """Back-pressure: this replica's admission gate or a model deployment's queue is full."""

    def __init__(self, detail: str, retry_after_s: float):
        super().__init__(detail, {"Retry-After": str(retry_seconds(retry_after_s, least=0))})


class ModelsUpdatingError(ApiError, status=503, code="models_updating"):
    """A film's model calls were answered by two versions of one model (a rollout was under way), twice."""

    def __init__(self, detail: str, retry_after_s: float):
        super().__init__(detail, {"Retry-After": str(retry_seconds(retry_after_s))})


class NotReadyError(ApiError, status=503, code="not_ready"):
    """Not every model is loaded and warm yet."""


class StageTimeoutError(ApiError, status=504, code="stage_timeout"):
    """A model call did not answer within `stage_timeout_s`."""


def retry_seconds(retry_after_s: float, least: int = 1) -> int:
    """Whole seconds to tell a client to wait (Retry-After takes an integer)."""
    return max(least, math.ceil(retry_after_s))


def translate_model_error(exc: BaseException, stage: str | None, retry_after_s: float) -> ApiError | None:
    """The answer for a failure of a call to a model deployment, or None when it is not one we expect.

    Ray Serve raises `BackPressureError` in the caller when the deployment's queue (`max_queued_requests`) is
    full, and `DeploymentUnavailableError` / an actor error while replicas are missing or restarting: all
    mean "try again shortly" (503 with Retry-After), not a fault of the request.
    """
    if isinstance(exc, ApiError):
        return exc
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

    model = f"the {stage} model" if stage else "a model"
    if isinstance(exc, BackPressureError):
        retry = exc.retry_after_s if exc.retry_after_s is not None else retry_after_s
        return OverloadedError(
            f"The service is at capacity ({model}'s queue is full); retry in {retry_seconds(retry)} s.", retry
        )
    if isinstance(exc, DeploymentUnavailableError | ReplicaUnavailableError | RayActorError):
        return OverloadedError(
            f"{model.capitalize()} is not available right now (restarting); retry shortly.", retry_after_s
        )
    return None


class CasesNotKeptError(ApiError, status=404, code="cases_not_kept"):
    default_detail = (
        "This service keeps no cases: set store_cases (DEEPXRAY_STORE_CASES=true, or `store_cases: true` in the "
        "profile's args) to keep scored films for review."
    )


class CaseNotFoundApiError(ApiError, status=404, code="case_not_found"):
    """No stored case has this id (never stored here, or deleted)."""


class NoImageError(ApiError, status=404, code="no_image"):
    """The case was stored without a picture of the film (`store_images: none`)."""


class InvalidReviewApiError(ApiError, status=422, code="invalid_review"):
    """A review that does not fit its case, or a similar-joint query for a joint the case does not have."""
