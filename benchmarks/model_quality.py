"""How well a model set does on phantoms it never saw: body part, joints, erosion scores, and robustness.

Runs the full pipeline (decode included) in this process on full-size phantoms of a new seed:
- body part over all classes (clinical hands and other images): accuracy, left hands refused, non-radiographs
  accepted as a hand;
- joints: share within a quarter of the neighbouring-MCP distance of the true centre;
- erosion scores on crops cut where the detector put them: quadratic-weighted kappa, exact, within ±1 class, on a
  `clinical` and a `balanced` set;
- the same clinical hands rotated by 20°, at half resolution, as JPEG quality 70, as MONOCHROME1 DICOM, stored
  turned by 90°, 180° and 270° (counter-clockwise), and mirrored left to right: the kappa of each against the
  16-bit PNG's, joints found within a quarter MCP distance in the stored file's coordinates, and films answered
  with the wrong orientation or laterality.

Figures on synthetic phantoms; they say nothing about real radiographs (research use only).

    python -m benchmarks.model_quality --models models --seed 1000 --hands 300 --others 300
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from deepxray.labels import HAND_PARTS, JOINT_NAMES, RESEARCH_NOTICE
from deepxray.phantoms.generate import GenerationSettings, manifest_record
from deepxray.phantoms.phantom import Phantom, render_phantom
from deepxray.phantoms.writers import to_8bit, write_dicom
from deepxray.training.data import rotate_image
from evaluation.metrics import body_part_summary, cohen_kappa, exact_accuracy, localisation_rates, soft_accuracy

VARIANTS = ("png16", "rotated20", "half_resolution", "jpeg70", "dicom_monochrome1", "turned90", "turned180",
            "turned270", "mirrored")  # fmt: skip
# What the pipeline must report for each variant: the clockwise turn back to upright, and whether the film shows
# the hand's mirror image (a mirrored left hand is a right hand: its laterality follows its anatomy).
EXPECTED_TURN = {"turned90": 90, "turned180": 180, "turned270": 270}
OTHER_PARTS = ("chest", "foot", "other_radiograph", "not_radiograph")


def _png(image: np.ndarray) -> bytes:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()


def _variants(phantom: Phantom, seed: int, index: int, all_variants: bool) -> list[tuple[str, bytes, dict | None]]:
    centers = phantom.centers
    out = [("png16", _png(phantom.image), centers)]
    if not all_variants:
        return out
    rotated, turned = rotate_image(phantom.image, centers, 20.0)
    out.append(("rotated20", _png(rotated), turned))
    h, w = phantom.image.shape
    half = cv2.resize(phantom.image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    out.append(("half_resolution", _png(half), {k: ((x + 0.5) / 2 - 0.5, (y + 0.5) / 2 - 0.5) for k, (x, y) in centers.items()}))  # fmt: skip
    jpeg = cv2.imencode(".jpg", to_8bit(phantom.image), [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes()
    out.append(("jpeg70", jpeg, centers))
    buffer = io.BytesIO()
    write_dicom(buffer, phantom, f"{seed}-{index}", photometric="MONOCHROME1")
    out.append(("dicom_monochrome1", buffer.getvalue(), centers))
    for quarter in (1, 2, 3):  # stored turned counter-clockwise; the pipeline turns it back clockwise
        stored, points = phantom.image, dict(centers)
        for _ in range(quarter):  # one counter-clockwise turn: (x, y) -> (y, width - 1 - x)
            points = {k: (y, stored.shape[1] - 1 - x) for k, (x, y) in points.items()}
            stored = np.rot90(stored)
        out.append((f"turned{90 * quarter}", _png(np.ascontiguousarray(stored)), points))
    mirrored = {k: (w - 1 - x, y) for k, (x, y) in centers.items()}
    out.append(("mirrored", _png(np.ascontiguousarray(phantom.image[:, ::-1])), mirrored))
    return out


def _render(job: tuple[int, int, str, str, bool]) -> dict:
    seed, index, body_part, distribution, all_variants = job
    cv2.setNumThreads(1)
    phantom = render_phantom(seed, index, body_part, distribution)
    record = manifest_record(phantom, "", index, GenerationSettings(seed=seed, distribution=distribution))
    return {
        "set": distribution if phantom.scores else "others",
        "index": index,
        "body_part": body_part,
        "scores": phantom.scores,
        "files": _variants(phantom, seed, index, all_variants and phantom.scores is not None),
        "record": record,
    }


def plan(seed: int, hands: int, others: int, balanced: int) -> list[tuple]:
    """Clinical hands (4 left : 1 right) with every variant, other images, balanced left hands."""
    jobs = []
    for i in range(hands):
        jobs.append((seed, i, "right_hand" if i % 5 == 4 else "left_hand", "clinical", True))
    for i in range(others):
        jobs.append((seed, hands + i, OTHER_PARTS[i % len(OTHER_PARTS)], "clinical", False))
    for i in range(balanced):
        jobs.append((seed + 1, i, "left_hand", "balanced", False))
    return jobs


async def evaluate(models_dir: Path, jobs: list[tuple], workers: int) -> dict:
    from deepxray.models.runtime import local_models
    from deepxray.pipeline import ScoringError, score_radiograph
    from deepxray.settings import Settings

    models = local_models(models_dir, threads=1)
    settings = Settings()
    rows = defaultdict(list)  # (set, variant) -> per-image outcome
    seconds = []
    # A fork server, not fork: TensorFlow's threads already run in this process.
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        for n, item in enumerate(pool.imap(_render, jobs, chunksize=2), start=1):
            for variant, data, centers in item["files"]:
                start = time.perf_counter()
                try:
                    answer = await score_radiograph(data, models, settings)
                    outcome = {"accepted": True, "label": answer["body_part"]["label"], "answer": answer}
                except ScoringError as error:
                    label = error.extra.get("body_part", {}).get("label")
                    outcome = {"accepted": False, "label": label, "error": error.code}
                seconds.append(time.perf_counter() - start)
                outcome.update(true=item["body_part"], scores=item["scores"], centers=centers)
                rows[(item["set"], variant)].append(outcome)
            if n % 50 == 0:
                print(f"  {n}/{len(jobs)} images", flush=True)
    return {"rows": rows, "seconds": seconds}


def summarise(rows: dict) -> dict:
    out: dict = {"notice": RESEARCH_NOTICE}
    gate = rows[("clinical", "png16")] + rows[("others", "png16")]
    out["body_part"] = body_part_summary(
        [r["true"] for r in gate], [r["label"] for r in gate], [r["accepted"] for r in gate]
    )
    hands = [r for r in rows[("clinical", "png16")] + rows[("balanced", "png16")] if r["true"] in HAND_PARTS]
    predicted = [{k: tuple(j["center"]) for k, j in r["answer"]["joints"].items()} if r["accepted"] else None for r in hands]  # fmt: skip
    out["joints_within"] = localisation_rates(predicted, [r["centers"] for r in hands], (0.1, 0.25, 0.5))
    out["scores"] = {}
    for (name, variant), group in sorted(rows.items()):
        if name == "others":
            continue
        scored = [r for r in group if r["accepted"]]
        truth = np.array([[r["scores"][j] for j in JOINT_NAMES] for r in scored]).ravel()
        pred = np.array([[r["answer"]["scores"][j] for j in JOINT_NAMES] for r in scored]).ravel()
        laterality = {"left_hand": "L", "right_hand": "R"}
        flipped = {"left_hand": "R", "right_hand": "L"}
        expected = flipped if variant == "mirrored" else laterality
        found = [{k: tuple(j["center"]) for k, j in r["answer"]["joints"].items()} for r in scored]
        out["scores"][f"{name}/{variant}"] = {
            "hands": len(group),
            "scored": len(scored),
            "wrong_orientation": sum(
                r["answer"]["orientation"]["rotated_deg"] != EXPECTED_TURN.get(variant, 0) for r in scored
            ),
            "wrong_laterality": sum(r["answer"]["laterality"] != expected[r["true"]] for r in scored),
            "joints_within_quarter": localisation_rates(found, [r["centers"] for r in scored], (0.25,)).get(0.25)
            if scored
            else None,
            "quadratic_kappa": cohen_kappa(truth, pred, weights="quadratic"),
            "exact_accuracy": exact_accuracy(truth, pred),
            "within_one_class": soft_accuracy(truth, pred),
        }
    base = out["scores"]["clinical/png16"]["quadratic_kappa"]
    out["kappa_drop"] = {v: round(base - out["scores"][f"clinical/{v}"]["quadratic_kappa"], 4) for v in VARIANTS[1:]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--seed", type=int, default=1000, help="a seed the models were not trained on")
    parser.add_argument("--hands", type=int, default=300, help="clinical hands (with all variants)")
    parser.add_argument("--others", type=int, default=300, help="images of other classes")
    parser.add_argument("--balanced", type=int, default=300, help="balanced-distribution left hands")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    jobs = plan(args.seed, args.hands, args.others, args.balanced)
    start = time.perf_counter()
    result = asyncio.run(evaluate(args.models, jobs, args.workers))
    summary = summarise(result["rows"])
    summary["pipeline_seconds_median"] = float(np.median(result["seconds"]))
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    body = summary["body_part"]
    print(f"models: {args.models}; phantoms of seed {args.seed}; {RESEARCH_NOTICE}")
    print(f"body part: accuracy {body['accuracy']:.4f} over {body['n']} images; left hands refused "
          f"{body['left_hands_refused']}/{body['left_hands']}; non-hands accepted {body['non_hands_accepted']}")  # fmt: skip
    print(f"joints within 0.1/0.25/0.5 of the MCP distance: {summary['joints_within']}")

    def figure(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    for name, s in summary["scores"].items():
        print(f"scores {name:28s} kappa_q {figure(s['quadratic_kappa'])} exact {figure(s['exact_accuracy'])} "
              f"±1 {figure(s['within_one_class'])} ({s['scored']}/{s['hands']} hands scored; joints within 1/4 "
              f"{figure(s['joints_within_quarter'])}, wrong orientation {s['wrong_orientation']}, wrong laterality "
              f"{s['wrong_laterality']})")  # fmt: skip
    print(f"kappa drop against 16-bit PNG: {summary['kappa_drop']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
