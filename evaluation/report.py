"""The evaluation report: `report.md` in the source study's layout, `report.json`, and confusion-matrix heatmaps.

The Markdown follows the study's slides: "Global accuracy: x (exact) / y (soft)", a table with one row per
metric and flavour (class accuracy, precision, recall, F1; exact and soft) and one column per Ratingen class,
then the four kappas with 95 % intervals. Undefined values read "n/a". With a second model set, every metric is
also shown side by side (A, B, B − A and the interval of the difference).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepxray.labels import JOINT_NAMES, RATINGEN_CLASSES
from evaluation.results import CLASS_METRICS, FLAVOURS, NOTICE

METRIC_LABELS = {"accuracy": "Class accuracy", "precision": "Precision", "recall": "Recall", "f1": "F1"}
KAPPA_LABELS = {
    "exact": "Cohen's kappa (exact)",
    "soft": "Cohen's kappa (soft)",
    "quadratic_exact": "Cohen's quadratic kappa (exact)",
    "quadratic_soft": "Cohen's quadratic kappa (soft)",
}
BODY_PART_LABELS = {
    "accuracy": "Body-part accuracy",
    "left_hands_refused_share": "Left hands refused (share)",
    "non_hands_accepted_share": "Non-hands accepted for scoring (share)",
    "right_hands_accepted_share": "Right hands accepted (share)",
}
SCORE_PNG = "confusion_scores{suffix}.png"
BODY_PART_PNG = "confusion_body_part{suffix}.png"


# --- formatting ---------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(low: float | None, high: float | None, digits: int = 3) -> str:
    return "n/a" if low is None or high is None else f"[{low:.{digits}f}, {high:.{digits}f}]"


def _share(count: int, total: int) -> str:
    return f"{count} of {total}" + (f" ({100 * count / total:.1f} %)" if total else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align_first_left: bool = True) -> list[str]:
    rule = [":--" if align_first_left and i == 0 else "--:" for i in range(len(header))]
    return ["| " + " | ".join(cells) + " |" for cells in (header, rule, *rows)] + [""]


def _heading(level: int, text: str) -> list[str]:
    return ["#" * level + " " + text, ""]


# --- one model set ------------------------------------------------------------------------------------------------


def _score_sections(summary: dict, level: int, suffix: str) -> list[str]:
    scores = summary["scores"]
    accuracy = scores["accuracy"]
    level_pct = f"{100 * summary['bootstrap']['level']:g} %"
    lines = _heading(level, "Ratingen scores")
    lines += [
        f"{scores['n_joints']} joints scored on {scores['n_images']} images; "
        f"{scores['n_joints_unscored']} labelled joints got no prediction (image refused or joint not found) "
        "and are left out.",
        "",
        f"Global accuracy: {_fmt(accuracy['exact']['value'])} (exact) / {_fmt(accuracy['soft']['value'])} (soft)",
        "",
        f"{level_pct} CI: {_ci(accuracy['exact']['low'], accuracy['exact']['high'])} (exact) / "
        f"{_ci(accuracy['soft']['low'], accuracy['soft']['high'])} (soft)",
        "",
    ]
    per_class = scores["per_class"]
    rows = [
        [f"{METRIC_LABELS[metric]} ({flavour})"] + [_fmt(per_class[flavour][str(c)][metric]) for c in RATINGEN_CLASSES]
        for metric in CLASS_METRICS
        for flavour in FLAVOURS
    ]
    rows.append(["Support (true joints)"] + [str(per_class["exact"][str(c)]["support"]) for c in RATINGEN_CLASSES])
    lines += _table(["Metric", *map(str, RATINGEN_CLASSES)], rows)
    lines += [
        "Exact: a prediction counts only when it equals the true score. Soft: a prediction within ±1 class counts. "
        "Class accuracy is one-vs-rest ((TP + TN) / N; soft: a joint is an error for class c only if its truth or "
        "prediction is c and the two lie more than one class apart). n/a: undefined because the class does not "
        "occur (recall: no true joints of the class; precision: no predictions of it).",
        "",
    ]
    lines += _heading(level + 1, "Cohen's kappa")
    lines += _table(
        ["Metric", "Value", f"{level_pct} CI"],
        [[KAPPA_LABELS[name], _fmt(k["value"], 3), _ci(k["low"], k["high"])] for name, k in scores["kappa"].items()],
    )
    lines += [
        "Soft kappas count agreement within ±1 class as full agreement (disagreement weight 0 if |i − j| ≤ 1, else "
        "1; quadratic: max(|i − j| − 1, 0)²). Intervals: percentile bootstrap over whole images "
        f"({summary['bootstrap']['n_resamples']} resamples, seed {summary['bootstrap']['seed']}).",
        "",
    ]
    lines += _heading(level + 1, "Quadratic kappa (exact) per joint")
    lines += _table(
        ["Joint", "Joints", "Kappa", f"{level_pct} CI"],
        [
            [joint, str(k["n"]), _fmt(k["value"], 3), _ci(k["low"], k["high"])]
            for joint, k in scores["per_joint_kappa"].items()
        ],
    )
    lines += _heading(level + 1, "Confusion matrix (exact scores)")
    lines += [f"![Confusion matrix of Ratingen scores]({SCORE_PNG.format(suffix=suffix)})", ""]
    lines += _table(
        ["True \\ predicted", *map(str, RATINGEN_CLASSES)],
        [[str(c), *map(str, row)] for c, row in zip(RATINGEN_CLASSES, scores["confusion"], strict=True)],
    )
    return lines


def _hand_lines(summary: dict) -> list[str]:
    """Films of both hands refused, and every labelled hand: scored, why not, laterality."""
    body, hands = summary["body_part"], summary["hands"]
    lines = []
    if body["both_hands"]:
        lines.append(f"- Films of both hands refused (no hand scored): {_share(body['both_hands_refused'], body['both_hands'])}")  # fmt: skip
    reasons = ", ".join(f"{code} {count}" for code, count in hands["not_scored"].items())
    lines.append(
        f"- Labelled hands scored: {_share(hands['scored'], hands['n_hands'])} on {hands['n_images']} images "
        f"({hands['n_images_two_hands']} with two hands; each paired with the nearest answered hand)"
        + (f"; not scored: {reasons}" if reasons else "")
    )
    if hands["laterality_known"]:
        lines.append(f"- Laterality wrong: {_share(hands['laterality_wrong'], hands['laterality_known'])} scored hands")
    return lines


def _body_part_section(summary: dict, level: int, suffix: str) -> list[str]:
    body = summary["body_part"]
    level_pct = f"{100 * summary['bootstrap']['level']:g} %"
    accuracy, refused = body["accuracy"], body["left_hands_refused_share"]
    lines = _heading(level, "Body part")
    lines += [
        f"- Accuracy: {_fmt(accuracy['value'])} on {body['n']} images, {level_pct} CI "
        f"{_ci(accuracy['low'], accuracy['high'])}",
        f"- Left hands refused: {_share(body['left_hands_refused'], body['left_hands'])}, {level_pct} CI "
        f"{_ci(refused['low'], refused['high'])} (the source study lost about 15 %)",
        f"- Non-hands accepted for scoring: {_share(body['non_hands_accepted'], body['non_hands'])}",
        f"- Right hands accepted (mirrored and scored): {_share(body['right_hands_accepted'], body['right_hands'])}",
        *_hand_lines(summary),
        f"- No answer from the service: {body['no_answer']}",
        "",
        f"![Confusion matrix of body parts]({BODY_PART_PNG.format(suffix=suffix)})",
        "",
    ]
    lines += _table(
        ["True \\ predicted", *body["labels"]],
        [[label, *map(str, row)] for label, row in zip(body["labels"], body["confusion"], strict=True)],
    )
    return lines


def _localisation_section(summary: dict, level: int) -> list[str]:
    localisation = summary["localisation"]
    level_pct = f"{100 * summary['bootstrap']['level']:g} %"
    lines = _heading(level, "Joint localisation")
    if not localisation["n_joints"]:
        return lines + ["No labelled joint centres.", ""]
    lines += [
        f"{localisation['n_joints']} labelled joints on {localisation['n_images']} images. A joint is found when "
        "its predicted centre lies within the tolerance, a fraction of the image's median distance between "
        "neighbouring MCP joints (mcp2–mcp3, mcp3–mcp4, mcp4–mcp5); joints without a prediction are misses.",
        "",
    ]
    lines += _table(
        ["Tolerance", "Joints found", f"{level_pct} CI"],
        [
            [f"{fraction} × MCP spacing", _fmt(rate["value"], 3), _ci(rate["low"], rate["high"])]
            for fraction, rate in localisation["rates"].items()
        ],
    )
    return lines


def _time_section(summary: dict, level: int) -> list[str]:
    time = summary["time"]
    lines = _heading(level, "Time per image")
    if not time["n"]:
        return lines + ["Not measured.", ""]
    return lines + [
        f"Median {time['median_s']:.2f} s, 95th percentile {time['p95_s']:.2f} s, mean {time['mean_s']:.2f} s "
        f"over {time['n']} images: wall time seen by the evaluating client, which depends on the machine, the "
        "number of replicas and the load.",
        "",
    ]


def _model_sections(summary: dict, level: int, suffix: str) -> list[str]:
    return (
        _score_sections(summary, level, suffix)
        + _body_part_section(summary, level, suffix)
        + _localisation_section(summary, level)
        + _time_section(summary, level)
    )


# --- comparison ---------------------------------------------------------------------------------------------------


def _difference_label(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "accuracy":
        return f"Global accuracy ({parts[1]})"
    if parts[0] == "kappa":
        return KAPPA_LABELS[parts[1]]
    if parts[0] == "per_class":
        _, flavour, cls, metric = parts
        return f"{METRIC_LABELS[metric]} ({flavour}), class {cls}"
    if parts[0] == "per_joint_kappa":
        return f"Quadratic kappa (exact), {parts[1]}"
    if parts[0] == "body_part":
        return BODY_PART_LABELS[parts[1]]
    if parts[0] == "localisation":
        return f"Joints found within {'.'.join(parts[1:])} × MCP spacing"
    if parts[0] == "time":
        return {"median_s": "Median time per image (s)", "p95_s": "95th percentile time per image (s)"}[parts[1]]
    return key


def _comparison_rows(differences: dict, keys: Sequence[str], digits: int) -> list[list[str]]:
    rows = []
    for key in keys:
        d = differences[key]
        flag = {True: "yes", False: "no", None: "n/a"}[d["excludes_zero"]]
        difference = "n/a" if d["difference"] is None else f"{d['difference']:+.{digits}f}"
        rows.append(
            [_difference_label(key), _fmt(d["a"], digits), _fmt(d["b"], digits), difference]
            + [_ci(d["low"], d["high"], digits), flag]
        )
    return rows


def _comparison_sections(compare: dict, name: str, compare_name: str) -> list[str]:
    differences = compare["differences"]
    paired = compare["paired"]
    level_pct = f"{100 * paired['level']:g} %"
    header = ["Metric", f"A: {name}", f"B: {compare_name}", "B − A", f"{level_pct} CI of B − A", "CI excludes 0"]
    groups = {
        "Scores: accuracy and kappa": [k for k in differences if k.split(".")[0] in ("accuracy", "kappa")],
        "Scores per class": [
            f"per_class.{flavour}.{c}.{metric}"
            for metric in CLASS_METRICS
            for flavour in FLAVOURS
            for c in RATINGEN_CLASSES
        ],
        "Quadratic kappa per joint": [f"per_joint_kappa.{joint}" for joint in JOINT_NAMES],
        "Body part": [k for k in differences if k.startswith("body_part.")],
        "Joint localisation": [k for k in differences if k.startswith("localisation.")],
        "Time per image": [k for k in differences if k.startswith("time.")],
    }
    lines = _heading(2, f"Comparison: B ({compare_name}) against A ({name})")
    lines += [
        f"Paired on the same {paired['n_images']} images; score metrics on the {paired['n_joints']} joints both "
        f"model sets scored, so A's values here can differ slightly from its own section. Intervals: percentile "
        f"bootstrap of B − A over whole images ({paired['n_resamples']} resamples), the same images for A and B. "
        '"CI excludes 0": the difference is unlikely to be chance at this level; many metrics are compared, so '
        "expect some by chance. Timings have no interval (they depend on the machine's load).",
        "",
    ]
    for title, keys in groups.items():
        digits = 3 if title != "Scores per class" else 2
        lines += _heading(3, title) + _table(header, _comparison_rows(differences, keys, digits))
    return lines


# --- figures ------------------------------------------------------------------------------------------------------


def write_heatmap(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str, axis_name: str, unit: str
) -> Path:
    """A confusion matrix as a PNG heatmap with the count in every cell (rows true, columns predicted)."""
    # Figure + Agg canvas instead of pyplot: no global state, no display needed, safe in servers and threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=int)
    size = 3.0 + 0.75 * len(labels)
    figure = Figure(figsize=(size + 1.2, size), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues", vmin=0, vmax=max(int(counts.max(initial=0)), 1))
    slanted = max(map(len, labels)) > 3  # body-part names would overlap if written straight
    axes.set_xticks(range(len(labels)), labels, rotation=30 if slanted else 0, ha="right" if slanted else "center")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel(f"Predicted {axis_name}")
    axes.set_ylabel(f"True {axis_name}")
    threshold = counts.max(initial=0) / 2
    for (row, column), count in np.ndenumerate(counts):
        colour = "white" if count > threshold and count > 0 else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=9)
    figure.colorbar(image, ax=axes, label=unit, shrink=0.8)
    figure.suptitle(title)
    axes.set_title(NOTICE, fontsize=7)
    figure.savefig(path)
    return path


# --- the report ---------------------------------------------------------------------------------------------------


def write_report(
    summary: dict,
    out_dir: str | Path,
    title: str,
    compare: dict | None = None,
    compare_name: str = "B",
    name: str = "A",
) -> dict[str, Path]:
    """Write `report.md`, `report.json` and the confusion-matrix PNGs into `out_dir`.

    Args:
        summary: `summarise(results)` of the model set under evaluation (A).
        out_dir: Output folder; created if missing, files in it overwritten.
        title: Heading of the report (e.g. the data set and model versions).
        compare: `compare_results(results_a, results_b)` for a second model set (B), or `None`.
        compare_name: Name of model set B in the report.
        name: Name of model set A in the report.

    Returns:
        File kind -> path: markdown, json, score_png, body_part_png, and with `compare` also
        score_png_compare and body_part_png_compare.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sets = [(summary, name, "")] + ([(compare["summary"], compare_name, "_b")] if compare else [])
    written = {}
    for model_summary, model_name, suffix in sets:
        key_suffix = "_compare" if suffix else ""
        written[f"score_png{key_suffix}"] = write_heatmap(
            model_summary["scores"]["confusion"],
            [str(c) for c in RATINGEN_CLASSES],
            out_dir / SCORE_PNG.format(suffix=suffix),
            f"Ratingen scores, exact — {model_name} ({model_summary['scores']['n_joints']} joints)",
            "Ratingen score",
            "joints",
        )
        written[f"body_part_png{key_suffix}"] = write_heatmap(
            model_summary["body_part"]["confusion"],
            model_summary["body_part"]["labels"],
            out_dir / BODY_PART_PNG.format(suffix=suffix),
            f"Body part — {model_name} ({model_summary['body_part']['n']} images)",
            "body part",
            "images",
        )

    lines = _heading(1, title)
    lines += [f"**{NOTICE[0].upper()}{NOTICE[1:]}.**", ""]
    lines += [f"{summary['n_images']} labelled images.", ""]
    if compare is None:
        lines += _model_sections(summary, 2, "")
    else:
        lines += [f"A = {name}, B = {compare_name}.", ""]
        lines += _comparison_sections(compare, name, compare_name)
        for model_summary, model_name, suffix in sets:
            lines += _heading(2, f"Model set {'B' if suffix else 'A'}: {model_name}")
            lines += _model_sections(model_summary, 3, suffix)
    markdown = out_dir / "report.md"
    markdown.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    written["markdown"] = markdown

    document = {
        "title": title,
        "notice": NOTICE,
        "name": name,
        "summary": summary,
        "compare_name": compare_name if compare else None,
        "compare": compare,
    }
    report_json = out_dir / "report.json"
    report_json.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    written["json"] = report_json
    return written
