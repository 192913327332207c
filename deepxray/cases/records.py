"""What the case store keeps and gives back, as plain dataclasses: the ingress builds a `NewCase` from what it
already holds after scoring (the answer, the decoded film, the scorer's embeddings), the store writes it, the
review API and the export read it back. No patient data: the film's pixels (never the uploaded file, whose
header may name the patient), and the study and series only as salted pseudonyms."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np

ImageKind = Literal["preview", "original"]
Decision = Literal["accepted", "corrected"]


def new_case_id() -> str:
    """A random case id (32 hex digits): it says nothing about the patient or the film."""
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FilmImage:
    """The stored picture of a film: an encoded image without metadata, and how its pixels relate to the film's.

    Attributes:
        encoded: An 8-bit windowed preview as JPEG (`preview`) or the decoded pixels at full size, 8 or 16 bit,
            as PNG (`original`); OpenCV decodes either.
        kind: Which of the two.
        scale: Image pixels per film pixel (1.0 for `original`); a film position p is at (p + 0.5) * scale - 0.5.
    """

    encoded: bytes
    kind: ImageKind
    scale: float


@dataclass(frozen=True)
class JointRecord:
    """One scored joint of a case, as the answer gave it, with the scorer's embedding of its crop.

    Attributes:
        hand: The hand's index in the answer's `hands` (0 = the first, the left hand where there is one).
        laterality: "L" or "R", the hand's.
        joint: mcp1..mcp5, pip1..pip5.
        score: The predicted Ratingen grade 0..5.
        probabilities: The six grade probabilities.
        center: (x, y) in the film's pixels as stored.
        embedding: The scorer's penultimate-layer features of the crop (float32), or None when the scorer gave
            none; similarity search compares only embeddings of the same scorer version.
    """

    hand: int
    laterality: str
    joint: str
    score: int
    probabilities: list[float]
    center: tuple[float, float]
    embedding: np.ndarray | None = None


@dataclass(frozen=True)
class NewCase:
    """A scored film to keep.

    Attributes:
        answer: The `/score` answer as the client got it (it holds `case_id`).
        models: `name@version` of each model (the answer's `models`).
        film_size: (width, height) of the film as stored, pixels.
        joints: Every scored joint of every hand.
        image: The film's picture (`store_images`), or None (`store_images: none`).
        study_id, series_id: Salted pseudonyms of the DICOM Study / Series Instance UID (`pseudonym_salt`), or None.
    """

    answer: dict
    models: dict[str, str]
    film_size: tuple[int, int]
    joints: list[JointRecord]
    image: FilmImage | None = None
    study_id: str | None = None
    series_id: str | None = None
    case_id: str = field(default_factory=new_case_id)
    created_at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True)
class JointReview:
    """A reviewer's word on one joint: the model's score accepted, or corrected to another.

    Attributes:
        hand: The hand's index in the answer's `hands`.
        joint: mcp1..pip5.
        decision: "accepted" (score = the model's) or "corrected".
        score: The reviewed grade 0..5 (for "accepted", the model's own, or None: the store fills it in).
        comment: Free text, or None.
    """

    hand: int
    joint: str
    decision: Decision
    score: int | None
    comment: str | None = None


@dataclass(frozen=True)
class CurrentReview:
    """The latest review of one joint (its last event in the case's history)."""

    decision: Decision
    score: int
    comment: str | None
    reviewer: str
    reviewed_at: datetime


@dataclass(frozen=True)
class StoredJoint:
    """One scored joint of a stored case, with its current review (None: never reviewed).

    Attributes:
        hand, laterality, joint, score, probabilities, center: As in `JointRecord`.
        review: The latest review of the joint, or None.
    """

    hand: int
    laterality: str
    joint: str
    score: int
    probabilities: list[float]
    center: tuple[float, float]
    review: CurrentReview | None = None


@dataclass(frozen=True)
class ReviewEvent:
    """One entry of a case's review history: a reviewer's word on one joint at one time."""

    at: datetime
    reviewer: str
    hand: int
    joint: str
    decision: Decision
    score: int
    comment: str | None


@dataclass(frozen=True)
class StoredCase:
    """A case as the store gives it back (`CaseStore.get`).

    Attributes:
        image_kind: "preview" or "original" where the film's picture is kept (`CaseStore.image`), else None.
        joints: Every scored joint, by hand and then in the answer's joint order.
        reviewed, reviewed_at, reviewer: Whether, when and by whom the case was last reviewed.
        history: Every review event, oldest first (nothing is overwritten).
    """

    case_id: str
    created_at: datetime
    models: dict[str, str]
    answer: dict
    film_size: tuple[int, int]
    study_id: str | None
    series_id: str | None
    image_kind: ImageKind | None
    joints: list[StoredJoint]
    reviewed: bool
    reviewed_at: datetime | None
    reviewer: str | None
    history: list[ReviewEvent]


@dataclass(frozen=True)
class CaseSummary:
    """One line of a case listing (no image, no joints)."""

    case_id: str
    created_at: datetime
    models: dict[str, str]
    body_part: str
    hands: int
    total: int
    reviewed: bool
    reviewed_at: datetime | None
    reviewer: str | None


@dataclass(frozen=True)
class CasePage:
    """A page of a listing, newest first, and how many cases match the filters in all."""

    items: list[CaseSummary]
    total: int


@dataclass(frozen=True)
class SimilarJoint:
    """A stored joint like the one asked about, from another case.

    Attributes:
        score: The model's grade.
        reviewed_score, decision: Its current review, or None.
        similarity: Cosine similarity of the two embeddings (1 = the same direction).
    """

    case_id: str
    hand: int
    laterality: str
    joint: str
    score: int
    reviewed_score: int | None
    decision: Decision | None
    similarity: float


class CaseNotFoundError(LookupError):
    """No case with this id (never stored, or deleted)."""


class InvalidReviewError(ValueError):
    """A review that does not fit its case (a hand or joint the case does not have, a score outside 0..5)."""
