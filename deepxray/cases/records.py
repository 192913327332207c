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
    """The stored picture of a film: a PNG without metadata, and how its pixels relate to the film's.

    Attributes:
        png: An 8-bit windowed preview (`preview`) or the decoded pixels at full size, 8 or 16 bit (`original`).
        kind: Which of the two.
        scale: Image pixels per film pixel (1.0 for `original`); a film position p is at (p + 0.5) * scale - 0.5.
    """

    png: bytes
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
        score: The reviewed grade 0..5 (for "accepted", the model's own).
        comment: Free text, or None.
    """

    hand: int
    joint: str
    decision: Decision
    score: int
    comment: str | None = None


class CaseNotFoundError(LookupError):
    """No case with this id (never stored, or deleted)."""


class InvalidReviewError(ValueError):
    """A review that does not fit its case (a hand or joint the case does not have, a score outside 0..5)."""
