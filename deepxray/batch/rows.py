"""The output's columns, and the rows of one film: one row per hand scored (a film of both hands gives two), one
per hand found but not scored, and one row for a film refused or not read at all. Every engine turns what it got
(an answer or an error body, in the `/score` contract's shape) into rows here, so the engines' outputs agree.

`status` says which kind a row is: `scored`, `not_scored` (a hand found on a film whose other hand was scored),
`refused` (the service's 4xx: not a hand, unreadable, too large, ...) or `failed` (the scorer itself failed: a
timeout, an overloaded service that stayed so, a crash). `rows_of_film` lets resume tell a film written whole from
one cut off by a kill.
"""

from __future__ import annotations

from deepxray.batch.context import CONTEXT_COLUMNS
from deepxray.batch.inputs import Film
from deepxray.labels import JOINT_NAMES
from deepxray.models.registry import MODEL_NAMES

SCORED, NOT_SCORED, REFUSED, FAILED = "scored", "not_scored", "refused", "failed"
MODEL_COLUMNS = tuple(f"{name}_model" for name in MODEL_NAMES)
COLUMNS = (
    "source", "image_id", "patient_key", "status", "hand", "laterality", *JOINT_NAMES, "total", "body_part",
    "body_part_probability", "rotated_deg", "warnings", "error", "detail", *MODEL_COLUMNS, "seconds",
    "rows_of_film", *CONTEXT_COLUMNS,
)  # fmt: skip


def film_rows(
    film: Film, image_id: str | None, status: int, body: dict, seconds: float, context: dict | None = None
) -> list[dict]:
    """The rows of one film from the scorer's answer: `status` 200 with a `/score` answer, or an error status with
    the API's error body (`error`, `detail`); status 0 or 5xx is a failure of the scorer, not of the film."""
    common = {"source": film.source, "image_id": image_id, "patient_key": film.patient_key,
              "seconds": round(seconds, 4), **dict.fromkeys(CONTEXT_COLUMNS), **(context or {})}  # fmt: skip
    if status != 200:
        kind = REFUSED if 400 <= status < 500 else FAILED
        detail = str(body.get("detail") or "")
        rows = [{**common, "status": kind, "error": body.get("error") or f"http_{status}", "detail": detail}]
    else:
        shared = {
            **common,
            "body_part": body["body_part"]["label"],
            "body_part_probability": round(float(body["body_part"]["probability"]), 4),
            "rotated_deg": body["orientation"]["rotated_deg"],
            "warnings": " ".join(body.get("warnings") or []) or None,
            **{f"{name}_model": tag for name, tag in body["models"].items()},
        }
        rows = [{**shared, "status": SCORED, "hand": number, "laterality": hand["laterality"], **hand["scores"],
                 "total": hand["total"]} for number, hand in enumerate(body["hands"], 1)]  # fmt: skip
        rows += [{**shared, "status": NOT_SCORED, "hand": len(rows) + number, "error": hand["error"],
                  "detail": hand["detail"]} for number, hand in enumerate(body.get("hands_not_scored") or [], 1)]  # fmt: skip
    return [{column: row.get(column) for column in COLUMNS} | {"rows_of_film": len(rows)} for row in rows]
