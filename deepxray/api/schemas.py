"""The service's answers as pydantic models: the pipeline builds `ScoreAnswer`, FastAPI validates what a route
returns against the same model and publishes it in `/openapi.json`, so the documented answer and the real one
cannot drift apart."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Point = list[float]


class _Answer(BaseModel):
    # An answer with a field the schema does not name is a bug here, not something to pass on silently.
    model_config = ConfigDict(extra="forbid")


class BodyPartAnswer(_Answer):
    label: str = Field(
        description="What the body-part model saw: left_hand, right_hand, chest, foot, ...; both_hands for a film of "
        "two hands (probability: the lower of the two)"
    )
    probability: float = Field(ge=0.0, le=1.0, description="Its calibrated probability")


class JointAnswer(_Answer):
    score: int = Field(ge=0, le=5, description="Ratingen erosion grade 0..5")
    probabilities: list[float] = Field(min_length=6, max_length=6, description="Probability of each grade 0..5")
    center: Point = Field(min_length=2, max_length=2, description="Joint centre (x, y) in the uploaded file's pixels")
    box: Point = Field(min_length=4, max_length=4, description="The scored crop's bounds (x0, y0, x1, y1), pixels")
    confidence: float = Field(ge=0.0, le=1.0, description="The joint detector's confidence")


class HandAnswer(_Answer):
    """One hand scored on the film."""

    laterality: Literal["L", "R"] = Field(description="From the hand's anatomy (which side its thumb is on)")
    scores: dict[str, int] = Field(description="Ratingen grade of each joint, mcp1..mcp5 and pip1..pip5")
    total: int = Field(ge=0, description="Sum of the ten grades")
    joints: dict[str, JointAnswer]
    box: Point = Field(
        min_length=4, max_length=4, description="Where the hand's joints are on the film (x0, y0, x1, y1), pixels"
    )
    confidence: float = Field(ge=0.0, le=1.0, description="The least of its ten joints' detector confidences")


class HandNotScored(_Answer):
    box: Point = Field(
        min_length=4, max_length=4, description="The part of the film (x0, y0, x1, y1) where the hand was found, pixels"
    )
    error: str = Field(description="Why it was not scored, as a code (joints_not_found, implausible_joints, ...)")
    detail: str = Field(description="Why it was not scored, as a sentence")


class OrientationAnswer(_Answer):
    rotated_deg: Literal[0, 90, 180, 270] = Field(
        description="How far the film was turned (clockwise) to show the hands upright to the models"
    )


class OverlayAnswer(_Answer):
    media_type: Literal["image/png"] = "image/png"
    base64: str = Field(description="The PNG: the film with each hand's and joint's box, scores and the notice")


class ScoreAnswer(_Answer):
    """The 200 answer of `POST /score`: the original service's `scores` object first, then the details.

    The top-level `scores`, `total`, `laterality` and `joints` are those of the left hand when the film shows one,
    else of the only hand; `hands` lists every hand scored, left hand first."""

    scores: dict[str, int] = Field(description="Ratingen grade of each joint, mcp1..mcp5 and pip1..pip5")
    total: int = Field(ge=0, description="Sum of the ten grades")
    body_part: BodyPartAnswer
    laterality: Literal["L", "R"] = Field(description="L, or R for a right hand (mirrored and scored)")
    joints: dict[str, JointAnswer]
    hands: list[HandAnswer] = Field(min_length=1, description="Every hand scored on the film, left hand first")
    hands_not_scored: list[HandNotScored] = Field(
        description="Hands found on the film but not scored (cut off, joints not found, ...), with the reason"
    )
    orientation: OrientationAnswer
    warnings: list[str] = Field(description="Sentences on evidence that disagrees, e.g. the DICOM header's laterality")
    models: dict[str, str] = Field(description="`name@version` of each model that made this answer")
    request_id: str
    notice: str = Field(description="Research use only: the demo models are trained on synthetic radiographs")
    case_id: str | None = Field(
        None, description="The stored case (GET /v1/cases/{case_id}); only when the service keeps cases"
    )
    overlay: OverlayAnswer | None = Field(None, description="Only with ?overlay=true: the picture of this answer")


class ErrorAnswer(_Answer):
    """Every answer other than 200."""

    error: str = Field(description="A short machine-readable code, e.g. not_a_hand, too_large, overloaded")
    detail: str = Field(description="What went wrong, as a sentence")
    request_id: str
    body_part: BodyPartAnswer | None = Field(None, description="422: what the body-part model saw")
    joints_not_found: list[str] | None = Field(None, description="422: the joints the detector could not find")
    layout_problems: list[str] | None = Field(None, description="422: why the joints found do not form a hand")
    modality: str | None = Field(None, description="422: the DICOM header's modality, when it is no radiograph")


class HealthAnswer(_Answer):
    status: Literal["ok"]
    request_id: str


class ModelReadiness(_Answer):
    tag: str | None
    ready: bool


class ReadyAnswer(_Answer):
    status: Literal["ready"]
    models: dict[str, ModelReadiness]
    request_id: str


class ModelCardsAnswer(BaseModel):
    models: dict[str, dict] = Field(description="Each model's card: name, version, input, labels, training data, ...")
    request_id: str
