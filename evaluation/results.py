"""What a model set did on each labelled image, and the summary of all metrics over a data set.

`summarise` turns a list of `ImageResult`s into one JSON-serialisable dict with every figure of the report;
`compare_results` adds a second model set evaluated on the same images, with paired bootstrap intervals of the
differences. Intervals resample whole images (see `evaluation.bootstrap`). Scores and joint positions count per
hand (`HandResult`: each labelled hand of an image, two for a film of both hands); the body part per image.

Numbers that come with an interval are objects `{"value": v, "low": l, "high": h}`; anything undefined is `None`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deepxray.labels import HAND_PARTS, JOINT_NAMES, RATINGEN_CLASSES
from evaluation.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, ImageResampler, percentile_interval
from evaluation.metrics import (
    LOCALISATION_FRACTIONS,
    SOFT_TOLERANCE,
    body_part_indicators,
    body_part_rates,
    body_part_summary,
    confusion_accuracy,
    confusion_kappa,
    confusion_rates,
    localisation_hits,
)

NOTICE = "research use only; figures on synthetic phantoms are not clinical accuracy"
FLAVOURS: dict[str, int] = {"exact": 0, "soft": SOFT_TOLERANCE}
CLASS_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1")
# Kappa name -> (weights, tolerance): the four rows of the source study's kappa table.
KAPPAS: dict[str, tuple[str | None, int]] = {
    "exact": (None, 0),
    "soft": (None, SOFT_TOLERANCE),
    "quadratic_exact": ("quadratic", 0),
    "quadratic_soft": ("quadratic", SOFT_TOLERANCE),
}
BODY_PART_SHARES: tuple[str, ...] = (
    "accuracy",
    "left_hands_refused_share",
    "non_hands_accepted_share",
    "right_hands_accepted_share",
)

Point = tuple[float, float]
Flat = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # metric key -> point value; metric key -> per resample


@dataclass
class HandResult:
    """One labelled hand of an image and the answered hand paired with it (`evaluation.hands`).

    Attributes:
        laterality: Labelled laterality, "L" or "R", or `None` when not known.
        true_scores, true_centers: The hand's labels, as in `ImageResult`.
        pred_laterality: Laterality of the answered hand paired with it; `None` when it was not scored.
        pred_scores, pred_probabilities, pred_centers: That hand's answer, as in `ImageResult`; `None` when the
            hand was not scored.
        not_scored: Why the hand was not scored, when known: the answer's error code (the film's, or that of the
            refused hand lying where this one is), or `evaluation.hands.NOT_FOUND`.
    """

    laterality: str | None = None
    true_scores: dict[str, int] | None = None
    true_centers: dict[str, Point] | None = None
    pred_laterality: str | None = None
    pred_scores: dict[str, int] | None = None
    pred_probabilities: dict[str, list[float]] | None = None
    pred_centers: dict[str, Point] | None = None
    not_scored: str | None = None

    @property
    def labels(self) -> tuple:
        return self.laterality, self.true_scores, self.true_centers


@dataclass
class ImageResult:
    """One image: its labels and what the model set answered.

    Attributes:
        image_id: Name of the image in reports (e.g. its path relative to the label file).
        true_body_part: Labelled body part, one of `BODY_PARTS`.
        pred_body_part: Body part the model predicted; `None` when the service gave no answer.
        body_part_probability: The model's probability of `pred_body_part`.
        accepted: Whether the image was sent on to scoring.
        true_scores: Joint -> labelled Ratingen score, or `None` when the image has no scores.
        pred_scores: Joint -> predicted score, or `None` when the image was not scored.
        pred_probabilities: Joint -> probabilities of classes 0..5, or `None`.
        true_centers: Joint -> labelled (x, y) centre in pixels, or `None`.
        pred_centers: Joint -> predicted (x, y) centre in pixels, or `None`.
        seconds: Wall time to answer this image, or `None` if not measured.
        hands: Every labelled hand with its answer; what the metrics count. `None`: the image's one hand, made
            from the fields above when it is a hand or has labels (a film of both hands gives `hands` instead).
    """

    image_id: str
    true_body_part: str
    pred_body_part: str | None
    body_part_probability: float | None
    accepted: bool
    true_scores: dict[str, int] | None = None
    pred_scores: dict[str, int] | None = None
    pred_probabilities: dict[str, list[float]] | None = None
    true_centers: dict[str, Point] | None = None
    pred_centers: dict[str, Point] | None = None
    seconds: float | None = None
    hands: list[HandResult] | None = None

    def __post_init__(self) -> None:
        if self.hands is None:
            hand = self.true_body_part in HAND_PARTS or self.true_scores or self.true_centers
            laterality = self.true_body_part[0].upper() if self.true_body_part in HAND_PARTS else None
            self.hands = [
                HandResult(laterality, self.true_scores, self.true_centers, None, self.pred_scores,
                           self.pred_probabilities, self.pred_centers)
            ] if hand else []  # fmt: skip


def _number(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _fraction_key(fraction: float) -> str:
    return f"{fraction:g}"


# --- flat metrics: key -> value, computed the same way for all data and for every resample ------------------------


def _score_metrics(per_joint: np.ndarray) -> dict[str, np.ndarray]:
    """Every score metric of per-joint confusion matrices of shape (..., joints, k, k)."""
    classes = RATINGEN_CLASSES
    total = per_joint.sum(-3)
    metrics = {f"accuracy.{flavour}": confusion_accuracy(total, classes, tol) for flavour, tol in FLAVOURS.items()}
    for flavour, tolerance in FLAVOURS.items():
        rates = confusion_rates(total, classes, tolerance)
        for name in CLASS_METRICS:
            for i, c in enumerate(classes):
                metrics[f"per_class.{flavour}.{c}.{name}"] = rates[name][..., i]
    for name, (weights, tolerance) in KAPPAS.items():
        metrics[f"kappa.{name}"] = confusion_kappa(total, classes, weights, tolerance)
    for j, joint in enumerate(JOINT_NAMES):
        metrics[f"per_joint_kappa.{joint}"] = confusion_kappa(per_joint[..., j, :, :], classes, "quadratic")
    return metrics


@dataclass
class _Evaluation:
    """Point values and bootstrap values of every flat metric for one model set."""

    point: dict[str, float]
    resampled: dict[str, np.ndarray]


def _align(results_a: Sequence[ImageResult], results_b: Sequence[ImageResult]) -> list[ImageResult]:
    """`results_b` in the order of `results_a`; both must cover the same images with the same labels."""
    by_id = {r.image_id: r for r in results_b}
    if len(by_id) != len(results_b) or len({r.image_id for r in results_a}) != len(results_a):
        raise ValueError("image ids must be unique within each model set's results")
    ids_a = {r.image_id for r in results_a}
    if ids_a != set(by_id):
        differ = sorted(ids_a ^ set(by_id))
        raise ValueError(f"the model sets were evaluated on different images, e.g. {differ[:5]}")
    aligned = [by_id[r.image_id] for r in results_a]
    for a, b in zip(results_a, aligned, strict=True):
        if (a.true_body_part, [h.labels for h in a.hands]) != (b.true_body_part, [h.labels for h in b.hands]):
            raise ValueError(f"image {a.image_id!r} has different labels in the two result sets")
    return aligned


def _scored_joints(model_sets: Sequence[Sequence[ImageResult]]) -> tuple[np.ndarray, np.ndarray, list, list[list]]:
    """Joints with a true score and a prediction from every model set: image, joint, truth, each set's prediction."""
    image_index, joint_index, truth = [], [], []
    predicted: list[list[int]] = [[] for _ in model_sets]
    for i, first in enumerate(model_sets[0]):
        for h, hand in enumerate(first.hands):
            for j, joint in enumerate(JOINT_NAMES):
                answers = [(results[i].hands[h].pred_scores or {}).get(joint) for results in model_sets]
                if hand.true_scores and joint in hand.true_scores and None not in answers:
                    image_index.append(i)
                    joint_index.append(j)
                    truth.append(hand.true_scores[joint])
                    for answer_list, answer in zip(predicted, answers, strict=True):
                        answer_list.append(answer)
    for prediction in predicted:
        _check_scores(truth, prediction)
    return np.asarray(image_index, np.intp), np.asarray(joint_index, np.intp), truth, predicted


def _score_flat(
    resampler: ImageResampler, image_index: np.ndarray, joint_index: np.ndarray, truth: list, prediction: list
) -> Flat:
    classes = np.asarray(RATINGEN_CLASSES)
    k, n_joints = len(classes), len(JOINT_NAMES)
    # One code per (joint, true class, predicted class): per-joint confusion matrices, summed per image.
    true_cell = np.searchsorted(classes, np.asarray(truth, dtype=int))
    pred_cell = np.searchsorted(classes, np.asarray(prediction, dtype=int))
    cells = (joint_index * k + true_cell) * k + pred_cell
    full, resampled = resampler.resample(resampler.count_per_image(image_index, cells, n_joints * k * k))
    return _score_metrics(full.reshape(n_joints, k, k)), _score_metrics(resampled.reshape(-1, n_joints, k, k))


def _body_part_flat(resampler: ImageResampler, results: Sequence[ImageResult]) -> Flat:
    indicators = body_part_indicators(
        [r.true_body_part for r in results], [r.pred_body_part for r in results], [r.accepted for r in results]
    )
    full, resampled = resampler.resample(resampler.sum_per_image(np.arange(len(results)), indicators))
    point, bootstrap = body_part_rates(full), body_part_rates(resampled)
    return (
        {f"body_part.{name}": point[name] for name in BODY_PART_SHARES},
        {f"body_part.{name}": bootstrap[name] for name in BODY_PART_SHARES},
    )


def _share_found(totals: np.ndarray) -> np.ndarray:
    """Columns 1.. divided by column 0 (joints found / labelled joints), NaN without labelled joints."""
    found, labelled = totals[..., 1:], totals[..., :1]
    return np.divide(found, labelled, out=np.full(found.shape, np.nan), where=labelled > 0)


def _hands(results: Sequence[ImageResult]) -> list[tuple[int, HandResult]]:
    """Every labelled hand with the index of its image."""
    return [(i, hand) for i, r in enumerate(results) for hand in r.hands]


def _localisation_flat(resampler: ImageResampler, results: Sequence[ImageResult]) -> Flat:
    hands = _hands(results)
    hand_index, hits = localisation_hits([h.pred_centers for _, h in hands], [h.true_centers for _, h in hands])
    image_index = np.asarray([i for i, _ in hands], dtype=np.intp)[hand_index]
    counts = np.column_stack([np.ones(len(hits)), hits])
    full, resampled = resampler.resample(resampler.sum_per_image(image_index, counts))
    point, bootstrap = _share_found(full), _share_found(resampled)
    keys = [f"localisation.{_fraction_key(fraction)}" for fraction in LOCALISATION_FRACTIONS]
    return (
        {key: point[f] for f, key in enumerate(keys)},
        {key: bootstrap[:, f] for f, key in enumerate(keys)},
    )


def _evaluate(model_sets: Sequence[Sequence[ImageResult]], n_resamples: int, seed: int) -> list[_Evaluation]:
    """Flat metrics of one or more model sets on the same images, joints and bootstrap draws.

    Score metrics use the joints that have a true score and a prediction from every model set, so that paired
    differences compare like with like.
    """
    resampler = ImageResampler(len(model_sets[0]), n_resamples, seed)
    image_index, joint_index, truth, predicted = _scored_joints(model_sets)
    evaluations = []
    for results, prediction in zip(model_sets, predicted, strict=True):
        parts = (
            _score_flat(resampler, image_index, joint_index, truth, prediction),
            _body_part_flat(resampler, results),
            _localisation_flat(resampler, results),
        )
        point = {key: float(value) for part, _ in parts for key, value in part.items()}
        evaluations.append(_Evaluation(point, {key: values for _, part in parts for key, values in part.items()}))
    return evaluations


def _check_scores(truth: Sequence[int], prediction: Sequence[int]) -> None:
    bad = sorted({s for s in (*truth, *prediction) if s not in RATINGEN_CLASSES})
    if bad:
        raise ValueError(f"scores outside the Ratingen classes 0..5: {bad[:10]}")


# --- the nested summary -------------------------------------------------------------------------------------------


def _interval(evaluation: _Evaluation, key: str, level: float) -> dict[str, float | None]:
    low, high = percentile_interval(evaluation.resampled[key], level)
    return {"value": _number(evaluation.point[key]), "low": low, "high": high}


def _timing(results: Sequence[ImageResult]) -> dict:
    seconds = np.asarray([r.seconds for r in results if r.seconds is not None], dtype=float)
    if not seconds.size:
        return {"n": 0, "median_s": None, "p95_s": None, "mean_s": None}
    return {
        "n": int(seconds.size),
        "median_s": float(np.median(seconds)),
        "p95_s": float(np.percentile(seconds, 95)),
        "mean_s": float(seconds.mean()),
    }


def _hand_counts(results: Sequence[ImageResult]) -> dict:
    """How many labelled hands were scored, why the others were not, and how often laterality was wrong."""
    hands = [hand for _, hand in _hands(results)]
    scored = [hand for hand in hands if hand.pred_scores is not None]
    reasons = Counter(hand.not_scored for hand in hands if hand.pred_scores is None and hand.not_scored)
    known = [hand for hand in scored if hand.laterality and hand.pred_laterality]
    return {
        "n_images": sum(1 for r in results if r.hands),
        "n_images_two_hands": sum(1 for r in results if len(r.hands) > 1),
        "n_hands": len(hands),
        "scored": len(scored),
        "not_scored": dict(sorted(reasons.items())),
        "laterality_known": len(known),
        "laterality_wrong": sum(hand.laterality != hand.pred_laterality for hand in known),
    }


def summarise(
    results: Sequence[ImageResult], n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL
) -> dict:
    """Every figure of the evaluation report, as a JSON-serialisable dict.

    Args:
        results: One entry per labelled image.
        n_resamples: Bootstrap resamples (of whole images) for the intervals; 0 skips intervals.
        seed: Seed of the bootstrap.
        level: Coverage of the intervals.

    Returns:
        Keys: `notice`, `n_images`, `bootstrap`; `scores` (joint counts, global exact/soft accuracy, the per-class
        table `per_class[flavour][class]` with accuracy, precision, recall, f1 and support, the four kappas,
        quadratic kappa per joint, and the confusion matrix of exact scores, rows true); `body_part` (see
        `body_part_summary`; accuracy and left_hands_refused_share with intervals); `localisation` (share of true
        joints found within 0.1, 0.25 and 0.5 MCP spacings); `hands` (labelled hands, on how many images, how
        many scored, `not_scored` by reason, laterality wrong among the scored); `time` (seconds per image: n,
        median, p95, mean). Scores and localisation count every labelled hand (`ImageResult.hands`).
    """
    results = list(results)
    if not results:
        raise ValueError("no results to summarise")
    (evaluation,) = _evaluate([results], n_resamples, seed)
    point = evaluation.point

    def interval(key: str) -> dict[str, float | None]:
        return _interval(evaluation, key, level)

    scored = [(i, h, j) for i, h in _hands(results) for j in JOINT_NAMES if h.true_scores and j in h.true_scores]
    predicted = [(i, h, j) for i, h, j in scored if h.pred_scores and h.pred_scores.get(j) is not None]
    confusion = np.zeros((len(RATINGEN_CLASSES), len(RATINGEN_CLASSES)), dtype=int)
    for _, hand, joint in predicted:
        confusion[RATINGEN_CLASSES.index(hand.true_scores[joint]), RATINGEN_CLASSES.index(hand.pred_scores[joint])] += 1
    support = confusion.sum(1)
    scores = {
        "n_images": len({i for i, _, _ in predicted}),
        "n_joints": len(predicted),
        "n_joints_unscored": len(scored) - len(predicted),
        "classes": list(RATINGEN_CLASSES),
        "accuracy": {flavour: interval(f"accuracy.{flavour}") for flavour in FLAVOURS},
        "per_class": {
            flavour: {
                str(c): {
                    **{name: _number(point[f"per_class.{flavour}.{c}.{name}"]) for name in CLASS_METRICS},
                    "support": int(support[i]),
                }
                for i, c in enumerate(RATINGEN_CLASSES)
            }
            for flavour in FLAVOURS
        },
        "kappa": {name: interval(f"kappa.{name}") for name in KAPPAS},
        "per_joint_kappa": {
            joint: {**interval(f"per_joint_kappa.{joint}"), "n": sum(1 for _, _, j in predicted if j == joint)}
            for joint in JOINT_NAMES
        },
        "confusion": confusion.tolist(),
    }
    body_part = body_part_summary(
        [r.true_body_part for r in results], [r.pred_body_part for r in results], [r.accepted for r in results]
    )
    body_part["accuracy"] = interval("body_part.accuracy")
    body_part["left_hands_refused_share"] = interval("body_part.left_hands_refused_share")
    located = [(i, hand) for i, hand in _hands(results) if hand.true_centers]
    localisation = {
        "n_images": len({i for i, _ in located}),
        "n_joints": sum(len(hand.true_centers) for _, hand in located),
        "tolerance": "fraction of the image's median neighbouring-MCP distance (mcp2-mcp3, mcp3-mcp4, mcp4-mcp5)",
        "rates": {_fraction_key(f): interval(f"localisation.{_fraction_key(f)}") for f in LOCALISATION_FRACTIONS},
    }
    return {
        "notice": NOTICE,
        "n_images": len(results),
        "bootstrap": {"n_resamples": n_resamples, "seed": seed, "level": level, "unit": "image"},
        "scores": scores,
        "body_part": body_part,
        "localisation": localisation,
        "hands": _hand_counts(results),
        "time": _timing(results),
    }


def compare_results(
    results_a: Sequence[ImageResult],
    results_b: Sequence[ImageResult],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict:
    """Model set B against model set A on the same labelled images, for `write_report(..., compare=...)`.

    Each difference B - A is computed on what both model sets answered (for scores: the joints both scored) and
    its interval comes from the same resampled images for A and B.

    Returns:
        `summary` (`summarise(results_b)`), `paired` (images and jointly scored joints), and `differences`:
        flat metric key (e.g. `kappa.quadratic_exact`, `per_class.soft.2.f1`, `body_part.accuracy`,
        `localisation.0.25`, `time.median_s`) -> `a`, `b`, `difference`, `low`, `high`, `excludes_zero`.
        Timings have no interval: they depend on the load of the machine more than on the images.
    """
    results_a = list(results_a)
    results_b = _align(results_a, list(results_b))
    if not results_a:
        raise ValueError("no results to compare")
    evaluation_a, evaluation_b = _evaluate([results_a, results_b], n_resamples, seed)
    differences = {}
    for key, a in evaluation_a.point.items():
        b = evaluation_b.point[key]
        low, high = percentile_interval(evaluation_b.resampled[key] - evaluation_a.resampled[key], level)
        defined = np.isfinite(a) and np.isfinite(b)
        differences[key] = {
            "a": _number(a),
            "b": _number(b),
            "difference": _number(b - a) if defined else None,
            "low": low if defined else None,
            "high": high if defined else None,
            "excludes_zero": bool(low > 0 or high < 0) if defined and low is not None else None,
        }
    timed = [
        (a, b) for a, b in zip(results_a, results_b, strict=True) if a.seconds is not None and b.seconds is not None
    ]
    for key in ("median_s", "p95_s"):
        a, b = _timing([a for a, _ in timed])[key], _timing([b for _, b in timed])[key]
        differences[f"time.{key}"] = {
            "a": a,
            "b": b,
            "difference": None if a is None else b - a,
            "low": None,
            "high": None,
            "excludes_zero": None,
        }
    paired_joints = sum(
        1
        for a, b in zip(results_a, results_b, strict=True)
        for hand_a, hand_b in zip(a.hands, b.hands, strict=True)
        for j in JOINT_NAMES
        if hand_a.true_scores and j in hand_a.true_scores and (hand_a.pred_scores or {}).get(j) is not None
        if (hand_b.pred_scores or {}).get(j) is not None
    )
    return {
        "summary": summarise(results_b, n_resamples, seed, level),
        "paired": {"n_images": len(results_a), "n_joints": paired_joints, "n_resamples": n_resamples, "level": level},
        "differences": differences,
    }
