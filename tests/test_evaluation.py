"""The evaluation must agree with scikit-learn, with arithmetic done by hand, and stay silent on undefined values."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from deepxray.labels import BODY_PARTS, BOTH_HANDS, JOINT_NAMES
from evaluation import (
    ImageResult,
    LabelledHand,
    LabelledImage,
    body_part_summary,
    bootstrap_ci,
    cohen_kappa,
    compare_results,
    confusion,
    exact_accuracy,
    load_labels,
    localisation_rates,
    paired_difference_ci,
    per_class,
    soft_accuracy,
    summarise,
    write_report,
)

CLASSES = (0, 1, 2, 3, 4, 5)


@pytest.fixture
def no_warnings():
    """Turn every warning into an error: undefined metrics must be None, not a RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def sklearn_quietly(function, *args, **kwargs):
    # sklearn warns about undefined precision/recall; we compare against its NaN, the warning is expected there.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def random_labels(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Skewed true scores and noisy predictions; some seeds leave a class out of truth or predictions."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(6, size=n, p=[0.5, 0.25, 0.12, 0.07, 0.04, 0.02])
    prediction = np.clip(truth + rng.integers(-2, 3, size=n), 0, 5)
    if seed % 2:
        truth[truth == 4] = 3  # class 4 never true
    if seed % 3 == 0:
        prediction[prediction == 5] = 4  # class 5 never predicted
    return truth, prediction


def noisy(truth: np.ndarray, spread: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(truth + rng.integers(-spread, spread + 1, size=truth.shape), 0, 5)


# --- exact metrics against scikit-learn ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_exact_metrics_equal_sklearn(seed, no_warnings):
    truth, prediction = random_labels(seed)
    assert exact_accuracy(truth, prediction) == pytest.approx(accuracy_score(truth, prediction))
    np.testing.assert_array_equal(confusion(truth, prediction), confusion_matrix(truth, prediction, labels=CLASSES))
    for weights in (None, "linear", "quadratic"):
        expected = cohen_kappa_score(truth, prediction, labels=CLASSES, weights=weights)
        assert cohen_kappa(truth, prediction, weights=weights) == pytest.approx(expected, abs=1e-12)

    precision, recall, f1, support = sklearn_quietly(
        precision_recall_fscore_support, truth, prediction, labels=CLASSES, zero_division=np.nan
    )
    table = per_class(truth, prediction)
    for i, c in enumerate(CLASSES):
        row = table[c]
        assert row.support == support[i]
        for ours, theirs in ((row.precision, precision[i]), (row.recall, recall[i])):
            assert (ours is None) == np.isnan(theirs)
            if ours is not None:
                assert ours == pytest.approx(theirs)
        if row.f1 is not None:  # defined where precision and recall both are; sklearn then agrees
            assert row.f1 == pytest.approx(f1[i])
        # One-vs-rest accuracy is sklearn's accuracy on "is class c" / "predicted class c".
        assert row.accuracy == pytest.approx(accuracy_score(truth == c, prediction == c))


def test_random_data_exercises_undefined_classes():
    # The parametrised seeds above must really contain classes missing on one side, or the None checks test nothing.
    odd_truth, _ = random_labels(1)
    _, first_prediction = random_labels(0)
    assert 4 not in odd_truth and 5 not in first_prediction


def test_labels_outside_the_classes_are_an_error():
    with pytest.raises(ValueError, match="outside the classes"):
        confusion([0, 1, -1], [0, 1, 1])
    with pytest.raises(ValueError, match="outside the classes"):
        per_class([0, 6], [0, 1])


# --- hand-computed cases ------------------------------------------------------------------------------------------


def test_two_classes_by_hand(no_warnings):
    # truth 0 0 1 1, prediction 0 1 1 1: confusion [[1, 1], [0, 2]] (rows true).
    # accuracy 3/4; class 0: precision 1/1, recall 1/2, F1 2*1*0.5/1.5 = 2/3; class 1: precision 2/3, recall 1,
    # F1 2*(2/3)/(5/3) = 0.8. Kappa: p_o = 3/4, p_e = (2*1 + 2*3)/16 = 1/2, kappa = (3/4 - 1/2)/(1 - 1/2) = 1/2.
    truth, prediction = [0, 0, 1, 1], [0, 1, 1, 1]
    np.testing.assert_array_equal(confusion(truth, prediction, (0, 1)), [[1, 1], [0, 2]])
    assert exact_accuracy(truth, prediction) == 0.75
    table = per_class(truth, prediction, classes=(0, 1))
    assert (table[0].precision, table[0].recall, table[0].f1) == pytest.approx((1.0, 0.5, 2 / 3))
    assert (table[1].precision, table[1].recall, table[1].f1) == pytest.approx((2 / 3, 1.0, 0.8))
    assert table[0].accuracy == table[1].accuracy == 0.75  # with two classes, one-vs-rest is the global accuracy
    assert cohen_kappa(truth, prediction, classes=(0, 1)) == pytest.approx(0.5)


def test_soft_metrics_by_hand(no_warnings):
    # truth      0 1 2 3 5
    # prediction 1 1 4 3 3      |difference| 1 0 2 0 2: soft hits 3 of 5, exact hits 2 of 5.
    truth, prediction = [0, 1, 2, 3, 5], [1, 1, 4, 3, 3]
    assert exact_accuracy(truth, prediction) == pytest.approx(0.4)
    assert soft_accuracy(truth, prediction) == pytest.approx(0.6)
    assert soft_accuracy(truth, prediction, tolerance=2) == 1.0
    soft = per_class(truth, prediction, soft=True)
    # Soft recall(c): true-c samples predicted within ±1 of c. 0->1 yes, 1->1 yes, 2->4 no, 3->3 yes, no true 4, 5->3 no.
    assert [soft[c].recall for c in CLASSES] == [1.0, 1.0, 0.0, 1.0, None, 0.0]
    # Soft precision(c): c-predictions with truth within ±1 of c. Predicted 1: truths 0, 1 -> 2/2; predicted 4:
    # truth 2 -> 0/1; predicted 3: truths 3, 5 -> 1/2. Classes 0, 2, 5 are never predicted.
    assert [soft[c].precision for c in CLASSES] == [None, 1.0, None, 0.5, 0.0, None]
    # F1: harmonic mean where both are defined: class 1: 1; class 3: 2*0.5*1/1.5 = 2/3.
    assert [soft[c].f1 for c in CLASSES] == pytest.approx([None, 1.0, None, 2 / 3, None, None])
    # Soft one-vs-rest accuracy: errors for c are samples with truth or prediction c that miss by more than 1.
    # Class 0: sample 1 misses by 1 only -> 5/5. Class 2: 2->4 -> 4/5. Class 3: 5->3 -> 4/5. Class 4: 2->4 -> 4/5.
    # Class 5: 5->3 -> 4/5. Class 1: no misses -> 5/5.
    assert [soft[c].accuracy for c in CLASSES] == pytest.approx([1.0, 1.0, 0.8, 0.8, 0.8, 0.8])
    assert [soft[c].support for c in CLASSES] == [1, 1, 1, 1, 0, 1]


def test_soft_kappa_by_hand(no_warnings):
    # truth 0 0 3 3, prediction 0 3 3 1, classes 0..3. Confusion rows true: 0 -> [1, 0, 0, 1], 3 -> [0, 1, 0, 1].
    # Row totals r = (2, 0, 0, 2), column totals c = (1, 1, 0, 2), N = 4.
    # Soft quadratic weights w = max(|i-j|-1, 0)^2: w(0,3) = 4, w(3,1) = 1, w(0,2) = w(3,0)... as below.
    #   observed: 4*C[0,3] + 1*C[3,1] = 5
    #   N * expected: sum w r_i c_j = w(0,3) r0 c3 + w(3,0) r3 c0 + w(3,1) r3 c1 = 4*2*2 + 4*2*1 + 1*2*1 = 26
    #   kappa = 1 - N * observed / (N * expected) = 1 - 4*5/26 = 3/13.
    # Soft unweighted w = 1 where |i-j| >= 2: observed C[0,3] + C[3,1] = 2; N * expected 2*2 + 2*1 + 2*1 = 8;
    #   kappa = 1 - 4*2/8 = 0.
    truth, prediction, classes = [0, 0, 3, 3], [0, 3, 3, 1], (0, 1, 2, 3)
    assert cohen_kappa(truth, prediction, "quadratic", soft=True, classes=classes) == pytest.approx(3 / 13)
    assert cohen_kappa(truth, prediction, soft=True, classes=classes) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_soft_kappa_equals_the_weighted_formula_written_out(seed, no_warnings):
    truth, prediction = random_labels(seed, n=200)
    n = len(truth)
    for weights, power in ((None, 0), ("quadratic", 2)):
        # p_o and p_e written out with loops over classes: disagreement weight 0 within ±1, else (|i-j|-1)^power.
        def weight(i, j, power=power):
            return 0.0 if abs(i - j) <= 1 else float((abs(i - j) - 1) ** power)

        observed = sum(weight(t, p) for t, p in zip(truth, prediction, strict=True)) / n
        expected = sum(weight(i, j) * np.mean(truth == i) * np.mean(prediction == j) for i in CLASSES for j in CLASSES)
        assert cohen_kappa(truth, prediction, weights, soft=True) == pytest.approx(1 - observed / expected)


def test_soft_kappa_is_one_when_every_prediction_is_within_one_class(no_warnings):
    truth = np.array([0, 1, 2, 3, 4, 5] * 5)
    prediction = np.clip(truth + np.tile([1, -1, 0], 10), 0, 5)
    assert cohen_kappa(truth, prediction, soft=True) == 1.0
    assert cohen_kappa(truth, prediction, "quadratic", soft=True) == 1.0
    assert cohen_kappa(truth, prediction) < 1


# --- undefined values ---------------------------------------------------------------------------------------------


def test_undefined_values_are_none_without_warnings(no_warnings):
    # Only class 0 anywhere: kappa has no chance disagreement to compare with.
    assert cohen_kappa([0, 0, 0], [0, 0, 0]) is None
    assert cohen_kappa([0, 0, 0], [0, 0, 0], "quadratic", soft=True) is None
    # Classes 0 and 1 only: the soft kappa cannot disagree beyond ±1, so it is undefined too.
    assert cohen_kappa([0, 1, 0], [1, 1, 0], soft=True) is None
    assert cohen_kappa([], []) is None
    assert exact_accuracy([], []) is None and soft_accuracy([], []) is None
    table = per_class([0, 0, 1], [0, 1, 1], soft=True)
    assert table[3].accuracy is table[3].precision is table[3].recall is table[3].f1 is None
    assert table[3].support == 0
    exact = per_class([0, 0, 2], [0, 1, 0])
    assert exact[2].precision is None and exact[2].recall == 0.0 and exact[2].f1 is None
    assert exact[1].recall is None and exact[1].precision == 0.0 and exact[1].accuracy == pytest.approx(2 / 3)
    assert per_class([], [])[0].accuracy is None
    assert localisation_rates([], []) == {0.1: None, 0.25: None, 0.5: None}


# --- bootstrap ----------------------------------------------------------------------------------------------------


def image_labels(n_images: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ten joints per image, the image id of each, and a noisy prediction."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(6, size=n_images * 10, p=[0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    return truth, noisy(truth, 1, seed + 1), np.repeat(np.arange(n_images), 10)


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_images(no_warnings):
    widths = []
    for n_images in (50, 2000):
        truth, prediction, groups = image_labels(n_images, seed=3)
        estimate = cohen_kappa(truth, prediction, "quadratic")
        low, high = bootstrap_ci(
            lambda t, p: cohen_kappa(t, p, "quadratic"), truth, prediction, groups=groups, n_resamples=200
        )
        assert low < estimate < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3  # 40 times the images: about sqrt(40) ≈ 6 times narrower


def test_bootstrap_resamples_whole_images(no_warnings):
    # Every image's ten joints share one error: the joints are not independent, and only image resampling knows.
    rng = np.random.default_rng(0)
    truth = np.repeat(rng.integers(0, 6, 100), 10)
    prediction = np.repeat(np.clip(truth[::10] + rng.integers(-1, 2, 100), 0, 5), 10)
    groups = np.repeat(np.arange(100), 10)
    by_image = bootstrap_ci(exact_accuracy, truth, prediction, groups=groups, n_resamples=300)
    by_joint = bootstrap_ci(exact_accuracy, truth, prediction, groups=None, n_resamples=300)
    assert by_image[1] - by_image[0] > 2 * (by_joint[1] - by_joint[0])


def test_bootstrap_skips_undefined_resamples_and_is_reproducible(no_warnings):
    # Two images: one all class 0, one mixed. Resamples drawing the first image twice have an undefined kappa.
    truth = np.array([0, 0, 0, 1, 2, 3])
    prediction = np.array([0, 0, 0, 1, 2, 2])
    groups = np.array([0, 0, 0, 1, 1, 1])
    first = bootstrap_ci(cohen_kappa, truth, prediction, groups=groups, n_resamples=50, seed=7)
    assert first == bootstrap_ci(cohen_kappa, truth, prediction, groups=groups, n_resamples=50, seed=7)
    assert first[0] is not None
    assert bootstrap_ci(cohen_kappa, [0, 0], [0, 0], groups=[0, 1], n_resamples=20) == (None, None)


def test_paired_difference_detects_a_better_model_and_not_an_equal_one(no_warnings):
    truth, _, groups = image_labels(200, seed=5)
    worse, better = noisy(truth, 2, seed=11), noisy(truth, 1, seed=12)
    # Another model of the same quality as `worse`. Like any 95 % interval, the difference's excludes 0 for about
    # one such pair in twenty by chance; the seeds fix the pair, so the test is deterministic.
    similar = noisy(truth, 2, seed=14)
    kwargs = {"groups": groups, "n_resamples": 300}

    difference, low, high = paired_difference_ci(cohen_kappa, truth, worse, better, **kwargs)
    assert difference > 0 and low > 0
    difference, low, high = paired_difference_ci(cohen_kappa, truth, worse, worse, **kwargs)
    assert difference == 0 and low <= 0 <= high
    difference, low, high = paired_difference_ci(cohen_kappa, truth, worse, similar, **kwargs)
    assert low < 0 < high
    assert paired_difference_ci(cohen_kappa, [0, 0], [0, 0], [0, 0], groups=[0, 1]) == (None, None, None)


def test_bootstrap_of_3000_joints_is_fast():
    truth, prediction, groups = image_labels(300, seed=1)
    start = time.perf_counter()
    bootstrap_ci(cohen_kappa, truth, prediction, groups=groups, n_resamples=1000)
    assert time.perf_counter() - start < 5  # about 0.2 s on a shared 2-core machine


# --- localisation and body part -----------------------------------------------------------------------------------


def test_localisation_rates_on_hand_made_centres(no_warnings):
    # MCP2..MCP5 100 px apart: the tolerance is 10, 25 and 50 px.
    truth = {"mcp2": (100.0, 500.0), "mcp3": (200.0, 500.0), "mcp4": (300.0, 500.0), "mcp5": (400.0, 500.0),
             "pip2": (100.0, 300.0)}  # fmt: skip
    predicted = {
        "mcp2": (105.0, 500.0),  # 5 px off: found at every tolerance
        "mcp3": (200.0, 520.0),  # 20 px: 0.25 and 0.5
        "mcp4": (330.0, 540.0),  # 50 px: 0.5 (boundary included)
        "mcp5": (400.0, 560.0),  # 60 px: missed
    }  # pip2 not reported: a miss
    rates = localisation_rates([predicted, None, None], [truth, truth, None])
    # Image 2 was not answered (5 misses); image 3 has no labels and does not count. 10 joints in all.
    assert rates == pytest.approx({0.1: 0.1, 0.25: 0.2, 0.5: 0.3})
    assert localisation_rates([predicted], [truth], fractions=(1.0,)) == {1.0: 0.8}
    with pytest.raises(ValueError, match="neighbouring MCP"):
        localisation_rates([None], [{"pip2": (0.0, 0.0)}])


def test_body_part_summary_counts(no_warnings):
    true_parts = ["left_hand", "left_hand", "left_hand", "left_hand", "right_hand", "chest", "foot", "not_radiograph"]
    pred_parts = ["left_hand", "left_hand", "chest", None, "right_hand", "chest", "left_hand", "not_radiograph"]
    accepted = [True, True, False, False, True, False, True, False]
    summary = body_part_summary(true_parts, pred_parts, accepted)
    assert summary["n"] == 8 and summary["no_answer"] == 1
    assert summary["accuracy"] == pytest.approx(5 / 8)
    assert (summary["left_hands"], summary["left_hands_refused"]) == (4, 2)
    assert summary["left_hands_refused_share"] == 0.5
    assert (summary["non_hands"], summary["non_hands_accepted"]) == (3, 1)
    assert (summary["right_hands"], summary["right_hands_accepted"]) == (1, 1)
    matrix = np.asarray(summary["confusion"])
    assert matrix.sum() == 7  # the unanswered image is not in the matrix
    assert matrix[BODY_PARTS.index("left_hand"), BODY_PARTS.index("chest")] == 1
    assert matrix[BODY_PARTS.index("foot"), BODY_PARTS.index("left_hand")] == 1
    json.dumps(summary)
    with pytest.raises(ValueError, match="unknown body parts"):
        body_part_summary(["hand"], ["left_hand"], [True])


# --- summaries ----------------------------------------------------------------------------------------------------


def synthetic_results(n_images: int, spread: int, seed: int) -> list[ImageResult]:
    """Hands with scores and centres (truth fixed by n_images) and predictions whose noise depends on `seed`."""
    truth_rng, rng = np.random.default_rng(1000 + n_images), np.random.default_rng(seed)
    results = []
    for i in range(n_images):
        part = "left_hand" if i % 10 else BODY_PARTS[(i // 10) % len(BODY_PARTS)]
        hand = part in ("left_hand", "right_hand")
        scores = {j: int(truth_rng.choice(6, p=[0.5, 0.25, 0.12, 0.07, 0.04, 0.02])) for j in JOINT_NAMES}
        centers = {j: (100.0 * k, 500.0 + 3 * k) for k, j in enumerate(JOINT_NAMES)}
        accepted = hand and rng.random() > 0.1
        predicted = {j: int(np.clip(s + rng.integers(-spread, spread + 1), 0, 5)) for j, s in scores.items()}
        results.append(
            ImageResult(
                image_id=f"image{i:04d}",
                true_body_part=part,
                pred_body_part=part if rng.random() > 0.05 else "chest",
                body_part_probability=0.9,
                accepted=accepted,
                true_scores=scores if hand else None,
                pred_scores=predicted if accepted else None,
                true_centers=centers if hand else None,
                pred_centers={j: (x + rng.normal(0, 10), y) for j, (x, y) in centers.items()} if accepted else None,
                seconds=float(rng.uniform(0.5, 2.0)),
            )
        )
    return results


def pooled(results: list[ImageResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [
        (r.true_scores[j], r.pred_scores[j], i)
        for i, r in enumerate(results)
        if r.true_scores and r.pred_scores
        for j in JOINT_NAMES
    ]
    truth, prediction, groups = map(np.asarray, zip(*rows, strict=True))
    return truth, prediction, groups


def test_summary_agrees_with_the_metric_functions(no_warnings):
    results = synthetic_results(120, spread=1, seed=1)
    summary = summarise(results, n_resamples=300, seed=4)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    scores = summary["scores"]
    truth, prediction, groups = pooled(results)
    assert scores["n_joints"] == len(truth)
    assert scores["n_joints_unscored"] == sum(
        10 for r in results if r.true_scores and not r.pred_scores
    )  # refused hands
    assert scores["accuracy"]["exact"]["value"] == pytest.approx(exact_accuracy(truth, prediction))
    assert scores["accuracy"]["soft"]["value"] == pytest.approx(soft_accuracy(truth, prediction))
    for flavour, soft in (("exact", False), ("soft", True)):
        for c, row in per_class(truth, prediction, soft=soft).items():
            for name in ("accuracy", "precision", "recall", "f1"):
                assert scores["per_class"][flavour][str(c)][name] == pytest.approx(getattr(row, name))
    np.testing.assert_array_equal(scores["confusion"], confusion(truth, prediction))
    kappa = scores["kappa"]["quadratic_soft"]
    assert kappa["value"] == pytest.approx(cohen_kappa(truth, prediction, "quadratic", soft=True))
    # The same seed draws the same images as bootstrap_ci, so the vectorised interval is the same interval.
    expected = bootstrap_ci(
        lambda t, p: cohen_kappa(t, p, "quadratic", soft=True),
        truth,
        prediction,
        groups=groups,
        n_resamples=300,
        seed=4,
    )
    assert (kappa["low"], kappa["high"]) == pytest.approx(expected)
    mcp2 = [(r.true_scores["mcp2"], r.pred_scores["mcp2"]) for r in results if r.true_scores and r.pred_scores]
    assert scores["per_joint_kappa"]["mcp2"]["value"] == pytest.approx(
        cohen_kappa(*zip(*mcp2, strict=True), "quadratic")
    )
    assert scores["per_joint_kappa"]["mcp2"]["n"] == len(mcp2)
    body = body_part_summary(
        [r.true_body_part for r in results], [r.pred_body_part for r in results], [r.accepted for r in results]
    )
    assert summary["body_part"]["accuracy"]["value"] == pytest.approx(body["accuracy"])
    assert summary["body_part"]["left_hands_refused"] == body["left_hands_refused"]
    rates = localisation_rates([r.pred_centers for r in results], [r.true_centers for r in results])
    assert {float(k): v["value"] for k, v in summary["localisation"]["rates"].items()} == pytest.approx(rates)
    seconds = [r.seconds for r in results]
    assert summary["time"]["median_s"] == pytest.approx(np.median(seconds))
    assert summary["time"]["p95_s"] == pytest.approx(np.percentile(seconds, 95))


def test_summary_of_1000_resamples_is_fast():
    results = synthetic_results(300, spread=1, seed=2)
    start = time.perf_counter()
    summarise(results, n_resamples=1000)
    assert time.perf_counter() - start < 5  # about 0.2 s on a shared 2-core machine


def test_compare_flags_a_clearly_better_model_set(no_warnings):
    worse, better = synthetic_results(150, spread=2, seed=1), synthetic_results(150, spread=0, seed=1)
    comparison = compare_results(worse, list(reversed(better)), n_resamples=300)  # order does not matter
    differences = comparison["differences"]
    kappa = differences["kappa.quadratic_exact"]
    assert kappa["difference"] == pytest.approx(kappa["b"] - kappa["a"]) and kappa["excludes_zero"]
    assert differences["accuracy.exact"]["b"] == 1.0
    assert not differences["body_part.accuracy"]["excludes_zero"]  # same seed, same body-part answers
    assert comparison["summary"]["scores"]["kappa"]["quadratic_exact"]["value"] == 1.0
    json.dumps(comparison, allow_nan=False)
    with pytest.raises(ValueError, match="different images"):
        compare_results(worse, better[:-1])


def test_a_set_without_scored_hands_summarises_to_none_and_reports_n_a(tmp_path, no_warnings):
    results = [ImageResult("a", "chest", "chest", 0.9, False), ImageResult("b", "foot", None, None, False)]
    summary = summarise(results, n_resamples=0)
    assert summary["scores"]["n_joints"] == 0
    assert summary["scores"]["kappa"]["exact"] == {"value": None, "low": None, "high": None}
    assert summary["localisation"]["rates"]["0.5"]["value"] is None and summary["time"]["median_s"] is None
    markdown = write_report(summary, tmp_path, "No hands")["markdown"].read_text(encoding="utf-8")
    assert "Global accuracy: n/a (exact) / n/a (soft)" in markdown


# --- labels and report --------------------------------------------------------------------------------------------


def write_png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 10)).save(path)


CSV_HEADER = "image,laterality,body_part," + ",".join(JOINT_NAMES) + ",mcp2_x,mcp2_y,mcp3_x,mcp3_y,mcp4_x,mcp4_y"


def write_csv(tmp_path: Path, rows: list[str], header: str = CSV_HEADER) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_load_labels_reads_the_documented_csv_layout(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        write_png(tmp_path / "scans" / name)
    path = write_csv(
        tmp_path,
        [
            "scans/a.png,L,,0,1,2,3,4,5,0,1,2,3,10,20,30,20,50,20",
            "scans/b.png,r,,0,0,0,0,0,0,0,0,0,0,,,,,,",
            "scans/c.png,,chest,,,,,,,,,,,,,,,,",
            "scans/d.png,L,left_hand,1.0,,,,,,,,,,,,,,,",
        ],
    )
    a, b, c, d = load_labels(path)
    assert a.path == (tmp_path / "scans" / "a.png").resolve() and a.path.is_absolute()
    assert (a.body_part, a.laterality) == ("left_hand", "L")
    assert a.scores == dict(zip(JOINT_NAMES, [0, 1, 2, 3, 4, 5, 0, 1, 2, 3], strict=True))
    assert a.centers == {"mcp2": (10.0, 20.0), "mcp3": (30.0, 20.0), "mcp4": (50.0, 20.0)}
    assert (b.body_part, b.laterality, b.centers) == ("right_hand", "R", None)
    assert (c.body_part, c.laterality, c.scores) == ("chest", None, None)
    assert d.scores == {"mcp1": 1}  # empty cells are joints that were not scored


def test_load_labels_accepts_semicolons(tmp_path):
    write_png(tmp_path / "a.png")
    path = write_csv(tmp_path, ["a.png;L;" + ";".join(["1"] * 10)], header="image;laterality;" + ";".join(JOINT_NAMES))
    (image,) = load_labels(path)
    assert image.scores == dict.fromkeys(JOINT_NAMES, 1)


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        ("image,laterality," + ",".join(JOINT_NAMES[:-1]), "a.png,L" + ",0" * 9, "missing column.*pip5"),
        (None, "a.png,L,,7,0,0,0,0,0,0,0,0,0,,,,,,", r"row 2, column mcp1: score '7' is not a Ratingen class"),
        (None, "a.png,L,,x,0,0,0,0,0,0,0,0,0,,,,,,", "score 'x' is not a Ratingen class"),
        (None, "a.png,L,,2.5,0,0,0,0,0,0,0,0,0,,,,,,", "score '2.5'"),
        (None, "a.png,X,,0,0,0,0,0,0,0,0,0,0,,,,,,", "laterality 'X' is not L or R"),
        (None, "a.png,R,left_hand,0,0,0,0,0,0,0,0,0,0,,,,,,", "contradicts"),
        (None, "a.png,L,elbow,0,0,0,0,0,0,0,0,0,0,,,,,,", "unknown body part 'elbow'"),
        (None, "a.png,,,0,0,0,0,0,0,0,0,0,0,,,,,,", "give a laterality"),
        (None, "a.png,L,,0,0,0,0,0,0,0,0,0,0,5,,,,,", "mcp2 has only one of"),
        (None, "missing.png,L,,0,0,0,0,0,0,0,0,0,0,,,,,,", "do not exist: .*missing.png"),
        ("image,laterality," + ",".join(JOINT_NAMES) + ",mcp2_x", "a.png,L" + ",0" * 10 + ",1", "both _x and _y"),
    ],
)
def test_csv_errors_are_clear(tmp_path, header, row, message):
    write_png(tmp_path / "a.png")
    path = write_csv(tmp_path, [row], header=header or CSV_HEADER)
    with pytest.raises(ValueError, match=message):
        load_labels(path)


def test_missing_or_empty_label_files_are_clear(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_labels(tmp_path / "nothing.csv")
    with pytest.raises(ValueError, match="without manifest.jsonl"):
        load_labels(tmp_path)
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        load_labels(tmp_path / "empty.csv")


def test_load_labels_reads_a_phantom_manifest(tmp_path):
    write_png(tmp_path / "00000.png")
    write_png(tmp_path / "00001.png")
    joints = {name: {"center": [10.0 * k, 20.0], "score": k % 6} for k, name in enumerate(JOINT_NAMES)}
    records = [
        {"file": "00000.png", "body_part": "left_hand", "laterality": "L", "width": 8, "height": 10, "joints": joints},
        {"file": "00001.png", "body_part": "chest", "laterality": None, "width": 8, "height": 10, "joints": None},
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    for source in (tmp_path, tmp_path / "manifest.jsonl"):
        hand, chest = load_labels(source)
        assert hand.scores == {name: k % 6 for k, name in enumerate(JOINT_NAMES)}
        assert hand.centers["mcp3"] == (20.0, 20.0)
        assert (chest.body_part, chest.scores, chest.centers) == ("chest", None, None)


def predictions_for(images, spread: int, seed: int) -> list[ImageResult]:
    """Made-up answers of a model set for labelled images."""
    rng = np.random.default_rng(seed)
    results = []
    for image in images:
        accepted = image.body_part in ("left_hand", "right_hand")
        scores = (
            {j: int(np.clip(s + rng.integers(-spread, spread + 1), 0, 5)) for j, s in image.scores.items()}
            if accepted and image.scores
            else None
        )
        results.append(
            ImageResult(
                image_id=image.path.name,
                true_body_part=image.body_part,
                pred_body_part=image.body_part,
                body_part_probability=0.97,
                accepted=accepted,
                true_scores=image.scores,
                pred_scores=scores,
                true_centers=image.centers,
                pred_centers={j: (x + 3.0, y) for j, (x, y) in image.centers.items()} if image.centers else None,
                seconds=1.5,
            )
        )
    return results


def test_report_for_a_small_csv_dataset(tmp_path, no_warnings):
    import matplotlib.image
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        write_png(tmp_path / "scans" / f"{i:02d}.png")
        scores = ",".join(str(s) for s in rng.choice(4, size=10, p=[0.6, 0.25, 0.1, 0.05]))  # no 4s or 5s
        rows.append(f"scans/{i:02d}.png,L,,{scores},100,200,200,200,300,200")
    write_png(tmp_path / "scans" / "chest.png")
    rows.append("scans/chest.png,,chest" + "," * 16)
    images = load_labels(write_csv(tmp_path, rows))
    summary = summarise(predictions_for(images, spread=1, seed=1), n_resamples=200)

    out = tmp_path / "report"
    written = write_report(summary, out, title="Small CSV set")
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "research use only" in markdown.lower() and "not clinical accuracy" in markdown
    assert "Global accuracy: " in markdown and " (exact) / " in markdown
    for row in ("Class accuracy (exact)", "Class accuracy (soft)", "Precision (exact)", "Precision (soft)",
                "Recall (exact)", "Recall (soft)", "F1 (exact)", "F1 (soft)", "Cohen's kappa (exact)",
                "Cohen's quadratic kappa (soft)", "| mcp1 |", "Left hands refused", "× MCP spacing",
                "Time per image"):  # fmt: skip
        assert row in markdown, row
    recall_row = next(line for line in markdown.splitlines() if line.startswith("| Recall (exact)"))
    assert recall_row.count("n/a") >= 2  # nobody has score 4 or 5: their recall is undefined
    document = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert document["summary"] == summary and "research use only" in document["notice"]
    for key in ("score_png", "body_part_png"):
        with Image.open(written[key]) as png:
            assert png.format == "PNG" and min(png.size) > 300
        assert matplotlib.image.imread(written[key]).ndim == 3
    assert set(written) == {"markdown", "json", "score_png", "body_part_png"}


def test_report_with_a_comparison(tmp_path, no_warnings):
    results_a = synthetic_results(60, spread=2, seed=3)
    results_b = synthetic_results(60, spread=0, seed=3)
    comparison = compare_results(results_a, results_b, n_resamples=200)
    written = write_report(
        summarise(results_a, n_resamples=200), tmp_path, "A against B", compare=comparison, compare_name="v2", name="v1"
    )
    markdown = written["markdown"].read_text(encoding="utf-8")
    assert "| Metric | A: v1 | B: v2 | B − A |" in markdown and "CI excludes 0" in markdown
    kappa_row = next(line for line in markdown.splitlines() if line.startswith("| Cohen's quadratic kappa (exact) |"))
    assert kappa_row.rstrip(" |").endswith("yes")
    assert "Model set A: v1" in markdown and "Model set B: v2" in markdown
    assert written["score_png_compare"].exists() and written["body_part_png_compare"].exists()
    assert json.loads(written["json"].read_text(encoding="utf-8"))["compare"]["differences"]


# --- films of both hands: every hand counts, paired with the nearest answered hand --------------------------------


def hand_centres(x0: float) -> dict[str, tuple[float, float]]:
    """Ten joints 100 px apart in a row starting at x0 (MCP spacing 100 px, MCP3 at x0 + 200)."""
    return {joint: (x0 + 100.0 * k, 500.0 + 3 * k) for k, joint in enumerate(JOINT_NAMES)}


def answered_hand(laterality: str, centres: dict, score: int) -> dict:
    """One hand of a `/score` answer: every joint graded `score`, its box around the joints' crops."""
    xs, ys = zip(*centres.values(), strict=True)
    one_hot = [1.0 if c == score else 0.0 for c in CLASSES]
    return {
        "laterality": laterality,
        "scores": dict.fromkeys(JOINT_NAMES, score),
        "total": 10 * score,
        "joints": {
            j: {"score": score, "probabilities": one_hot, "center": list(c), "box": [], "confidence": 0.9}
            for j, c in centres.items()
        },  # fmt: skip
        "box": [min(xs) - 50, min(ys) - 50, max(xs) + 50, max(ys) + 50],
        "confidence": 0.9,
    }


def both_hands_answer(hands: list[dict], not_scored: list[dict] = ()) -> dict:
    first = sorted(hands, key=lambda hand: hand["laterality"] != "L")[0]
    return {
        "scores": first["scores"],
        "laterality": first["laterality"],
        "joints": first["joints"],
        "body_part": {"label": BOTH_HANDS, "probability": 0.99},
        "hands": hands,
        "hands_not_scored": list(not_scored),
        "orientation": {"rotated_deg": 0},
    }


# The film's left side shows the right hand (x 100..1000), its right side the left hand (x 2000..2900).
LEFT_HAND, RIGHT_HAND = hand_centres(2000.0), hand_centres(100.0)


def two_hand_film(left_score: int = 3, right_score: int = 0) -> LabelledImage:
    return LabelledImage(
        Path("film.png"),
        BOTH_HANDS,
        None,
        hands=[
            LabelledHand("L", dict.fromkeys(JOINT_NAMES, left_score), LEFT_HAND),
            LabelledHand("R", dict.fromkeys(JOINT_NAMES, right_score), RIGHT_HAND),
        ],
    )


def test_load_labels_reads_a_both_hands_manifest(tmp_path):
    write_png(tmp_path / "00000.png")
    write_png(tmp_path / "00001.png")

    def joints(x0: float, score: int) -> dict:
        return {j: {"center": list(c), "score": score} for j, c in hand_centres(x0).items()}

    hands = [{"laterality": "R", "box": [0, 0, 1792, 2560], "joints": joints(100.0, 1)},
             {"laterality": "L", "box": [1792, 0, 3584, 2560], "joints": joints(2000.0, 4)}]  # fmt: skip
    records = [
        {"file": "00000.png", "body_part": BOTH_HANDS, "laterality": None, "joints": None, "hands": hands},
        {"file": "00001.png", "body_part": "right_hand", "laterality": "R", "joints": joints(0.0, 2),
         "hands": [{"laterality": "R", "box": [0, 0, 2048, 2560], "joints": joints(0.0, 2)}]},
    ]  # fmt: skip
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    film, single = load_labels(tmp_path)
    assert (film.body_part, film.laterality, film.scores) == (BOTH_HANDS, None, None)
    assert [hand.laterality for hand in film.hands] == ["L", "R"]  # left hand first, whatever the file's order
    assert film.hands[0].scores == dict.fromkeys(JOINT_NAMES, 4) and film.hands[0].centers["mcp3"] == (2200.0, 506.0)
    assert film.hands[1].scores == dict.fromkeys(JOINT_NAMES, 1) and film.hands[1].centers == RIGHT_HAND
    assert single.hands == [LabelledHand("R", single.scores, single.centers)] and single.scores["mcp1"] == 2

    for broken, message in ((None, "needs 'hands'"), ([hands[0], hands[0]], "each hand once, got R/R")):
        manifest.write_text(json.dumps({**records[0], "hands": broken}) + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            load_labels(manifest)


def test_csv_rows_of_one_image_are_the_hands_of_one_film(tmp_path):
    for name in ("film.png", "half.png", "left.png"):
        write_png(tmp_path / name)
    path = write_csv(
        tmp_path,
        [
            "film.png,R,,0,0,0,0,0,0,0,0,0,0,200,500,300,503,400,506",
            "left.png,L,,1,1,1,1,1,1,1,1,1,1,,,,,,",
            "film.png,L,,2,2,2,2,2,2,2,2,2,2,2100,500,2200,503,2300,506",
            f"half.png,R,{BOTH_HANDS},5,5,5,5,5,5,5,5,5,5,,,,,,",
        ],
    )
    film, left, half = load_labels(path)
    assert film.body_part == BOTH_HANDS and [(h.laterality, h.scores["mcp1"]) for h in film.hands] == [
        ("L", 2),
        ("R", 0),
    ]
    assert film.hands[0].centers["mcp3"] == (2200.0, 503.0)
    assert (left.body_part, len(left.hands)) == ("left_hand", 1)
    assert (half.body_part, [h.laterality for h in half.hands]) == (BOTH_HANDS, ["R"])  # one hand of the film labelled
    for rows, message in (
        (
            ["film.png,L,,0,0,0,0,0,0,0,0,0,0,,,,,,", "film.png,L,,1,1,1,1,1,1,1,1,1,1,,,,,,"],
            r"rows 2, 3: .*once, got L/L",
        ),
        (["film.png,L,,0,0,0,0,0,0,0,0,0,0,,,,,,", "film.png,,chest" + "," * 16], "listed more than once"),
        ([f"film.png,,{BOTH_HANDS},0,0,0,0,0,0,0,0,0,0,,,,,,"], "give its laterality"),
    ):
        with pytest.raises(ValueError, match=message):
            load_labels(write_csv(tmp_path, rows))


def test_hands_are_paired_by_position_even_when_the_laterality_is_wrong(no_warnings):
    from evaluation.run import result_from_answer

    # Both lateralities answered wrongly: the hand where the left hand lies is called "R", and the other "L".
    answer = both_hands_answer([answered_hand("L", RIGHT_HAND, 0), answered_hand("R", LEFT_HAND, 3)])
    result = result_from_answer("film", two_hand_film(left_score=3, right_score=0), 200, answer, 0.5)
    assert [(h.laterality, h.pred_laterality) for h in result.hands] == [("L", "R"), ("R", "L")]
    assert result.pred_scores is None  # two labelled hands: see `hands`
    summary = summarise([result], n_resamples=0)
    assert summary["scores"]["n_joints"] == 20 and summary["scores"]["accuracy"]["exact"]["value"] == 1.0
    assert summary["localisation"]["rates"]["0.1"]["value"] == 1.0
    assert summary["hands"] == {"n_images": 1, "n_images_two_hands": 1, "n_hands": 2, "scored": 2, "not_scored": {},
                                "laterality_known": 2, "laterality_wrong": 2}  # fmt: skip
    body = summary["body_part"]
    assert (body["accuracy"]["value"], body["both_hands"], body["both_hands_refused"], body["non_hands"]) == (
        1.0,
        1,
        0,
        0,
    )
    assert body["labels"][-1] == BOTH_HANDS


def test_a_refused_second_hand_counts_as_not_scored(no_warnings):
    from evaluation.run import result_from_answer

    refused = {"box": [0.0, 0.0, 1792.0, 2560.0], "error": "joints_not_found", "detail": "MCP2 not found."}
    answer = both_hands_answer([answered_hand("L", LEFT_HAND, 3)], [refused])
    result = result_from_answer("film", two_hand_film(), 200, answer, 0.5)
    (left, right) = result.hands
    assert left.pred_scores == dict.fromkeys(JOINT_NAMES, 3) and left.not_scored is None
    assert (right.pred_scores, right.pred_centers, right.not_scored) == (None, None, "joints_not_found")
    summary = summarise([result], n_resamples=0)
    assert (summary["scores"]["n_joints"], summary["scores"]["n_joints_unscored"]) == (10, 10)
    assert summary["localisation"]["rates"]["0.5"]["value"] == 0.5  # the right hand's ten joints are misses
    assert (summary["hands"]["scored"], summary["hands"]["not_scored"]) == (1, {"joints_not_found": 1})
    assert summary["body_part"]["both_hands_refused"] == 0  # one hand scored: the film was accepted

    # The whole film refused: both hands not scored, for the film's reason.
    error = {"error": "not_a_hand", "detail": "No hand.", "body_part": {"label": "foot", "probability": 0.8}}
    refused_film = result_from_answer("film", two_hand_film(), 422, error, 0.5)
    assert [h.not_scored for h in refused_film.hands] == ["not_a_hand", "not_a_hand"]
    summary = summarise([result, refused_film], n_resamples=0)
    assert summary["hands"]["not_scored"] == {"joints_not_found": 1, "not_a_hand": 2}
    assert (summary["body_part"]["both_hands"], summary["body_part"]["both_hands_refused"]) == (2, 1)


def test_an_answered_hand_off_its_labelled_place_pairs_only_when_every_hand_is_labelled(no_warnings):
    from evaluation.run import result_from_answer

    # Both hands labelled: the right hand answered as a left hand 650 px up the film (joints found on the forearm,
    # as seen on a film stored turned) is still that hand, scored wrongly, not a hand that was not found.
    astray = answered_hand("L", {j: (x + 130.0, y - 650.0) for j, (x, y) in RIGHT_HAND.items()}, 1)
    assert not astray["box"][1] <= RIGHT_HAND["mcp3"][1] <= astray["box"][3]
    answer = both_hands_answer([answered_hand("L", LEFT_HAND, 3), astray])
    right = result_from_answer("film", two_hand_film(), 200, answer, 0.5).hands[1]
    assert (right.pred_laterality, right.pred_scores["mcp1"], right.not_scored) == ("L", 1, None)
    # Only the left hand labelled, only the right hand scored: the answered hand is not the labelled one.
    film = LabelledImage(Path("film.png"), BOTH_HANDS, None, hands=[LabelledHand("L", None, LEFT_HAND)])
    result = result_from_answer("film", film, 200, both_hands_answer([answered_hand("R", RIGHT_HAND, 0)]), 0.5)
    assert (result.hands[0].pred_centers, result.hands[0].not_scored) == (None, "not_found")
    # Without labelled centres there is no position: a two-hand film's hands go by laterality.
    film = LabelledImage(Path("film.png"), BOTH_HANDS, None, hands=[LabelledHand("L"), LabelledHand("R")])
    answer = both_hands_answer([answered_hand("L", RIGHT_HAND, 2), answered_hand("R", LEFT_HAND, 4)])
    result = result_from_answer("film", film, 200, answer, 0.5)
    assert [h.pred_scores["mcp1"] for h in result.hands] == [2, 4]


def test_compare_pairs_the_hands_of_both_hands_films(no_warnings):
    from evaluation.run import result_from_answer

    def results(left_score: int) -> list[ImageResult]:
        answer = both_hands_answer([answered_hand("L", LEFT_HAND, left_score), answered_hand("R", RIGHT_HAND, 0)])
        return [result_from_answer(f"film{i}", two_hand_film(3, i % 2), 200, answer, 0.5) for i in range(6)]

    comparison = compare_results(results(1), results(3), n_resamples=50)
    assert comparison["paired"]["n_joints"] == 120
    exact = comparison["differences"]["accuracy.exact"]
    assert exact["a"] == pytest.approx(30 / 120) and exact["b"] == pytest.approx(90 / 120)
    refused = {"error": "not_a_hand", "detail": "No hand."}
    relabelled = [result_from_answer(f"film{i}", two_hand_film(2, 0), 422, refused, 0.5) for i in range(6)]
    with pytest.raises(ValueError, match="different labels"):
        compare_results(results(1), relabelled)


def test_body_part_summary_counts_films_of_both_hands_as_hand_films(no_warnings):
    summary = body_part_summary(
        [BOTH_HANDS, BOTH_HANDS, "left_hand", "chest"], [BOTH_HANDS, "left_hand", BOTH_HANDS, "chest"],
        [True, False, True, False],
    )  # fmt: skip
    assert summary["accuracy"] == 0.5 and summary["labels"] == [*BODY_PARTS, BOTH_HANDS]
    assert (summary["both_hands"], summary["both_hands_refused"], summary["both_hands_refused_share"]) == (2, 1, 0.5)
    assert (summary["non_hands"], summary["left_hands"], summary["left_hands_refused"]) == (1, 1, 0)
    matrix, index = np.asarray(summary["confusion"]), summary["labels"].index
    assert matrix[index(BOTH_HANDS), index("left_hand")] == 1 and matrix[index("left_hand"), index(BOTH_HANDS)] == 1
    assert body_part_summary(["chest"], ["chest"], [False])["labels"] == list(BODY_PARTS)  # no both-hands column


# --- `deepxray evaluate`: bad input is one sentence on stderr and exit code 2, found before anything is scored -------

SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "models"


def model_set_lacking(root: Path, missing: str | None = None, broken_card: str | None = None) -> Path:
    """A model folder with the shipped cards and stand-in model files, `missing` left out, `broken_card` unreadable."""
    from deepxray.models.registry import MODEL_NAMES

    for name in MODEL_NAMES:
        if name == missing:
            continue
        (root / name).mkdir(parents=True)
        (root / name / "model.keras").write_bytes(b"stand-in")
        card = (SHIPPED_MODELS / name / "model_card.json").read_text(encoding="utf-8")
        (root / name / "model_card.json").write_text("{" if name == broken_card else card, encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("option", "folder", "message"),
    [
        ("--compare", "missing", r"--compare folder .*missing does not exist$"),
        ("--compare", "partial", r"--compare folder .*partial is not a DeepXRay model set: .*ratingen_score lacks"),
        ("--compare", "broken", r"--compare folder .*broken: unreadable model card in .*joint_detection"),
        ("--models", "missing", r"--models folder .*missing does not exist$"),
        ("--data", "missing", r"label file .*missing does not exist$"),
    ],
)
def test_evaluate_refuses_bad_folders_before_scoring(option, folder, message, tmp_path, capsys, monkeypatch):
    import re

    import evaluation.run
    from deepxray.cli import main

    def never(*args, **kwargs):
        raise AssertionError("scored images before checking the inputs")

    monkeypatch.setattr(evaluation.run, "evaluate", never)
    monkeypatch.setattr(evaluation.run, "in_process_scorer", never)
    write_png(tmp_path / "a.png")
    labels = write_csv(tmp_path, ["a.png,L,,0,0,0,0,0,0,0,0,0,0,,,,,,"])
    model_set_lacking(tmp_path / "partial", missing="ratingen_score")
    model_set_lacking(tmp_path / "broken", broken_card="joint_detection")
    args = {"--data": str(labels), "--out": str(tmp_path / "report"), "--models": str(SHIPPED_MODELS)}
    args[option] = str(tmp_path / folder)
    code = main(["evaluate", *[part for pair in args.items() for part in pair]])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("deepxray: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err.strip()), err
    assert not (tmp_path / "report").exists()
