"""Stored cases back to training: a manifest in the phantom generator's format, which `deepxray train --data DIR`
reads (`deepxray.training.data.ManifestSource`).

One record per scored hand: the film's picture, cut between the hands where the film shows two (each hand gets its
side of the film, whole, wrist and fingertips included, as a film of one hand shows it), turned upright as the
models saw it, with each joint's centre in the cut's pixels and its label: the reviewed grade where the
case was reviewed (a joint the reviewer left alone counts as accepted), else the model's. A case kept without a
picture (`store_images: none`) cannot be exported and is counted as skipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deepxray.cases.records import CaseNotFoundError, StoredCase
from deepxray.phantoms.generate import MANIFEST


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: `cases` with `hands` records in `manifest`; `skipped` cases had no picture."""

    manifest: Path
    cases: int
    hands: int
    skipped: int

    def text(self) -> str:
        why = " (kept without a picture of the film: store_images none)" if self.skipped else ""
        return f"exported {self.cases} cases ({self.hands} hands) to {self.manifest}; {self.skipped} skipped{why}"


def export_cases(store, out: Path, reviewed_only: bool = False) -> ExportSummary:
    """Write every case of `store` (or every reviewed one) to `out/manifest.jsonl` and one PNG per hand (as
    stored: an 8-bit preview, or the original 8 or 16 bit), replacing an earlier manifest there."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records, cases, skipped = [], 0, 0
    for case in store.iter_cases(reviewed_only):
        try:
            image = store.image(case.case_id)
        except CaseNotFoundError:  # deleted while the export ran
            continue
        if image is None:
            skipped += 1
            continue
        pixels = cv2.imdecode(np.frombuffer(image.encoded, np.uint8), cv2.IMREAD_UNCHANGED)
        cases += 1
        for hand in range(len(case.answer["hands"])):
            cut, record = hand_record(case, hand, pixels, image.scale)
            if record is None:
                continue
            ok, png = cv2.imencode(".png", cut)
            if not ok:
                raise ValueError(f"case {case.case_id}: its picture could not be written as PNG")
            (out / record["file"]).write_bytes(png.tobytes())
            records.append(record)
    manifest = out / MANIFEST
    partial = manifest.with_name(manifest.name + ".partial")
    partial.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    os.replace(partial, manifest)  # a reader never sees half a manifest
    return ExportSummary(manifest, cases, len(records), skipped)


def hand_side(answer: dict, hand: int, film_size: tuple[float, float]) -> tuple[float, float, float, float]:
    """The part of the film that shows hand `hand` (film pixels: left, top, right, bottom): the whole film, cut
    halfway between this hand's box and each other hand's (scored or not) on the axis that separates them.

    The answer's boxes hold only the joints; a cut to them alone would lose the wrist and fingertips that the
    body-part model and the detector learn from.
    """
    own = answer["hands"][hand]["box"]
    others = [h["box"] for i, h in enumerate(answer["hands"]) if i != hand]
    others += [h["box"] for h in answer.get("hands_not_scored", [])]
    side = [0.0, 0.0, float(film_size[0]), float(film_size[1])]
    for other in others:
        gaps = [abs((own[a] + own[a + 2]) - (other[a] + other[a + 2])) for a in (0, 1)]
        axis = 0 if gaps[0] >= gaps[1] else 1  # x: side by side, y: one above the other (a turned film)
        if own[axis] + own[axis + 2] < other[axis] + other[axis + 2]:
            side[axis + 2] = min(side[axis + 2], (own[axis + 2] + other[axis]) / 2)
        else:
            side[axis] = max(side[axis], (other[axis + 2] + own[axis]) / 2)
    return side[0], side[1], side[2], side[3]


def hand_record(case: StoredCase, hand: int, pixels: np.ndarray, scale: float) -> tuple[np.ndarray, dict | None]:
    """Hand `hand` of `case` cut from `pixels` (the stored picture, `scale` picture pixels per film pixel) and
    turned upright, and its manifest record; (pixels, None) for a hand without joints."""
    joints = [joint for joint in case.joints if joint.hand == hand]
    if not joints:
        return pixels, None
    laterality = joints[0].laterality
    # A film position p is at (p + 0.5) * scale - 0.5 in the picture; a box's edges scale as they are.
    centers = {j.joint: ((j.center[0] + 0.5) * scale - 0.5, (j.center[1] + 0.5) * scale - 0.5) for j in joints}
    height, width = pixels.shape[:2]
    left, top, right, bottom = hand_side(case.answer, hand, (width / scale, height / scale))
    # Rounded alike on both sides of a cut, so the two sides of a film of both hands meet without overlap.
    left, top = max(0, round(left * scale)), max(0, round(top * scale))
    right, bottom = min(width, round(right * scale)), min(height, round(bottom * scale))
    cut = pixels[top:bottom, left:right]
    points = {name: (x - left, y - top) for name, (x, y) in centers.items()}
    for _ in range(case.answer.get("orientation", {}).get("rotated_deg", 0) // 90 % 4):
        rows = cut.shape[0]  # one clockwise quarter turn: (x, y) -> (rows - 1 - y, x)
        cut = np.rot90(cut, -1)
        points = {name: (rows - 1 - y, x) for name, (x, y) in points.items()}
    cut = np.ascontiguousarray(cut)
    # A reviewed case's joints are all the reviewer's: those not named were accepted as the model gave them.
    source = "review" if case.reviewed else "model"
    labels = {
        joint.joint: {
            "center": [round(float(c), 2) for c in points[joint.joint]],
            "score": joint.review.score if joint.review is not None else joint.score,
            "label_source": source,
        }
        for joint in joints
    }
    record = {
        "file": f"{case.case_id}-{hand}.png",
        "body_part": "left_hand" if laterality == "L" else "right_hand",
        "kind": "hand",
        "laterality": laterality,
        "width": int(cut.shape[1]),
        "height": int(cut.shape[0]),
        "joints": labels,
        "case_id": case.case_id,
        "hand": hand,
        "label_source": source,
    }
    return cut, record
