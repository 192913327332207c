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
  with the wrong orientation or laterality;
- films of both hands (`--both-hands`) as 16-bit PNG, stored turned by 90°, 180° and 270° and mirrored, counted
  per hand: each labelled hand paired with the nearest answered hand (`evaluation.hands`, never by
  laterality), hands scored, their kappa, exact and ±1, joints within a quarter MCP distance, wrong laterality
  (a mirrored film's hands swap laterality) and orientation, films refused and why, hands refused and why, and
  films answered with a body part other than both_hands.

Figures on synthetic phantoms; they say nothing about real radiographs (research use only).

    python -m benchmarks.model_quality --models models --seed 1000 --hands 300 --others 300 --both-hands 60
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

from deepxray.labels import BOTH_HANDS, HAND_PARTS, JOINT_NAMES, RESEARCH_NOTICE
from deepxray.phantoms.generate import GenerationSettings, manifest_record
from deepxray.phantoms.phantom import Phantom, render_phantom
from deepxray.phantoms.stored import store
from deepxray.phantoms.writers import to_8bit, write_dicom
from deepxray.training.data import rotate_image
from evaluation.hands import pair_hands
from evaluation.metrics import body_part_summary, cohen_kappa, exact_accuracy, localisation_rates, soft_accuracy

VARIANTS = ("png16", "rotated20", "half_resolution", "jpeg70", "dicom_monochrome1", "turned90", "turned180",
            "turned270", "mirrored")  # fmt: skip
BOTH_HANDS_VARIANTS = ("png16", "turned90", "turned180", "turned270", "mirrored")
# What the pipeline must report for each variant: the clockwise turn back to upright. (The laterality a mirrored
# film must be answered with, its hands' mirror images, comes with the stored film: deepxray.phantoms.stored.)
EXPECTED_TURN = {"turned90": 90, "turned180": 180, "turned270": 270}
OTHER_PARTS = ("chest", "foot", "other_radiograph", "not_radiograph")


def _png(image: np.ndarray) -> bytes:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()


def _hands(phantom: Phantom) -> list[dict]:
    """Every hand of a film labelled as the film is stored: laterality (a mirrored hand's is the other side's, as
    its anatomy shows), scores and centres in the stored file's pixels."""
    return [{"laterality": h.laterality, "scores": h.scores, "centers": h.centers} for h in phantom.hands or []]


def _variants(phantom: Phantom, seed: int, index: int, names: tuple[str, ...]) -> list[tuple[str, bytes, list[dict]]]:
    """The film stored each way in `names` (png16 first), with its hands as labelled there (`_hands`)."""
    image, hands = phantom.image, _hands(phantom)
    out = [("png16", _png(image), hands)]
    if "rotated20" in names:
        rotated, turned = rotate_image(image, phantom.centers, 20.0)
        out.append(("rotated20", _png(rotated), [{**hands[0], "centers": turned}]))
    if "half_resolution" in names:
        h, w = image.shape
        half = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        centers = {k: ((x + 0.5) / 2 - 0.5, (y + 0.5) / 2 - 0.5) for k, (x, y) in phantom.centers.items()}
        out.append(("half_resolution", _png(half), [{**hands[0], "centers": centers}]))
    if "jpeg70" in names:
        jpeg = cv2.imencode(".jpg", to_8bit(image), [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes()
        out.append(("jpeg70", jpeg, hands))
    if "dicom_monochrome1" in names:
        buffer = io.BytesIO()
        write_dicom(buffer, phantom, f"{seed}-{index}", photometric="MONOCHROME1")
        out.append(("dicom_monochrome1", buffer.getvalue(), hands))
    # Stored turned counter-clockwise (the pipeline turns it back clockwise) or mirrored: deepxray.phantoms.stored.
    for how in ("turned90", "turned180", "turned270", "mirrored"):
        if how in names:
            stored = store(phantom, how)
            out.append((how, _png(stored.image), _hands(stored)))
    return out


def _render(job: tuple[int, int, str, str, bool]) -> dict:
    seed, index, body_part, distribution, all_variants = job
    cv2.setNumThreads(1)
    phantom = render_phantom(seed, index, body_part, distribution)
    record = manifest_record(phantom, "", index, GenerationSettings(seed=seed, distribution=distribution))
    if body_part == BOTH_HANDS:
        name, variants = BOTH_HANDS, BOTH_HANDS_VARIANTS
    else:
        name, variants = (distribution, VARIANTS) if phantom.scores else ("others", ())
    return {
        "set": name,
        "index": index,
        "body_part": body_part,
        "scores": phantom.scores,
        "files": _variants(phantom, seed, index, variants if all_variants else ()),
        "record": record,
    }


def plan(seed: int, hands: int, others: int, balanced: int, both_hands: int = 0) -> list[tuple]:
    """Clinical hands (4 left : 1 right) with every variant, other images, balanced left hands, films of both
    hands with their variants."""
    jobs = []
    for i in range(hands):
        jobs.append((seed, i, "right_hand" if i % 5 == 4 else "left_hand", "clinical", True))
    for i in range(others):
        jobs.append((seed, hands + i, OTHER_PARTS[i % len(OTHER_PARTS)], "clinical", False))
    for i in range(balanced):
        jobs.append((seed + 1, i, "left_hand", "balanced", False))
    for i in range(both_hands):
        jobs.append((seed, hands + others + i, BOTH_HANDS, "clinical", True))
    return jobs


async def evaluate(models_dir: Path, jobs: list[tuple], workers: int) -> dict:
    from deepxray.models.runtime import local_models
    from deepxray.pipeline import ScoringError, score_radiograph
    from deepxray.settings import Settings

    models = local_models(models_dir, threads=1)
    settings = Settings()
    rows = defaultdict(list)  # (set, variant) -> per-image outcome
    seconds = defaultdict(list)  # set -> seconds per image
    # A fork server, not fork: TensorFlow's threads already run in this process.
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        for n, item in enumerate(pool.imap(_render, jobs, chunksize=2), start=1):
            for variant, data, hands in item["files"]:
                start = time.perf_counter()
                try:
                    answer = await score_radiograph(data, models, settings)
                    outcome = {"accepted": True, "label": answer["body_part"]["label"], "answer": answer}
                except ScoringError as error:
                    label = error.extra.get("body_part", {}).get("label")
                    outcome = {"accepted": False, "label": label, "error": error.code}
                seconds[item["set"]].append(time.perf_counter() - start)
                centers = hands[0]["centers"] if item["scores"] else None
                outcome.update(true=item["body_part"], scores=item["scores"], centers=centers, hands=hands)
                rows[(item["set"], variant)].append(outcome)
            if n % 50 == 0:
                print(f"  {n}/{len(jobs)} images", flush=True)
    return {"rows": rows, "seconds": seconds}


def _centres(hand: dict) -> dict:
    """An answered hand's (or the answer's top-level) joint centres."""
    return {k: tuple(j["center"]) for k, j in hand["joints"].items()}


def _agreement(pairs: list[tuple[dict, dict]]) -> dict:
    """Joints within a quarter MCP distance, kappa, exact and ±1 over (true hand, answered hand) pairs, each
    true hand `{"scores", "centers"}` and each answered hand an answer's hand (or its top level)."""
    truth = np.array([[t["scores"][j] for j in JOINT_NAMES] for t, _ in pairs]).ravel()
    pred = np.array([[a["scores"][j] for j in JOINT_NAMES] for _, a in pairs]).ravel()
    found = [_centres(a) for _, a in pairs]
    return {
        "joints_within_quarter": localisation_rates(found, [t["centers"] for t, _ in pairs], (0.25,)).get(0.25)
        if pairs
        else None,
        "quadratic_kappa": cohen_kappa(truth, pred, weights="quadratic"),
        "exact_accuracy": exact_accuracy(truth, pred),
        "within_one_class": soft_accuracy(truth, pred),
    }


def _wrong_orientation(answered: list[dict], variant: str) -> int:
    return sum(r["answer"]["orientation"]["rotated_deg"] != EXPECTED_TURN.get(variant, 0) for r in answered)


def _single_hand_figures(group: list[dict], variant: str) -> dict:
    scored = [r for r in group if r["accepted"]]
    return {
        "hands": len(group),
        "scored": len(scored),
        "wrong_orientation": _wrong_orientation(scored, variant),
        "wrong_laterality": sum(r["answer"]["laterality"] != r["hands"][0]["laterality"] for r in scored),
        **_agreement([(r, r["answer"]) for r in scored]),
    }


def _both_hands_figures(films: list[dict], variant: str) -> dict:
    """Per hand of the films of one variant: each true hand paired with the nearest answered hand (by MCP3)."""
    answered = [r for r in films if r["accepted"]]
    pairs, not_scored = [], Counter()
    for r in answered:
        paired = pair_hands([(None, hand["centers"]) for hand in r["hands"]], r["answer"], None)
        pairs += [(truth, hand) for truth, (hand, _) in zip(r["hands"], paired, strict=True) if hand is not None]
        not_scored.update(reason for hand, reason in paired if hand is None)
    return {
        "films": len(films),
        "hands": sum(len(r["hands"]) for r in films),
        "scored": len(pairs),
        "wrong_orientation": _wrong_orientation(answered, variant),
        "wrong_laterality": sum(hand["laterality"] != truth["laterality"] for truth, hand in pairs),
        **_agreement(pairs),
        "films_refused": dict(Counter(r["error"] for r in films if not r["accepted"])),
        "hands_not_scored": dict(not_scored),
        "not_both_hands": sum(r["label"] != BOTH_HANDS for r in answered),
    }


def summarise(rows: dict) -> dict:
    out: dict = {"notice": RESEARCH_NOTICE}
    gate = rows[("clinical", "png16")] + rows[("others", "png16")]
    out["body_part"] = body_part_summary(
        [r["true"] for r in gate], [r["label"] for r in gate], [r["accepted"] for r in gate]
    )
    hands = [r for r in rows[("clinical", "png16")] + rows[("balanced", "png16")] if r["true"] in HAND_PARTS]
    predicted = [_centres(r["answer"]) if r["accepted"] else None for r in hands]
    out["joints_within"] = localisation_rates(predicted, [r["centers"] for r in hands], (0.1, 0.25, 0.5))
    out["scores"], out["both_hands"] = {}, {}
    for (name, variant), group in sorted(rows.items()):
        if name == BOTH_HANDS:
            out["both_hands"][f"{name}/{variant}"] = _both_hands_figures(group, variant)
        elif name != "others":
            out["scores"][f"{name}/{variant}"] = _single_hand_figures(group, variant)
    base = out["scores"]["clinical/png16"]["quadratic_kappa"]
    out["kappa_drop"] = {v: round(base - out["scores"][f"clinical/{v}"]["quadratic_kappa"], 4) for v in VARIANTS[1:]}
    return out


def _figure(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _counted(reasons: dict[str, int]) -> str:
    return f"{sum(reasons.values())}" + (f" ({', '.join(f'{k} {n}' for k, n in sorted(reasons.items()))})" if reasons else "")  # fmt: skip


def _score_line(name: str, s: dict) -> str:
    """One printed line of a variant's figures; a both-hands variant adds its films, refusals and labels."""
    films = f" on {s['films']} films" if "films" in s else ""
    extra = (
        f", films refused {_counted(s['films_refused'])}, hands of answered films not scored "
        f"{_counted(s['hands_not_scored'])}, answered as another body part {s['not_both_hands']}"
        if "films" in s
        else ""
    )
    return (f"scores {name:28s} kappa_q {_figure(s['quadratic_kappa'])} exact {_figure(s['exact_accuracy'])} "
            f"±1 {_figure(s['within_one_class'])} ({s['scored']}/{s['hands']} hands scored{films}; joints within 1/4 "
            f"{_figure(s['joints_within_quarter'])}, wrong orientation {s['wrong_orientation']}, wrong laterality "
            f"{s['wrong_laterality']}{extra})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--seed", type=int, default=1000, help="a seed the models were not trained on")
    parser.add_argument("--hands", type=int, default=300, help="clinical hands (with all variants)")
    parser.add_argument("--others", type=int, default=300, help="images of other classes")
    parser.add_argument("--balanced", type=int, default=300, help="balanced-distribution left hands")
    parser.add_argument("--both-hands", type=int, default=60, help="films of both hands (with their variants)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    jobs = plan(args.seed, args.hands, args.others, args.balanced, args.both_hands)
    start = time.perf_counter()
    result = asyncio.run(evaluate(args.models, jobs, args.workers))
    summary = summarise(result["rows"])
    single = [s for name, times in result["seconds"].items() if name != BOTH_HANDS for s in times]
    summary["pipeline_seconds_median"] = float(np.median(single))
    if result["seconds"][BOTH_HANDS]:
        summary["pipeline_seconds_median_both_hands"] = float(np.median(result["seconds"][BOTH_HANDS]))
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    body = summary["body_part"]
    print(f"models: {args.models}; phantoms of seed {args.seed}; {RESEARCH_NOTICE}")
    print(f"body part: accuracy {body['accuracy']:.4f} over {body['n']} images; left hands refused "
          f"{body['left_hands_refused']}/{body['left_hands']}; non-hands accepted {body['non_hands_accepted']}")  # fmt: skip
    print(f"joints within 0.1/0.25/0.5 of the MCP distance: {summary['joints_within']}")
    for name, s in summary["scores"].items():
        print(_score_line(name, s))
    print(f"kappa drop against 16-bit PNG: {summary['kappa_drop']}")
    for name, s in summary["both_hands"].items():
        print(_score_line(name, s))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
