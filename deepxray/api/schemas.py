"""The service's answers as pydantic models: the pipeline builds `ScoreAnswer`, FastAPI validates what a route
returns against the same model and publishes it in `/openapi.json`, so the documented answer and the real one
cannot drift apart."""

from __future__ import annotations

from datetime import datetime
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


class ChestFindingAnswer(_Answer):
    label: str = Field(description="One of CheXpert's fourteen labels")
    probability: float = Field(ge=0.0, le=1.0, description="The chest-findings model's probability")
    threshold: float | None = Field(
        description="Positive at or above this (the model card's); null: a label the model does not report"
    )
    positive: bool


class HeatmapAnswer(_Answer):
    grid: list[list[float]] = Field(description="Where the model saw the finding: a square grid, 1 at the most")
    box: Point = Field(min_length=4, max_length=4, description="The part of the film the grid covers, pixels")
    peak: Point = Field(min_length=2, max_length=2, description="Where the map peaks (x, y), film pixels")


class ChestAnswer(_Answer):
    """`POST /analyze` on a chest film (a hand film gets `ScoreAnswer`)."""

    body_part: BodyPartAnswer
    findings: list[ChestFindingAnswer] = Field(min_length=14, max_length=14)
    positive: list[str] = Field(description="The labels at or above their thresholds")
    heatmaps: dict[str, HeatmapAnswer] = Field(description="A heatmap for each positive label")
    models: dict[str, str] = Field(description="name@version of each model that computed this answer")
    request_id: str
    notice: str = Field(description="Research use only: models trained on synthetic radiographs")


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


# The case store's routes (deepxray/api/cases.py).

JointName = Literal["mcp1", "mcp2", "mcp3", "mcp4", "mcp5", "pip1", "pip2", "pip3", "pip4", "pip5"]


class CaseSummaryAnswer(_Answer):
    case_id: str
    created_at: datetime
    models: dict[str, str]
    body_part: str = Field(description="left_hand, right_hand or both_hands")
    hands: int = Field(description="Hands scored on the film")
    total: int = Field(description="The answer's top-level total (the left hand's where there is one)")
    reviewed: bool
    reviewed_at: datetime | None
    reviewer: str | None = Field(description="Who saved the latest review (an API key's id or a token's sub)")


class CaseListAnswer(_Answer):
    cases: list[CaseSummaryAnswer] = Field(description="Newest first")
    total: int = Field(description="Cases matching the filters, all pages")
    limit: int
    offset: int
    request_id: str


class JointReviewState(_Answer):
    decision: Literal["accepted", "corrected"]
    score: int = Field(ge=0, le=5, description="The reviewed grade")
    comment: str | None
    reviewer: str
    at: datetime


class CaseJointAnswer(_Answer):
    hand: int = Field(description="Index of the hand in the answer's `hands`")
    laterality: Literal["L", "R"]
    joint: JointName
    score: int = Field(ge=0, le=5, description="The model's grade")
    probabilities: list[float]
    center: Point
    review: JointReviewState | None = Field(description="The joint's current review; null before any")


class ReviewEvent(_Answer):
    at: datetime
    reviewer: str
    hand: int
    joint: JointName
    decision: Literal["accepted", "corrected"]
    score: int
    comment: str | None


class CaseAnswer(_Answer):
    """A stored case: the answer as the client got it, each joint with its current review, and every change."""

    case_id: str
    created_at: datetime
    models: dict[str, str]
    answer: dict = Field(description="The /score answer as it was given")
    image: Literal["preview", "original"] | None = Field(description="What picture of the film is kept")
    joints: list[CaseJointAnswer]
    reviewed: bool
    reviewed_at: datetime | None
    reviewer: str | None
    history: list[ReviewEvent] = Field(description="Every review change, oldest first")
    request_id: str
    notice: str


class JointReviewRequest(_Answer):
    hand: int = Field(0, ge=0, description="Index of the hand in the answer's `hands` (0: the first)")
    joint: JointName
    decision: Literal["accepted", "corrected"]
    score: int | None = Field(
        None, ge=0, le=5, description="The reviewed grade: required when corrected; accepted keeps the model's"
    )
    comment: str | None = Field(None, max_length=2000)


class ReviewRequest(_Answer):
    """A reviewer's word on a case: the joints named are accepted or corrected; the others keep their state."""

    joints: list[JointReviewRequest] = Field(min_length=1, max_length=20)


class SimilarQuery(_Answer):
    case_id: str
    hand: int
    joint: JointName
    score: int


class SimilarJointAnswer(_Answer):
    case_id: str
    hand: int
    laterality: Literal["L", "R"]
    joint: JointName
    score: int = Field(description="The model's grade")
    review_score: int | None = Field(description="The reviewed grade, where the joint was reviewed")
    decision: Literal["accepted", "corrected"] | None
    similarity: float = Field(description="Cosine similarity of the scorer's embeddings, -1..1")


class SimilarAnswer(_Answer):
    query: SimilarQuery
    similar: list[SimilarJointAnswer] = Field(description="Most similar first; joints of other cases only")
    method: Literal["numpy", "pgvector"]
    request_id: str


class DeletedAnswer(_Answer):
    deleted: str = Field(description="The id of the case deleted, with its image, joints and reviews")
    request_id: str
