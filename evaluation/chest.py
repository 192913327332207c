"""Evaluating the chest-findings model on chest phantoms it never saw: AUROC per label with bootstrap intervals,
the precision / recall / F1 / support table with micro, macro, weighted and samples averages (as seed 003's
table), and localisation (does a true positive's heatmap peak fall inside the finding's recorded region).

    python -m evaluation.chest --models models --out docs/evaluation/chest-findings --n 1000 --seed 1000

renders `--n` films of the set `--seed` (never the training seed) at the registry prevalence, scores them
in-process with the same preprocessing the service uses, and writes `report.md`, `report.json` and `heatmaps.png`
(one true positive per drawn label: its view, its heatmap, its recorded region and the peak) into `--out`.
Research use only: figures measured on synthetic phantoms say nothing of clinical accuracy.

The averages are scikit-learn's (`classification_report`, zero_division=0) over the labels the generator draws
(`deepxray.phantoms.chest.DRAWN`): micro pools every label's counts, macro averages the labels, weighted averages
them by support, samples averages each film's own precision, recall and F1 over its labels. A label the generator
does not draw (Pneumonia) has no positives: it is listed, marked "not drawn", and left out of the averages.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from deepxray.labels import CHEST_FINDINGS, NO_FINDING
from deepxray.training.cache import STAMP_KEY, load_or_prepare
from evaluation.bootstrap import DEFAULT_RESAMPLES, bootstrap_ci

NOTICE = "synthetic phantoms, research use only, not clinical accuracy"
AUROC_GOAL = 0.90
LOCALISATION_GOAL = 0.80
MODEL_NAME = "chest_findings"


# --- metrics ---------------------------------------------------------------------------------------------------------


def auroc(truth: ArrayLike, scores: ArrayLike) -> float | None:
    """Area under the ROC curve: the chance that a random positive scores above a random negative (ties count
    half; the Mann-Whitney statistic). None without both a positive and a negative."""
    truth = np.asarray(truth).astype(bool)
    scores = np.asarray(scores, dtype=float)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties (1-based).
    edges = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(scores)]])
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def f1_table(truth: ArrayLike, predicted: ArrayLike, labels: tuple[str, ...], averaged: tuple[str, ...]) -> dict:
    """Precision, recall, F1 and support per label, and the micro, macro, weighted and samples averages over
    the `averaged` labels (scikit-learn's definitions, an undefined ratio counting 0).

    Args:
        truth: (n, L) 0/1 true labels.
        predicted: (n, L) 0/1 predictions.
        labels: The L label names, in column order.
        averaged: The labels the averages are taken over.
    """
    truth = np.asarray(truth).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    rows = {}
    for j, label in enumerate(labels):
        tp = int((truth[:, j] & predicted[:, j]).sum())
        fp = int((~truth[:, j] & predicted[:, j]).sum())
        fn = int((truth[:, j] & ~predicted[:, j]).sum())
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        rows[label] = {"precision": precision, "recall": recall, "f1": _f1(precision, recall), "support": tp + fn}
    columns = [labels.index(label) for label in averaged]
    t, p = truth[:, columns], predicted[:, columns]
    tp, fp, fn = (t & p).sum(), (~t & p).sum(), (t & ~p).sum()
    micro_p, micro_r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    chosen = [rows[label] for label in averaged]
    support = np.array([row["support"] for row in chosen], dtype=float)

    def mean(key: str, weights: np.ndarray | None = None) -> float:
        values = np.array([row[key] for row in chosen])
        if weights is None:
            return float(values.mean())
        return _ratio(float((values * weights).sum()), float(weights.sum()))

    hits = (t & p).sum(axis=1)
    sample_p = np.where(p.sum(1) > 0, hits / np.maximum(p.sum(1), 1), 0.0)
    sample_r = np.where(t.sum(1) > 0, hits / np.maximum(t.sum(1), 1), 0.0)
    sample_f = np.where(p.sum(1) + t.sum(1) > 0, 2 * hits / np.maximum(p.sum(1) + t.sum(1), 1), 0.0)
    total = int(support.sum())
    averages = {
        "micro avg": {"precision": micro_p, "recall": micro_r, "f1": _f1(micro_p, micro_r), "support": total},
        "macro avg": {"precision": mean("precision"), "recall": mean("recall"), "f1": mean("f1"), "support": total},
        "weighted avg": {
            "precision": mean("precision", support),
            "recall": mean("recall", support),
            "f1": mean("f1", support),
            "support": total,
        },
        "samples avg": {
            "precision": float(sample_p.mean()),
            "recall": float(sample_r.mean()),
            "f1": float(sample_f.mean()),
            "support": total,
        },
    }
    return {"labels": rows, "averages": averages, "averaged_over": list(averaged)}


def inside_any(point: tuple[float, float], boxes: list) -> bool:
    """Whether (x, y) lies in one of the boxes [x0, y0, x1, y1] (x1, y1 excluded)."""
    x, y = point
    return any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in boxes)


# --- scoring films ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Films:
    """What rendering the evaluation films gives: views, the way back to each film, labels and regions."""

    seed: int
    distribution: str
    film_scale: float

    def film(self, index: int):
        from deepxray.imaging.model_inputs import NormalisedImage, chest_view
        from deepxray.phantoms.chest import render_chest_phantom

        phantom = render_chest_phantom(self.seed, index, self.distribution, film_scale=self.film_scale)
        view = chest_view(NormalisedImage.from_pixels(phantom.image))
        findings = phantom.extra["findings"]
        regions = {region["label"]: region["boxes"] for region in findings["regions"]}
        return view.pixels.astype(np.float16), view.transform, np.asarray(findings["labels"], np.int8), regions


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def render_films(seed: int, n: int, distribution: str, film_scale: float, workers: int | None, progress: bool):
    """The `n` films of the set `seed`, rendered on `workers` processes, in index order."""
    from tqdm import tqdm

    films = _Films(seed, distribution, film_scale)
    workers = workers or os.cpu_count() or 1
    out = []
    with tqdm(total=n, desc="rendering chest films", unit="img", disable=not progress) as bar:
        if workers == 1:
            _init_worker()
            for item in map(films.film, range(n)):
                out.append(item)
                bar.update(1)
        else:
            with multiprocessing.get_context("forkserver").Pool(workers, initializer=_init_worker) as pool:
                for item in pool.imap(films.film, range(n), chunksize=4):
                    out.append(item)
                    bar.update(1)
    return out


def save_films(films: list, path: Path, stamp: str) -> None:
    """Rendered films to an .npz (views, the way back to each film, labels, regions), for `--cache`."""
    transforms = np.array([[getattr(t, f) for f in _TRANSFORM_FIELDS] for _, t, _, _ in films], dtype=np.float64)
    with open(path, "wb") as file:  # a file, not a name: np.savez would append ".npz" to another suffix
        np.savez(
            file,
            views=np.stack([view for view, _, _, _ in films]),
            transforms=transforms,
            labels=np.stack([labels for _, _, labels, _ in films]),
            regions=np.array(json.dumps([regions for _, _, _, regions in films])),
            **{STAMP_KEY: np.array(stamp)},
        )


def load_films(path: Path) -> list:
    """The films `save_films` wrote to `path`."""
    from deepxray.imaging.views import ViewTransform

    with np.load(path) as data:
        regions = json.loads(str(data["regions"]))
        out = []
        for view, t, labels, region in zip(data["views"], data["transforms"], data["labels"], regions, strict=True):
            fields = dict(zip(_TRANSFORM_FIELDS, t.tolist(), strict=True))
            for name in ("offset_x", "offset_y", "image_width", "image_height", "view_size"):
                fields[name] = int(fields[name])
            out.append((view, ViewTransform(**fields), labels, region))
        return out


_TRANSFORM_FIELDS = ("scale_x", "scale_y", "offset_x", "offset_y", "image_width", "image_height", "view_size")


def model_directory(models: Path) -> Path:
    """The chest-findings artifact: `models/chest_findings`, or `models` itself when it is the artifact."""
    from deepxray.models.artifacts import read_card

    models = Path(models)
    for candidate in (models / MODEL_NAME, models):
        if (candidate / "model_card.json").is_file() and read_card(candidate).name == MODEL_NAME:
            return candidate
    raise ValueError(f"{models} holds no {MODEL_NAME} model (a folder with model.keras and model_card.json)")


def evaluate(
    models: Path,
    n: int,
    seed: int,
    distribution: str = "clinical",
    film_scale: float = 1.0,
    resamples: int = DEFAULT_RESAMPLES,
    workers: int | None = None,
    progress: bool = True,
    cache: Path | None = None,
    sheet: Path | None = None,
) -> dict:
    """Render (or read from `cache`, written when missing), score and measure; returns the report's content (see
    `write_report`). With `sheet`, also writes a PNG of one true positive per drawn label (`heatmap_sheet`)."""
    from deepxray.models.artifacts import read_card
    from deepxray.models.chest_findings import chest_findings_batch, heatmap_peak
    from deepxray.models.runtime import LoadedModel, configure_threads
    from deepxray.phantoms.chest import DRAWN, NOT_DRAWN

    directory = model_directory(models)
    card = read_card(directory)
    thresholds = np.array([card.thresholds[label] for label in CHEST_FINDINGS]) if card.thresholds else None
    if thresholds is None:
        raise ValueError(f"the card in {directory} has no thresholds")
    start = time.perf_counter()
    settings = json.dumps({"n": n, "seed": seed, "distribution": distribution, "film_scale": film_scale})
    films = load_or_prepare(
        cache,
        settings,
        lambda: render_films(seed, n, distribution, film_scale, workers, progress),
        load_films,
        save_films,
        what="chest films",
    )
    render_seconds = time.perf_counter() - start

    configure_threads(workers or os.cpu_count() or 1)
    model = LoadedModel(directory)
    start = time.perf_counter()
    views = np.stack([film[0] for film in films]).astype(np.float32)
    probabilities, heatmaps = [], []
    for i in range(0, n, 64):
        p, h = chest_findings_batch(model, views[i : i + 64])
        probabilities.append(p)
        heatmaps.append(h)
    probabilities, heatmaps = np.concatenate(probabilities), np.concatenate(heatmaps)
    predict_seconds = time.perf_counter() - start
    truth = np.stack([film[2] for film in films]).astype(bool)
    predicted = probabilities >= thresholds

    per_label = {}
    localisation = {"hits": 0, "true_positives": 0}
    for j, label in enumerate(CHEST_FINDINGS):
        value = auroc(truth[:, j], probabilities[:, j])
        low, high = bootstrap_ci(auroc, truth[:, j], probabilities[:, j], groups=None, n_resamples=resamples, seed=seed)
        row = {
            "drawn": label in DRAWN,
            "positives": int(truth[:, j].sum()),
            "prevalence": float(truth[:, j].mean()),
            "auroc": value,
            "auroc_ci": [low, high],
            "threshold": float(thresholds[j]),
            "meets_goal": None if label in NOT_DRAWN or value is None else bool(value >= AUROC_GOAL),
        }
        if label != NO_FINDING and label not in NOT_DRAWN:
            hits = tps = 0
            for i in np.flatnonzero(truth[:, j] & predicted[:, j]):
                _, transform, _, regions = films[i]
                peak = transform.to_image(np.array(heatmap_peak(heatmaps[i, j], views.shape[1])))
                hits += inside_any((float(peak[0]), float(peak[1])), regions.get(label, []))
                tps += 1
            row["localisation"] = {"true_positives": tps, "peak_in_region": hits, "share": hits / tps if tps else None}
            localisation["hits"] += hits
            localisation["true_positives"] += tps
        per_label[label] = row
    tps = localisation["true_positives"]
    localisation["share"] = localisation["hits"] / tps if tps else None
    localisation["meets_goal"] = tps > 0 and localisation["hits"] / tps >= LOCALISATION_GOAL
    drawn = [label for label in CHEST_FINDINGS if label in DRAWN]
    table = f1_table(truth, predicted, CHEST_FINDINGS, tuple(drawn))
    aurocs = [per_label[label]["auroc"] for label in drawn if per_label[label]["auroc"] is not None]
    examples = {}
    for j, label in enumerate(CHEST_FINDINGS):
        found = np.flatnonzero(truth[:, j] & predicted[:, j])
        if label != NO_FINDING and label in DRAWN and len(found):
            examples[label] = int(found[0])
    if sheet is not None:
        heatmap_sheet(films, heatmaps, examples, Path(sheet))
    return {
        "notice": NOTICE,
        "model": card.tag,
        "model_dir": str(directory),
        "films": n,
        "seed": seed,
        "distribution": distribution,
        "film_size": [int(round(2560 * film_scale)), int(round(2048 * film_scale))],
        "training_seed": card.seed,
        "not_drawn": card.not_drawn or {},
        "per_label": per_label,
        "mean_auroc_drawn": float(np.mean(aurocs)) if aurocs else None,
        "all_drawn_meet_auroc_goal": all(per_label[label]["meets_goal"] for label in drawn),
        "f1_table": table,
        "localisation": localisation,
        "heatmap_examples": examples,
        "seconds": {"render": round(render_seconds, 1), "predict": round(predict_seconds, 1)},
        "goals": {"auroc": AUROC_GOAL, "localisation": LOCALISATION_GOAL},
    }


def heatmap_sheet(films: list, heatmaps: np.ndarray, examples: dict[str, int], path: Path) -> Path:
    """A PNG with one tile per label in `examples` (label -> film index): the film's view with the label's
    heatmap over it (its own range, blue to red), the finding's recorded boxes in white and the peak as a ring."""
    import cv2

    from deepxray.models.chest_findings import heatmap_peak

    tiles = []
    for label, i in examples.items():
        view, transform, _, regions = films[i]
        size = view.shape[0]
        grey = cv2.cvtColor(np.clip(np.asarray(view, np.float32) * 255, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        heat = cv2.resize(heatmaps[i, CHEST_FINDINGS.index(label)].astype(np.float32), (size, size))
        heat = np.uint8(255 * (heat - heat.min()) / max(float(np.ptp(heat)), 1e-6))
        tile = cv2.addWeighted(grey, 0.6, cv2.applyColorMap(heat, cv2.COLORMAP_JET), 0.4, 0)
        for x0, y0, x1, y1 in regions.get(label, []):
            (a, b), (c, d) = transform.to_view(np.array([[x0, y0], [x1, y1]], dtype=np.float64))
            cv2.rectangle(tile, (int(a), int(b)), (int(c), int(d)), (255, 255, 255), 1)
        x, y = heatmap_peak(heatmaps[i, CHEST_FINDINGS.index(label)], size)
        cv2.circle(tile, (int(round(x)), int(round(y))), 4, (0, 0, 0), 2)
        cv2.rectangle(tile, (0, 0), (size, 14), (0, 0, 0), -1)
        cv2.putText(tile, f"{label} (film {i})", (3, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1)
        tiles.append(tile)
    columns = 4
    blank = np.zeros_like(tiles[0]) if tiles else np.zeros((64, 64, 3), np.uint8)
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.hstack(tiles[k : k + columns]) for k in range(0, len(tiles), columns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows) if rows else blank, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path


# --- the report ------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def auroc_lines(result: dict) -> list[str]:
    lines = [
        "| label | positives | prevalence | AUROC | 95 % interval | threshold | goal ≥ 0.90 |",
        "| :-- | --: | --: | --: | :-- | --: | :-- |",
    ]
    for label, row in result["per_label"].items():
        if not row["drawn"]:
            lines.append(f"| {label} | {row['positives']} | — | n/a | n/a | {row['threshold']:.3f} | not drawn |")
            continue
        low, high = row["auroc_ci"]
        interval = "n/a" if low is None else f"[{low:.3f}, {high:.3f}]"
        goal = "n/a" if row["meets_goal"] is None else "met" if row["meets_goal"] else "not met"
        lines.append(f"| {label} | {row['positives']} | {100 * row['prevalence']:.1f} % | {_fmt(row['auroc'])} | "
                     f"{interval} | {row['threshold']:.3f} | {goal} |")  # fmt: skip
    return lines


def f1_lines(result: dict) -> list[str]:
    table = result["f1_table"]
    lines = ["| | precision | recall | f1-score | support |", "| :-- | --: | --: | --: | --: |"]
    for label, row in table["labels"].items():
        note = " (not drawn)" if not result["per_label"][label]["drawn"] else ""
        lines.append(
            f"| {label}{note} | {row['precision']:.2f} | {row['recall']:.2f} | {row['f1']:.2f} | {row['support']} |"
        )
    for name, row in table["averages"].items():
        lines.append(f"| {name} | {row['precision']:.2f} | {row['recall']:.2f} | {row['f1']:.2f} | {row['support']} |")
    return lines


def localisation_lines(result: dict) -> list[str]:
    lines = ["| label | true positives | peak in region | share |", "| :-- | --: | --: | --: |"]
    for label, row in result["per_label"].items():
        if "localisation" in row:
            loc = row["localisation"]
            lines.append(f"| {label} | {loc['true_positives']} | {loc['peak_in_region']} | {_fmt(loc['share'], 2)} |")
    total = result["localisation"]
    lines.append(f"| **all findings** | {total['true_positives']} | {total['hits']} | {_fmt(total['share'], 2)} |")
    return lines


def write_report(result: dict, out_dir: Path, command: str) -> dict[str, Path]:
    """`report.md` and `report.json` in `out_dir`, the command that made them at the top."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loc = result["localisation"]
    lines = [
        "# Chest findings: evaluation on never-seen phantoms",
        "",
        f"**{NOTICE[0].upper()}{NOTICE[1:]}.**",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Model `{result['model']}` (trained on the phantom set of seed {result['training_seed']}); "
        f"{result['films']} films of seed {result['seed']} at the {result['distribution']} (registry) prevalence, "
        f"{result['film_size'][1]}x{result['film_size'][0]} pixels, scored in-process through the serving "
        f"preprocessing. Rendering took {result['seconds']['render']} s, scoring {result['seconds']['predict']} s "
        "(2 shared CPU cores).",
        "",
        "## AUROC per label",
        "",
        "95 % intervals: percentile bootstrap over films. Goal: AUROC ≥ 0.90 for every label the generator draws.",
        "",
        *auroc_lines(result),
        "",
        f"Mean AUROC over the drawn labels: {_fmt(result['mean_auroc_drawn'])}; every drawn label meets the goal: "
        f"{'yes' if result['all_drawn_meet_auroc_goal'] else 'no'}.",
        "",
        "## Precision, recall, F1 at the card's thresholds",
        "",
        "Averages over the drawn labels (scikit-learn's micro, macro, weighted and samples averages).",
        "",
        *f1_lines(result),
        "",
        "## Localisation",
        "",
        "A true positive is localised when its heatmap's peak (the class activation map scaled to the view, mapped "
        "back to the film) falls inside one of the finding's recorded boxes. Goal: ≥ 80 % of true positives.",
        "",
        *localisation_lines(result),
        "",
        f"Share of true positives localised: {_fmt(loc['share'], 2)} ({loc['hits']} of {loc['true_positives']}); goal "
        f"{'met' if loc['meets_goal'] else 'not met'}.",
        "",
    ]
    if result.get("heatmap_examples"):
        lines += [
            "## Heatmaps",
            "",
            "The first true positive of each drawn label: its heatmap over the view (blue to red, each in its own "
            "range), the finding's recorded boxes in white, the peak ringed in black.",
            "",
            "![one true positive per label, with its heatmap](heatmaps.png)",
            "",
        ]
    if result["not_drawn"]:
        lines += ["## Labels not drawn", ""]
        lines += [f"- **{label}**: {reason}." for label, reason in result["not_drawn"].items()] + [""]
    markdown = out_dir / "report.md"
    markdown.write_text("\n".join(lines), encoding="utf-8")
    document = out_dir / "report.json"
    document.write_text(json.dumps({"command": command, **result}, indent=2) + "\n", encoding="utf-8")
    return {"markdown": markdown, "json": document}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.chest", description=f"Evaluate the chest-findings model ({NOTICE})."
    )
    parser.add_argument(
        "--models", type=Path, default=None, help="model folder holding chest_findings/ (default: shipped)"
    )
    parser.add_argument("--out", type=Path, required=True, help="report folder (report.md, report.json)")
    parser.add_argument("--n", type=int, default=1000, help="films to render (default 1000)")
    parser.add_argument("--seed", type=int, default=1000, help="phantom set; use one the model was not trained on")
    parser.add_argument("--distribution", choices=("clinical", "balanced"), default="clinical",
                        help="findings prevalence (default clinical: registry-like)")  # fmt: skip
    parser.add_argument("--film-scale", type=float, default=1.0, help="film size, of 2048x2560 (default 1.0)")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: one per core)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="an .npz of the rendered films: read when it holds these films, else written")  # fmt: skip
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error("--n must be at least 2")
    from deepxray.models.artifacts import shipped_models_dir

    models = args.models or shipped_models_dir()
    try:
        if args.seed == read_training_seed(models):
            raise ValueError(f"--seed {args.seed} is the set the model was trained on: choose another")
        result = evaluate(
            models, args.n, args.seed, args.distribution, args.film_scale, args.resamples, args.workers,
            cache=args.cache, sheet=args.out / "heatmaps.png",
        )  # fmt: skip
    except ValueError as error:
        print(f"evaluation.chest: error: {error}", file=sys.stderr)
        return 2
    command = "python -m evaluation.chest " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    files = write_report(result, args.out, command)
    print("\n".join(auroc_lines(result) + [""] + f1_lines(result) + [""] + localisation_lines(result)))
    print(f"wrote {files['markdown']} ({NOTICE})")
    return 0


def read_training_seed(models: Path) -> int:
    from deepxray.models.artifacts import read_card

    return read_card(model_directory(models)).seed


if __name__ == "__main__":
    sys.exit(main())
