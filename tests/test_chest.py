"""Chest findings: the phantoms' labelled signs, the model's outputs and heatmaps, the evaluation's metrics, the
shipped model and its card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepxray.labels import CHEST_FINDINGS, NO_FINDING
from deepxray.models.artifacts import INTENDED_USE, read_card, shipped_models_dir
from deepxray.phantoms.chest import (
    DRAWN,
    NOT_DRAWN,
    SIGNS,
    draw_labels,
    label_vector,
    render_chest_phantom,
    stored_record,
)
from evaluation.chest import auroc, f1_table, inside_any

SHIPPED = shipped_models_dir() / "chest_findings"
SMALL = 0.2  # films of 512x410: the anatomy of a full film at coarser pixels, fast to render


def _boxes_mask(shape: tuple[int, int], boxes: list) -> np.ndarray:
    inside = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        inside[y0:y1, x0:x1] = True
    return inside


# --- the phantoms ----------------------------------------------------------------------------------------------------


def test_the_labels_are_chexperts_fourteen_and_no_finding_is_exclusive():
    assert len(CHEST_FINDINGS) == 14 and CHEST_FINDINGS[0] == NO_FINDING
    assert set(DRAWN) | set(NOT_DRAWN) == set(CHEST_FINDINGS) and NOT_DRAWN == ("Pneumonia",)
    assert label_vector([]).tolist() == [1] + [0] * 13
    vector = label_vector(["Cardiomegaly", "Support Devices"])
    assert vector[0] == 0 and vector.sum() == 2
    with pytest.raises(ValueError, match="unknown chest findings"):
        label_vector(["Pneumonitis"])
    rng = np.random.default_rng(0)
    vectors = np.array([label_vector(draw_labels(rng, "clinical")) for _ in range(4000)])
    assert np.all((vectors[:, 0] == 1) == (vectors[:, 1:].sum(axis=1) == 0))  # No Finding exactly when nothing else
    assert vectors[:, CHEST_FINDINGS.index("Pneumonia")].sum() == 0  # never drawn
    rates = dict(zip(CHEST_FINDINGS, vectors.mean(axis=0), strict=True))
    # Registry-like: CheXpert's positive rates (No Finding 8.9 %, Support Devices 56 %, Pleural Other 1.3 %).
    assert rates[NO_FINDING] == pytest.approx(0.089, abs=0.02)
    assert rates["Support Devices"] == pytest.approx(0.564, abs=0.03)
    assert rates["Pleural Other"] == pytest.approx(0.013, abs=0.006)


def test_the_same_seed_renders_the_same_film_and_labels():
    a = render_chest_phantom(5, 3, film_scale=SMALL)
    b = render_chest_phantom(5, 3, film_scale=SMALL)
    assert np.array_equal(a.image, b.image) and a.extra == b.extra
    assert a.image.dtype == np.uint16 and a.image.shape == (512, 410) and a.body_part == "chest"


@pytest.mark.parametrize("label", SIGNS)
def test_a_finding_is_drawn_inside_its_recorded_region_and_nowhere_else(label):
    """The same film with and without the finding (other findings kept) differs inside the finding's boxes,
    visibly, and outside them by no more than a faint tail (under 1 % of the display range)."""
    others = [other for other in ("Lung Opacity", "Support Devices", "Pleural Effusion") if other != label]
    without = render_chest_phantom(11, 2, present=others, film_scale=SMALL)
    with_it = render_chest_phantom(11, 2, present=[*others, label], film_scale=SMALL)
    (region,) = [r for r in with_it.extra["findings"]["regions"] if r["label"] == label]
    assert region["boxes"] and region["sign"]
    assert label_vector(with_it.extra["findings"]["present"])[CHEST_FINDINGS.index(label)] == 1
    difference = np.abs(with_it.image.astype(np.int32) - without.image.astype(np.int32))
    inside = _boxes_mask(difference.shape, region["boxes"])
    assert difference[inside].max() > 200  # a sign one can see (12-bit display values)
    assert difference[~inside].max() < 41
    # Every box holds part of the sign.
    for x0, y0, x1, y1 in region["boxes"]:
        assert difference[y0:y1, x0:x1].max() > 40


def test_a_film_without_findings_records_no_finding():
    phantom = render_chest_phantom(11, 2, present=[], film_scale=SMALL)
    findings = phantom.extra["findings"]
    assert findings["labels"] == [1] + [0] * 13 and findings["regions"] == [] and findings["not_drawn"] == ["Pneumonia"]
    assert 0.38 <= findings["measurements"]["cardiothoracic_ratio"] <= 0.48  # a normal heart
    cardiomegaly = render_chest_phantom(11, 2, present=["Cardiomegaly"], film_scale=SMALL)
    assert 0.56 <= cardiomegaly.extra["findings"]["measurements"]["cardiothoracic_ratio"] <= 0.68


@pytest.mark.parametrize("how", ["turned90", "mirrored"])
def test_boxes_follow_a_film_stored_turned_or_mirrored(how):
    from deepxray.phantoms.stored import store

    phantom = render_chest_phantom(4, 1, present=["Lung Lesion", "Support Devices"], film_scale=SMALL)
    height, width = phantom.image.shape
    moved = store(phantom, how)
    record = stored_record(phantom.extra["findings"], how, height, width)
    for upright, stored in zip(phantom.extra["findings"]["regions"], record["regions"], strict=True):
        for (x0, y0, x1, y1), (u0, v0, u1, v1) in zip(upright["boxes"], stored["boxes"], strict=True):
            crop = phantom.image[y0:y1, x0:x1]
            expected = np.rot90(crop) if how == "turned90" else crop[:, ::-1]
            assert np.array_equal(moved.image[v0:v1, u0:u1], expected)


def test_the_generator_writes_findings_into_the_manifest(tmp_path):
    from deepxray.phantoms.generate import GenerationSettings, generate_dataset, read_manifest

    settings = GenerationSettings(seed=3, chest_findings=True, shape=(1280, 1024))
    generate_dataset(tmp_path, 2, "chest", settings, workers=1, progress=False)
    for record in read_manifest(tmp_path):
        findings = record["findings"]
        assert len(findings["labels"]) == 14 and findings["distribution"] == "clinical"
        assert findings["present"] == [
            label for label, v in zip(CHEST_FINDINGS, findings["labels"], strict=True) if v and label != NO_FINDING
        ]
        for region in findings["regions"]:
            x0, y0, x1, y1 = region["box"]
            assert 0 <= x0 < x1 <= record["width"] and 0 <= y0 < y1 <= record["height"]
    plain = GenerationSettings(seed=3, shape=(1280, 1024))
    generate_dataset(tmp_path / "plain", 1, "chest", plain, workers=1, progress=False)
    assert "findings" not in read_manifest(tmp_path / "plain")[0]  # the body-part model's chest, as before


# --- the model -------------------------------------------------------------------------------------------------------


def test_model_outputs_probabilities_and_a_heatmap_per_label(tmp_path):
    import keras

    from deepxray.imaging.model_inputs import CHEST_VIEW
    from deepxray.models.chest_findings import (
        CAM_STRIDE,
        build_chest_findings_model,
        chest_findings_batch,
        chest_findings_with_heatmaps,
    )

    model = build_chest_findings_model()
    views = np.random.default_rng(0).random((2, CHEST_VIEW, CHEST_VIEW), dtype=np.float32)
    probabilities, heatmaps = chest_findings_with_heatmaps(model, views[0])
    cells = CHEST_VIEW // CAM_STRIDE
    assert probabilities.shape == (14,) and heatmaps.shape == (14, cells, cells)
    assert np.all((probabilities > 0) & (probabilities < 1))
    # The maps are the class activation maps: a label's logit is its map's mean plus its maximum.
    logits = heatmaps.mean(axis=(1, 2)) + heatmaps.max(axis=(1, 2))
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), probabilities, atol=1e-5)
    batch_p, batch_h = chest_findings_batch(model, views)
    np.testing.assert_allclose(batch_p[0], probabilities, atol=1e-5)
    assert batch_h.shape == (2, 14, cells, cells)
    model.save(tmp_path / "model.keras")  # standard layers only: reloads without custom objects
    reloaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(chest_findings_batch(reloaded, views)[0], batch_p, atol=1e-5)


def test_a_heatmap_peak_lands_on_its_cell_in_view_and_film_pixels():
    from deepxray.imaging.model_inputs import NormalisedImage, chest_view
    from deepxray.models.chest_findings import CAM_STRIDE, heatmap_peak

    heatmap = np.zeros((32, 32), np.float32)
    heatmap[20, 7] = 5.0
    x, y = heatmap_peak(heatmap)
    assert (x, y) == pytest.approx(((7 + 0.5) * CAM_STRIDE - 0.5, (20 + 0.5) * CAM_STRIDE - 0.5), abs=1.0)
    film = np.zeros((2560, 2048), np.uint16)
    film[100:200, 300:400] = 4000  # letterboxed into the view: the peak maps back through the same transform
    view = chest_view(NormalisedImage.from_pixels(film))
    fx, fy = view.to_image(np.array([x, y]))
    assert fx == pytest.approx((x + 0.5 - view.transform.offset_x) / view.transform.scale_x - 0.5)
    assert fy == pytest.approx((y + 0.5) / view.transform.scale_y - 0.5)


# --- the metrics -----------------------------------------------------------------------------------------------------


def test_auroc_on_a_hand_made_example():
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auroc([0, 1, 0, 1], [0.2, 0.2, 0.2, 0.9]) == pytest.approx(
        0.75
    )  # a tie counts half: (0.5 + 0.5 + 1 + 1) / 4
    assert auroc([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
    assert auroc([0, 0], [0.1, 0.2]) is None


def test_the_f1_table_and_its_four_averages_on_a_hand_made_example():
    labels = ("a", "b", "c")
    truth = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    predicted = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]])
    table = f1_table(truth, predicted, labels, labels)
    # Per label: a 2 TP; b 1 TP 1 FN; c 1 TP 1 FP 1 FN.
    assert table["labels"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert table["labels"]["b"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert table["labels"]["c"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    averages = table["averages"]
    assert averages["micro avg"] == pytest.approx({"precision": 4 / 5, "recall": 4 / 6, "f1": 8 / 11, "support": 6})
    assert averages["macro avg"] == pytest.approx(
        {"precision": 2.5 / 3, "recall": 2 / 3, "f1": (1 + 2 / 3 + 0.5) / 3, "support": 6}
    )
    assert averages["weighted avg"] == pytest.approx(averages["macro avg"])  # equal supports
    # Samples: film 1 P 1 R 1/2, film 2 P 1/2 R 1, film 3 P 1 R 1/2, film 4 P 1 R 1.
    assert averages["samples avg"] == pytest.approx(
        {"precision": 3.5 / 4, "recall": 3 / 4, "f1": (2 / 3 + 2 / 3 + 2 / 3 + 1) / 4, "support": 6}
    )
    sklearn = pytest.importorskip("sklearn.metrics")
    for average in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = sklearn.precision_recall_fscore_support(truth, predicted, average=average, zero_division=0)
        assert (p, r, f) == pytest.approx(tuple(averages[f"{average} avg"][k] for k in ("precision", "recall", "f1")))
    # Averages over some labels only (the drawn ones): a label left out changes none of the others' rows.
    subset = f1_table(truth, predicted, labels, ("a", "b"))
    assert subset["averages"]["micro avg"]["support"] == 4 and subset["labels"]["c"] == table["labels"]["c"]


def test_thresholds_maximise_the_f1_at_the_registry_prevalence():
    from deepxray.training.chest_findings import choose_threshold, f1_at_prevalence, registry_prevalence

    assert f1_at_prevalence(1.0, 0.0, 0.1) == pytest.approx(1.0)
    # TPR 0.8, FPR 0.1 at 10 %: precision 0.08 / 0.17, recall 0.8.
    precision = 0.08 / 0.17
    assert f1_at_prevalence(0.8, 0.1, 0.1) == pytest.approx(2 * precision * 0.8 / (precision + 0.8))
    threshold = choose_threshold(np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), np.array([0, 0, 0, 1, 1, 1]), 0.05)
    assert 0.3 < threshold <= 0.7
    prevalence = dict(zip(CHEST_FINDINGS, registry_prevalence(), strict=True))
    assert prevalence["Pneumonia"] == 0 and prevalence[NO_FINDING] == pytest.approx(0.089, abs=0.01)


def test_region_masks_mark_the_map_cells_inside_a_findings_boxes():
    from deepxray.imaging.model_inputs import NormalisedImage, chest_view
    from deepxray.training.chest_data import region_masks

    film = np.zeros((2560, 2048), np.uint16)
    film[::7, ::5] = 4000
    view = chest_view(NormalisedImage.from_pixels(film))  # 2560 rows -> 256: 10 film pixels a view pixel
    masks = region_masks({"Cardiomegaly": [[1000, 1200, 1480, 1600]], "Fracture": [[300, 300, 310, 310]]}, view)
    assert masks.shape == (14, 32, 32) and masks.dtype == np.uint8
    cardio = masks[CHEST_FINDINGS.index("Cardiomegaly")]
    rows, cols = np.nonzero(cardio)
    # View x = film x / 10 + 25.6 (the letterbox's left padding), y = film y / 10; cell c covers 8c .. 8c + 7.
    assert (rows.min(), rows.max()) == (15, 19) and (cols.min(), cols.max()) == (16, 21)
    assert cardio.sum() == 5 * 6
    fracture = masks[CHEST_FINDINGS.index("Fracture")]
    assert fracture.sum() == 1 and fracture[3, 6] == 1  # a box smaller than a cell still marks its cell (x 55, y 30)
    assert masks.sum() == cardio.sum() + 1


def test_a_peak_is_in_a_region_when_inside_one_of_its_boxes():
    boxes = [[10, 10, 20, 20], [50, 0, 60, 5]]
    assert inside_any((10, 19.5), boxes) and inside_any((55, 4), boxes)
    assert not inside_any((20, 15), boxes) and not inside_any((30, 30), boxes)


# --- the registry, the command line, the shipped model ---------------------------------------------------------------


def test_the_registry_keeps_the_hand_models_and_adds_the_chest_model():
    from deepxray.cli import build_parser
    from deepxray.models.registry import ALL_MODELS, MODEL_NAMES, MODELS
    from deepxray.models.registry import CHEST_FINDINGS as SPEC

    assert MODEL_NAMES == tuple(MODELS) == ("body_part", "joint_detection", "ratingen_score")
    assert tuple(ALL_MODELS) == (*MODEL_NAMES, "chest_findings") and SPEC.deployment == "ChestFindings"
    assert SPEC.training.train.__name__ == "train_chest_findings" and SPEC.labels == CHEST_FINDINGS
    assert (
        build_parser().parse_args(["train", "chest_findings", "--synthetic", "10", "--out", "x"]).target
        == "chest_findings"
    )


def test_chest_findings_training_needs_rendered_films(capsys):
    from deepxray.cli import main

    assert main(["train", "chest_findings", "--data", "somewhere", "--out", "x"]) == 2
    assert "give --synthetic N" in capsys.readouterr().err


def test_the_shipped_model_loads_and_its_card_lists_fourteen_labels_with_thresholds():
    from deepxray.imaging.model_inputs import NormalisedImage, chest_view
    from deepxray.models.chest_findings import chest_findings_with_heatmaps
    from deepxray.models.registry import CHEST_FINDINGS as SPEC
    from deepxray.models.runtime import LoadedModel

    card = read_card(SHIPPED)
    assert card.name == "chest_findings" and card.labels == list(CHEST_FINDINGS) and card.intended_use == INTENDED_USE
    assert (card.input, card.output) == (SPEC.card_input(), SPEC.output)
    assert set(card.thresholds) == set(CHEST_FINDINGS) and all(0 < t < 1 for t in card.thresholds.values())
    assert set(card.not_drawn) == set(NOT_DRAWN) and "synthetic" in json.dumps(card.training_data)
    model = LoadedModel(SHIPPED)
    model.warm_up()
    film = render_chest_phantom(card.seed + 77, 0, present=["Support Devices", "Cardiomegaly"], film_scale=0.25)
    probabilities, heatmaps = chest_findings_with_heatmaps(
        model, chest_view(NormalisedImage.from_pixels(film.image)).pixels
    )
    assert probabilities.shape == (14,) and heatmaps.shape == (14, 32, 32)


def test_shipped_models_together_stay_small():
    from deepxray.models.registry import ALL_MODEL_NAMES

    size = sum(
        f.stat().st_size for name in ALL_MODEL_NAMES for f in (shipped_models_dir() / name).rglob("*") if f.is_file()
    )
    assert size <= 25 * 2**20, f"shipped models take {size / 2**20:.1f} MiB"


def test_the_deployment_answers_probabilities_and_a_float16_grid():
    import asyncio

    from deepxray.deployments.chest_findings import ChestFindings

    server = ChestFindings.func_or_class(str(SHIPPED), threads=1)
    view = np.zeros((256, 256), np.float16)
    output, tag = asyncio.run(server.analyze(view))
    probabilities, heatmaps = output["probabilities"], output["heatmaps"]
    assert probabilities.shape == (14,) and heatmaps.shape == (14, 32, 32) and heatmaps.dtype == np.float16
    assert tag == read_card(SHIPPED).tag and server.info()["name"] == "chest_findings"
    card = read_card(SHIPPED)
    # The replica applies its own card: a threshold for each label it reports, None for those never drawn.
    assert output["thresholds"] == [
        None if label in (card.not_drawn or {}) else card.thresholds[label] for label in CHEST_FINDINGS
    ]


def test_the_evaluation_writes_its_report_and_a_heatmap_tile_per_label_it_found(tmp_path, capsys):
    import cv2

    from evaluation.chest import main

    out = tmp_path / "report"
    args = ["--models", str(SHIPPED), "--out", str(out), "--n", "24", "--seed", "1001", "--film-scale", "0.25"]
    assert main([*args, "--resamples", "20", "--workers", "1"]) == 0
    assert "research use only" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    examples = report["heatmap_examples"]
    assert examples  # 24 registry-prevalence films always hold some findings the model finds
    for label, film in examples.items():
        rendered = render_chest_phantom(1001, film, film_scale=0.25).extra["findings"]
        assert label in rendered["present"]  # each tile shows a real positive
    sheet = cv2.imread(str(out / "heatmaps.png"))
    tile = 256  # the view
    assert sheet.shape == (tile * -(-len(examples) // 4), tile * 4, 3)
    assert "![one true positive per label, with its heatmap](heatmaps.png)" in (out / "report.md").read_text()
