"""What counts as a right answer under load: one function that sorts every response into a kind.

Kinds: `ok` (a hand scored: a 200 that is the API's answer, `deepxray.api.schemas.ScoreAnswer`, with the ten
joints' scores in 0..5 adding up to its total and the expected laterality), `refused` (a non-hand answered with
the API's 422 error, `ErrorAnswer`, saying `not_a_hand`), `overloaded` (503, Serve's back-pressure),
`wrong_answer` (a 200 or 422 that is not the answer this image should get), `http_<status>` (any other status),
`connection_error` (no HTTP answer at all).

The answers are checked against the API's own schemas (strictly: no bool for an int, no string for a number);
what a schema cannot say (which joints, in which order, what the total must be, which hand this image is) is
checked here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from deepxray.api.schemas import ErrorAnswer, ScoreAnswer
from deepxray.labels import JOINT_NAMES

ANSWERED = ("ok", "refused")  # the service did its job
OVERLOADED = "overloaded"
CONNECTION_ERROR = "connection_error"
WRONG_ANSWER = "wrong_answer"


@dataclass(frozen=True)
class Expected:
    """What one pool image should get: a score (hands, with their laterality) or a 422 (everything else)."""

    body_part: str
    laterality: str | None  # "L" / "R" for hands

    @property
    def is_hand(self) -> bool:
        return self.body_part in ("left_hand", "right_hand")


def _body(content: bytes | str | dict | None) -> dict | None:
    if isinstance(content, dict):
        return content
    try:
        body = json.loads(content or b"")
    except (ValueError, TypeError):
        return None
    return body if isinstance(body, dict) else None


def _schema_problem(schema, body: dict) -> str | None:
    """Why `body` is not a valid `schema` answer (the first error, in a few words), or None."""
    try:
        schema.model_validate(body, strict=True)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the answer"
        return f"not the API's {schema.__name__}: {where}: {first['msg']}"
    return None


def scores_problem(body: dict | None, expected: Expected) -> str | None:
    """Why a 200 body is not a valid score of this hand, or None when it is."""
    if body is None:
        return "the 200 body is not JSON"
    problem = _schema_problem(ScoreAnswer, body)
    if problem:
        return problem
    scores = body["scores"]
    if list(scores) != list(JOINT_NAMES):
        return "the scores are not the ten joints"
    if not all(0 <= v <= 5 for v in scores.values()):
        return "a score is outside 0..5"
    if body["total"] != sum(scores.values()):
        return "the total is not the sum of the scores"
    if expected.laterality and body["laterality"] != expected.laterality:
        return f"laterality {body['laterality']!r}, expected {expected.laterality!r}"
    return None


def classify(status: int, content: bytes | str | dict | None, expected: Expected) -> tuple[str, str]:
    """(kind, reason) of one response; status 0 means no HTTP answer (connection refused, reset, timeout)."""
    if status == 0:
        return CONNECTION_ERROR, "no HTTP answer"
    if status == 503:
        return OVERLOADED, "503"
    if status == 200:
        if not expected.is_hand:
            return WRONG_ANSWER, f"a {expected.body_part} was scored"
        problem = scores_problem(_body(content), expected)
        return (WRONG_ANSWER, problem) if problem else ("ok", "scored")
    if status == 422:
        if expected.is_hand:
            return WRONG_ANSWER, "a hand was refused"
        body = _body(content)
        if body is None or body.get("error") != "not_a_hand":
            return WRONG_ANSWER, "the 422 body does not say not_a_hand"
        problem = _schema_problem(ErrorAnswer, body)
        return (WRONG_ANSWER, problem) if problem else ("refused", "not a hand")
    return f"http_{status}", str(status)
