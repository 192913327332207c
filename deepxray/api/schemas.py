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
    label: str = Field(description="What the body-part model saw: left_hand, right_hand, chest, foot, ...")
    probability: float = Field(ge=0.0, le=1.0, description="Its calibrated probability")


class JointAnswer(_Answer):
    score: int = Field(ge=0, le=5, description="Ratingen erosion grade 0..5")
    probabilities: list[float] = Field(min_length=6, max_length=6, description="Probability of each grade 0..5")
    center: Point = Field(min_length=2, max_length=2, description="Joint centre (x, y) in the uploaded file's pixels")
    box: Point = Field(min_length=4, max_length=4, description="The scored crop's bounds (x0, y0, x1, y1), pixels")
    confidence: float = Field(ge=0.0, le=1.0, description="The joint detector's confidence")


class ScoreAnswer(_Answer):
    """The 200 answer of `POST /score`: the original service's `scores` object first, then the details."""

    scores: dict[str, int] = Field(description="Ratingen grade of each joint, mcp1..mcp5 and pip1..pip5")
    total: int = Field(ge=0, description="Sum of the ten grades")
    body_part: BodyPartAnswer
    laterality: Literal["L", "R"] = Field(description="L, or R for a right hand (mirrored and scored)")
    joints: dict[str, JointAnswer]
    models: dict[str, str] = Field(description="`name@version` of each model that made this answer")
    request_id: str
    notice: str = Field(description="Research use only: the demo models are trained on synthetic radiographs")


class ErrorAnswer(_Answer):
    """Every answer other than 200."""

    error: str = Field(description="A short machine-readable code, e.g. not_a_hand, too_large, overloaded")
    detail: str = Field(description="What went wrong, as a sentence")
    request_id: str
    body_part: BodyPartAnswer | None = Field(None, description="422: what the body-part model saw")
    joints_not_found: list[str] | None = Field(None, description="422: the joints the detector could not find")


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
