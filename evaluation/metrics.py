"""Agreement between predicted and true Ratingen scores, as in the source study's metric table.

Every metric comes in two flavours, as in the study:

- **exact**: a prediction is right only when it equals the true class;
- **soft**: a prediction within ±`tolerance` classes (±1 by default) of the true class counts as right.

Exact metrics equal scikit-learn's. A metric whose value is undefined for the data (a class that never occurs, a
kappa of raters who both always say the same) is `None`: never a crash, a warning or a silent 0. Labels are class
values (by default `RATINGEN_CLASSES`, 0..5); a label outside the classes is a `ValueError`, since it is a data
error (for example -1 written for "not scored").

The `confusion_*` functions work on one or many stacked confusion matrices at once and return NaN where a value
is undefined; the bootstrap uses them to evaluate a thousand resamples in one call. The label-array functions are
thin wrappers that turn NaN into `None`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from deepxray.imaging.crop import mcp_spacing
from deepxray.labels import BODY_PARTS, BOTH_HANDS, HAND_PARTS, MCP_NEIGHBOURS, RATINGEN_CLASSES
from evaluation.bootstrap import bootstrap_ci, paired_difference_ci

SOFT_TOLERANCE = 1
KappaWeights = Literal["linear", "quadratic"] | None
Point = tuple[float, float]
# An image's localisation tolerance is a fraction of its MCP spacing (`deepxray.imaging.crop.mcp_spacing`, the
# median distance of the neighbouring MCPs `deepxray.labels.MCP_NEIGHBOURS`), so it scales with the hand's size.
LOCALISATION_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5)

__all__ = [
    "ClassMetrics",
    "LOCALISATION_FRACTIONS",
    "MCP_NEIGHBOURS",
    "SOFT_TOLERANCE",
    "body_part_summary",
    "bootstrap_ci",
    "cohen_kappa",
    "confusion",
    "confusion_accuracy",
    "confusion_kappa",
    "confusion_rates",
    "exact_accuracy",
    "localisation_rates",
    "mcp_spacing",
    "paired_difference_ci",
    "per_class",
    "soft_accuracy",
]


@dataclass(frozen=True)
class ClassMetrics:
    """One class's column of the metric table; `None` where the value is undefined."""

    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    support: int  # true samples of the class


# --- label arrays -------------------------------------------------------------------------------------------------


def _class_array(classes: Sequence[int]) -> np.ndarray:
    values = np.asarray(classes)
    if values.ndim != 1 or values.size == 0 or np.any(np.diff(values) <= 0):
        raise ValueError(f"classes must be distinct and increasing, got {list(classes)}")
    return values


def _labels(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer class labels, got dtype {array.dtype}")
    return array


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    truth, prediction = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(truth) != len(prediction):
        raise ValueError(f"y_true and y_pred differ in length ({len(truth)} and {len(prediction)})")
    return truth, prediction


def class_index(values: np.ndarray, classes: np.ndarray, name: str) -> np.ndarray:
    """Position of every label in `classes`; `ValueError` for a label that is not a class."""
    index = np.minimum(np.searchsorted(classes, values), len(classes) - 1)
    unknown = classes[index] != values
    if np.any(unknown):
        found = sorted(set(np.asarray(values)[unknown].tolist()))
        raise ValueError(f"{name} holds labels outside the classes {classes.tolist()}: {found[:10]}")
    return index


def _optional(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (no warning)."""
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, float), np.asarray(denominator, float))
    return np.divide(numerator, denominator, out=np.full(numerator.shape, np.nan), where=denominator > 0)


def confusion(y_true: ArrayLike, y_pred: ArrayLike, classes: Sequence[int] = RATINGEN_CLASSES) -> np.ndarray:
    """Confusion matrix, rows true class, columns predicted class (as sklearn's `confusion_matrix(labels=classes)`).

    Returns:
        Integer array of shape (len(classes), len(classes)).
    """
    truth, prediction = _pair(y_true, y_pred)
    class_values = _class_array(classes)
    k = len(class_values)
    cells = class_index(truth, class_values, "y_true") * k + class_index(prediction, class_values, "y_pred")
    return np.bincount(cells, minlength=k * k).reshape(k, k)


def exact_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float | None:
    """Share of predictions equal to the true class; `None` for no samples."""
    truth, prediction = _pair(y_true, y_pred)
    return float(np.mean(truth == prediction)) if len(truth) else None


def soft_accuracy(y_true: ArrayLike, y_pred: ArrayLike, tolerance: int = SOFT_TOLERANCE) -> float | None:
    """Share of predictions within ±`tolerance` classes of the true class; `None` for no samples."""
    truth, prediction = _pair(y_true, y_pred)
    # Signed difference in float: unsigned label arrays would wrap around below 0.
    return float(np.mean(np.abs(truth.astype(float) - prediction) <= tolerance)) if len(truth) else None


# --- metrics of confusion matrices (vectorised over leading axes) -------------------------------------------------


def _distance(classes: Sequence[int]) -> np.ndarray:
    values = _class_array(classes).astype(float)
    return np.abs(values[:, None] - values[None, :])


def confusion_accuracy(confusions: ArrayLike, classes: Sequence[int], tolerance: int = 0) -> np.ndarray:
    """Share of samples predicted within ±`tolerance` classes, for matrices of shape (..., k, k); NaN if empty."""
    matrices = np.asarray(confusions, dtype=float)
    hit = _distance(classes) <= tolerance
    return _ratio((matrices * hit).sum((-2, -1)), matrices.sum((-2, -1)))


def confusion_rates(confusions: ArrayLike, classes: Sequence[int], tolerance: int = 0) -> dict[str, np.ndarray]:
    """Per-class accuracy, precision, recall, F1 and support of confusion matrices (rows true, columns predicted).

    With C the confusion matrix, N its total and hit(i, j) = |class_i - class_j| <= tolerance:

    - recall(c)    = sum_j C[c, j] hit(c, j) / sum_j C[c, j]: true-c samples predicted within tolerance of c;
    - precision(c) = sum_i C[i, c] hit(i, c) / sum_i C[i, c]: c-predictions whose truth is within tolerance of c;
    - f1(c)        = 2 precision recall / (precision + recall), 0 when both are 0;
    - accuracy(c)  = 1 - (sum_j C[c, j] (1 - hit(c, j)) + sum_i C[i, c] (1 - hit(i, c))) / N: one-vs-rest
      accuracy, where a sample concerns class c if its truth or its prediction is c, and is an error only when
      truth and prediction are more than `tolerance` apart. Samples concerning neither count as right.

    With tolerance 0 these are exactly sklearn's precision, recall and F1, and the one-vs-rest accuracy
    (TP + TN) / N. Undefined values are NaN: recall without true samples of c, precision without predictions of
    c, F1 where either is undefined, accuracy where c occurs neither in truth nor in predictions.

    Returns:
        Arrays of shape (..., k) under the keys accuracy, precision, recall, f1, support.
    """
    matrices = np.asarray(confusions, dtype=float)
    hit = _distance(classes) <= tolerance
    true_count, pred_count = matrices.sum(-1), matrices.sum(-2)
    recall = _ratio((matrices * hit).sum(-1), true_count)
    precision = _ratio((matrices * hit).sum(-2), pred_count)
    both = precision + recall  # NaN where either is undefined
    f1 = np.where(both == 0, 0.0, _ratio(2 * precision * recall, np.where(np.isnan(both), 0.0, both)))
    miss = matrices * ~hit  # the diagonal is always a hit, so no cell counts twice below
    errors = miss.sum(-1) + miss.sum(-2)
    accuracy = np.where(true_count + pred_count > 0, 1 - _ratio(errors, matrices.sum((-2, -1))[..., None]), np.nan)
    return {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1, "support": true_count}


def disagreement_weights(classes: Sequence[int], weights: KappaWeights = None, tolerance: int = 0) -> np.ndarray:
    """Kappa's disagreement weight w_ij for truth class i and predicted class j.

    With d_ij = max(|class_i - class_j| - tolerance, 0): unweighted w_ij = 1 if d_ij > 0 else 0, linear
    w_ij = d_ij, quadratic w_ij = d_ij². Tolerance 0 gives sklearn's weights (for consecutive classes such as
    0..5); tolerance 1 gives the soft kappas: unweighted w_ij = 0 if |i - j| <= 1 else 1, quadratic
    w_ij = max(|i - j| - 1, 0)².
    """
    excess = np.maximum(_distance(classes) - tolerance, 0)
    if weights is None:
        return (excess > 0).astype(float)
    if weights == "linear":
        return excess
    if weights == "quadratic":
        return excess**2
    raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")


def confusion_kappa(
    confusions: ArrayLike, classes: Sequence[int], weights: KappaWeights = None, tolerance: int = 0
) -> np.ndarray:
    """Weighted Cohen's kappa of confusion matrices of shape (..., k, k); NaN where undefined.

    kappa = 1 - sum_ij w_ij C_ij / sum_ij w_ij E_ij, with E_ij = (row total i)(column total j) / N the counts
    expected if truth and prediction were independent, and w from `disagreement_weights`. Undefined when the
    expected disagreement is 0 (for example truth and prediction always the same single class).
    """
    matrices = np.asarray(confusions, dtype=float)
    weight = disagreement_weights(classes, weights, tolerance)
    total = matrices.sum((-2, -1))
    observed = (matrices * weight).sum((-2, -1))
    # N times the expected disagreement: integer arithmetic for integer counts, so "exactly 0" is exact.
    expected_times_n = np.einsum("...i,ij,...j->...", matrices.sum(-1), weight, matrices.sum(-2))
    return 1 - _ratio(total * observed, expected_times_n)


# --- metrics of label arrays --------------------------------------------------------------------------------------


def per_class(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    classes: Sequence[int] = RATINGEN_CLASSES,
    soft: bool = False,
    tolerance: int = SOFT_TOLERANCE,
) -> dict[int, ClassMetrics]:
    """The study's per-class table column by column: accuracy, precision, recall, F1 and support.

    Exact (`soft=False`): precision, recall and F1 as sklearn's `precision_recall_fscore_support`; accuracy is
    one-vs-rest, (TP + TN) / N. Soft: a prediction within ±`tolerance` of the truth is a hit; see
    `confusion_rates` for the formulas. `None` marks values that are undefined because the class never occurs
    (in truth, in predictions, or either, as the value needs). F1 is `None` wherever precision or recall is, as in
    the source study's table; sklearn reports 0 there instead.
    """
    class_values = _class_array(classes)
    rates = confusion_rates(confusion(y_true, y_pred, class_values), class_values, tolerance if soft else 0)
    return {
        int(c): ClassMetrics(
            accuracy=_optional(rates["accuracy"][i]),
            precision=_optional(rates["precision"][i]),
            recall=_optional(rates["recall"][i]),
            f1=_optional(rates["f1"][i]),
            support=int(rates["support"][i]),
        )
        for i, c in enumerate(class_values)
    }


def cohen_kappa(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    weights: KappaWeights = None,
    soft: bool = False,
    classes: Sequence[int] = RATINGEN_CLASSES,
    tolerance: int = SOFT_TOLERANCE,
) -> float | None:
    """Cohen's kappa between true and predicted classes, optionally weighted and/or soft.

    Exact kappa equals `sklearn.metrics.cohen_kappa_score(y_true, y_pred, labels=classes, weights=weights)`.
    Soft kappa counts agreement within ±`tolerance` classes as full agreement: it is the weighted kappa
    1 - sum w_ij C_ij / sum w_ij E_ij with w_ij = 0 if |i - j| <= 1 else 1 (unweighted) or
    w_ij = max(|i - j| - 1, 0)² (quadratic); see `disagreement_weights`.

    Returns:
        Kappa, or `None` when undefined (no samples, or no disagreement possible by chance, e.g. one class only).
    """
    class_values = _class_array(classes)
    matrix = confusion(y_true, y_pred, class_values)
    return _optional(confusion_kappa(matrix, class_values, weights, tolerance if soft else 0))


# --- joint localisation -------------------------------------------------------------------------------------------


def localisation_hits(
    pred_centers: Sequence[Mapping[str, Point] | None],
    true_centers: Sequence[Mapping[str, Point] | None],
    fractions: Iterable[float] = LOCALISATION_FRACTIONS,
) -> tuple[np.ndarray, np.ndarray]:
    """Per true joint: its image's index, and whether the prediction lies within each fraction of MCP spacing.

    Returns:
        (image_index, hits): shapes (joints,) and (joints, len(fractions)); images without true centres add none.
    """
    if len(pred_centers) != len(true_centers):
        raise ValueError(f"pred_centers and true_centers differ in length ({len(pred_centers)}, {len(true_centers)})")
    fractions = np.asarray(list(fractions), dtype=float)
    images, hits = [], []
    for i, (predicted, truth) in enumerate(zip(pred_centers, true_centers, strict=True)):
        if not truth:
            continue
        spacing = mcp_spacing(truth)
        if spacing is None or spacing <= 0:
            raise ValueError(
                f"image {i}: the true centres need a neighbouring MCP pair (mcp2-mcp3, mcp3-mcp4 or mcp4-mcp5) "
                "to set the localisation tolerance"
            )
        predicted = predicted or {}
        for joint, (x, y) in truth.items():
            if joint in predicted and predicted[joint] is not None:
                distance = np.hypot(predicted[joint][0] - x, predicted[joint][1] - y)
            else:
                distance = np.inf  # a joint the detector did not report is a miss at every tolerance
            images.append(i)
            hits.append(distance <= fractions * spacing)
    return np.asarray(images, dtype=np.intp), np.asarray(hits, dtype=bool).reshape(-1, len(fractions))


def localisation_rates(
    pred_centers: Sequence[Mapping[str, Point] | None],
    true_centers: Sequence[Mapping[str, Point] | None],
    fractions: Iterable[float] = LOCALISATION_FRACTIONS,
) -> dict[float, float | None]:
    """Share of true joints whose predicted centre lies within a fraction of the hand's MCP spacing.

    Each image's tolerance is fraction x the median of its true mcp2-mcp3, mcp3-mcp4 and mcp4-mcp5 distances, so
    it scales with the hand's size in pixels. A joint without a prediction (or an image without any) is a miss.

    Args:
        pred_centers: Per image, joint name -> (x, y) in pixels, or `None` when the image got no prediction.
        true_centers: Per image, joint name -> (x, y), or `None` when the image has no labelled centres.
        fractions: Tolerances as fractions of the MCP spacing.

    Returns:
        fraction -> share of true joints found; `None` when there are no true centres at all.
    """
    fractions = [float(f) for f in fractions]
    _, hits = localisation_hits(pred_centers, true_centers, fractions)
    return {f: (float(hits[:, i].mean()) if len(hits) else None) for i, f in enumerate(fractions)}


# --- body part ----------------------------------------------------------------------------------------------------

BODY_PART_COUNTS: tuple[str, ...] = (
    "n",
    "correct",
    "left_hands",
    "left_hands_refused",
    "non_hands",
    "non_hands_accepted",
    "right_hands",
    "right_hands_accepted",
    "both_hands",
    "both_hands_refused",
)
# Labels of a film in the body-part figures: the body-part model's classes, and a film of both hands (a hand film:
# accepted when at least one of its hands was scored).
FILM_LABELS: tuple[str, ...] = (*BODY_PARTS, BOTH_HANDS)


def body_part_indicators(
    true_parts: Sequence[str], pred_parts: Sequence[str | None], accepted: Sequence[bool]
) -> np.ndarray:
    """Per image, 0/1 for each of `BODY_PART_COUNTS`: the quantities whose sums make the body-part summary."""
    if not len(true_parts) == len(pred_parts) == len(accepted):
        raise ValueError("true_parts, pred_parts and accepted need the same length")
    for name, parts in (("true_parts", true_parts), ("pred_parts", pred_parts)):
        unknown = sorted({p for p in parts if p is not None and p not in FILM_LABELS})
        if unknown or (name == "true_parts" and None in parts):
            raise ValueError(f"{name} holds unknown body parts {unknown or [None]}; known: {', '.join(FILM_LABELS)}")
    truth = np.asarray(true_parts, dtype=object)
    is_accepted = np.asarray(accepted, dtype=bool)
    left, right, both = truth == "left_hand", truth == "right_hand", truth == BOTH_HANDS
    non_hand = ~np.isin(truth, [*HAND_PARTS, BOTH_HANDS])
    columns = (
        np.ones(len(truth), bool),
        truth == np.asarray(pred_parts, dtype=object),
        left,
        left & ~is_accepted,
        non_hand,
        non_hand & is_accepted,
        right,
        right & is_accepted,
        both,
        both & ~is_accepted,
    )
    return np.stack(columns, axis=1).astype(float).reshape(len(truth), len(BODY_PART_COUNTS))


def body_part_rates(totals: np.ndarray) -> dict[str, np.ndarray]:
    """Shares from summed `body_part_indicators` (shape (..., 10)); NaN where the group is empty."""
    count = dict(zip(BODY_PART_COUNTS, np.moveaxis(np.asarray(totals, float), -1, 0), strict=True))
    return {
        "accuracy": _ratio(count["correct"], count["n"]),
        "left_hands_refused_share": _ratio(count["left_hands_refused"], count["left_hands"]),
        "non_hands_accepted_share": _ratio(count["non_hands_accepted"], count["non_hands"]),
        "right_hands_accepted_share": _ratio(count["right_hands_accepted"], count["right_hands"]),
        "both_hands_refused_share": _ratio(count["both_hands_refused"], count["both_hands"]),
    }


def body_part_summary(true_parts: Sequence[str], pred_parts: Sequence[str | None], accepted: Sequence[bool]) -> dict:
    """How well the body-part gate works: which images it let through to scoring and which it refused.

    Args:
        true_parts: True body part per image, one of `BODY_PARTS`, or `BOTH_HANDS` for a film of both hands.
        pred_parts: Predicted body part per image (the answer's label, `BOTH_HANDS` included); `None` when the
            service gave no answer (counted as wrong, left out of the confusion matrix, and counted under
            `no_answer`).
        accepted: Whether the service went on to score the image (a left hand, or a mirrored right hand; a film
            of both hands when at least one of its hands was scored).

    Returns:
        JSON-serialisable dict: `labels` (BODY_PARTS, and `BOTH_HANDS` where a film is labelled or answered so),
        `confusion` (rows true, columns predicted), `n`, `accuracy`, `no_answer`, `left_hands`,
        `left_hands_refused` (left hands not accepted: the source study lost 15 %), `left_hands_refused_share`,
        `non_hands`, `non_hands_accepted` (anything but a hand sent on to scoring), `non_hands_accepted_share`,
        `right_hands`, `right_hands_accepted`, `right_hands_accepted_share`, `both_hands`, `both_hands_refused`
        (films of both hands with no hand scored), `both_hands_refused_share`. Shares are `None` when their
        group is empty.
    """
    indicators = body_part_indicators(true_parts, pred_parts, accepted)
    totals = indicators.sum(0)
    answered = [(t, p) for t, p in zip(true_parts, pred_parts, strict=True) if p is not None]
    labels = FILM_LABELS if any(BOTH_HANDS in pair for pair in answered) or BOTH_HANDS in true_parts else BODY_PARTS
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for truth, prediction in answered:
        matrix[labels.index(truth), labels.index(prediction)] += 1
    counts = {name: int(value) for name, value in zip(BODY_PART_COUNTS, totals, strict=True)}
    rates = {name: _optional(value) for name, value in body_part_rates(totals).items()}
    return {
        "labels": list(labels),
        "confusion": matrix.tolist(),
        "n": counts["n"],
        "accuracy": rates["accuracy"],
        "no_answer": counts["n"] - len(answered),
        "left_hands": counts["left_hands"],
        "left_hands_refused": counts["left_hands_refused"],
        "left_hands_refused_share": rates["left_hands_refused_share"],
        "non_hands": counts["non_hands"],
        "non_hands_accepted": counts["non_hands_accepted"],
        "non_hands_accepted_share": rates["non_hands_accepted_share"],
        "right_hands": counts["right_hands"],
        "right_hands_accepted": counts["right_hands_accepted"],
        "right_hands_accepted_share": rates["right_hands_accepted_share"],
        "both_hands": counts["both_hands"],
        "both_hands_refused": counts["both_hands_refused"],
        "both_hands_refused_share": rates["both_hands_refused_share"],
    }
