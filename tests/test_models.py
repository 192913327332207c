"""The three models: shapes, serialisation, shared preprocessing, training, and the shipped artifacts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from deepxray.imaging.model_inputs import BODY_PART_VIEW, CROP_SIZE, DETECTOR_VIEW, detector_view, joint_crops
from deepxray.labels import BODY_PARTS, JOINT_NAMES, RATINGEN_CLASSES
from deepxray.models.artifacts import (
    INTENDED_USE,
    REQUIRED_CARD_FIELDS,
    ModelCard,
    load_artifact,
    read_card,
    save_artifact,
    shipped_models_dir,
)
from deepxray.models.body_part import build_body_part_model
from deepxray.models.joint_detection import HEATMAP_STRIDE, build_detector, build_heatmap_net
from deepxray.models.ratingen_score import build_scorer
from deepxray.models.registry import MODEL_NAMES, MODELS
from deepxray.phantoms.generate import GenerationSettings, generate_dataset, read_manifest
from deepxray.training.data import CONTEXT_CROP_SIZE, CROP_CONTEXT, ManifestSource, SyntheticSource
from deepxray.training.data import build_training_set as build_set

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = shipped_models_dir()


def rng_images(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, size, size, 1), dtype=np.float32)


def test_output_shapes():
    probabilities = build_body_part_model()(rng_images(2, BODY_PART_VIEW)).numpy()
    assert probabilities.shape == (2, len(BODY_PARTS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    keypoints = build_detector(build_heatmap_net())(rng_images(2, DETECTOR_VIEW)).numpy()
    assert keypoints.shape == (2, len(JOINT_NAMES), 3)
    assert np.all((keypoints[..., 2] >= 0) & (keypoints[..., 2] <= 1))
    scores = build_scorer()(rng_images(3, CROP_SIZE)).numpy()
    assert scores.shape == (3, len(RATINGEN_CLASSES))


def test_keypoints_are_refined_below_one_heatmap_cell():
    from deepxray.models.layers import HeatmapKeypoints

    cells = DETECTOR_VIEW // HEATMAP_STRIDE
    grid = np.arange(cells, dtype=np.float32)
    truth = np.array([[10.3, 20.7], [33.6, 5.2]])  # cell coordinates
    heat = np.stack([np.exp(-((grid[None] - x) ** 2 + (grid[:, None] - y) ** 2) / 4.5) for x, y in truth], -1)
    logits = np.log(np.clip(heat, 1e-6, 1 - 1e-6) / (1 - np.clip(heat, 1e-6, 1 - 1e-6)))[None].astype(np.float32)
    points = HeatmapKeypoints(stride=HEATMAP_STRIDE)(logits).numpy()[0]
    expected_view = (truth + 0.5) * HEATMAP_STRIDE - 0.5
    np.testing.assert_allclose(points[:, :2], expected_view, atol=0.25 * HEATMAP_STRIDE)
    np.testing.assert_allclose(points[:, 2], 1.0, atol=0.05)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_save_and_reload_give_the_same_outputs(name, tmp_path):
    model, size = {
        "body_part": (build_body_part_model(), BODY_PART_VIEW),
        "joint_detection": (build_detector(build_heatmap_net()), DETECTOR_VIEW),
        "ratingen_score": (build_scorer(), CROP_SIZE),
    }[name]
    if name == "body_part":
        model.get_layer("temperature").temperature.assign(2.5)  # a fitted temperature must survive saving
    card = ModelCard(name, "0.0.1", {"shape": [size, size, 1]}, {}, [], {}, 0, {})
    save_artifact(model, tmp_path / name, card)
    reloaded, reloaded_card = load_artifact(tmp_path / name)
    x = rng_images(2, size)
    np.testing.assert_allclose(reloaded(x).numpy(), model(x).numpy(), atol=1e-5)
    assert reloaded_card.tag == f"{name}@0.0.1"


def test_training_and_serving_preprocess_a_file_identically(tmp_path):
    from deepxray.pipeline import _normalised, _prepare
    from deepxray.settings import Settings

    generate_dataset(tmp_path, 1, "right_hand", GenerationSettings(seed=3), workers=1, progress=False)
    record = read_manifest(tmp_path)[0]
    example = ManifestSource.open(tmp_path).example((0, record))

    pixels, _header = _prepare((tmp_path / record["file"]).read_bytes(), Settings())
    image, served_body_view = _normalised(pixels, None)
    centers = {name: tuple(record["joints"][name]["center"]) for name in JOINT_NAMES}
    served_view = detector_view(image, mirrored=True)
    served_crops = joint_crops(image, centers, JOINT_NAMES, True, out_size=CONTEXT_CROP_SIZE, context=CROP_CONTEXT)
    assert np.array_equal(example.body_view, served_body_view)
    assert np.array_equal(example.detector_view, served_view.pixels)
    assert np.array_equal(example.crops, served_crops)
    np.testing.assert_allclose(example.detector_points, served_view.to_view(np.array(list(centers.values()))))
    # A right hand reaches the detector as a left hand: the thumb (mcp1) on the view's right of the little finger.
    assert example.detector_points[0, 0] > example.detector_points[4, 0]


def test_ordinal_loss_grows_with_the_distance_from_the_true_class():
    from deepxray.training.ratingen_score import ordinal_loss

    labels = np.zeros((5,), np.int64)
    predictions = np.full((5, 6), 0.02, np.float32)
    for i, wrong in enumerate(range(1, 6)):
        predictions[i, wrong] = 0.9
    losses = ordinal_loss(labels, predictions / predictions.sum(1, keepdims=True)).numpy()
    assert np.all(np.diff(losses) > 0)


def test_fitted_temperature_recovers_the_true_one():
    from deepxray.training.body_part import fit_temperature

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (4000, 6))
    true_t = 2.0
    p = np.exp(logits / true_t)
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(6, p=row) for row in p])
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.1)


@pytest.mark.slow
def test_a_tiny_training_run_lowers_the_loss(tmp_path):
    from deepxray.training.common import configure_tensorflow
    from deepxray.training.ratingen_score import train_ratingen_score

    configure_tensorflow(seed=0)
    data = build_set(SyntheticSource(seed=8, n=10, body_parts="left_hand", degrade=False), workers=1)
    train_ratingen_score(data, tmp_path, seed=0, epochs=4, batch=16)
    history = np.genfromtxt(tmp_path / "history.csv", delimiter=",", names=True)
    assert history["loss"][-1] < history["loss"][0]


# --- one registry of the three models; the CLI's names ---------------------------------------------------------------


def test_the_registry_names_each_model_once_at_every_layer():
    assert MODEL_NAMES == ("body_part", "joint_detection", "ratingen_score")
    assert [MODELS[name].deployment for name in MODEL_NAMES] == ["BodyPart", "JointDetection", "RatingenScore"]
    assert [MODELS[name].input_size for name in MODEL_NAMES] == [BODY_PART_VIEW, DETECTOR_VIEW, CROP_SIZE]
    for name in MODEL_NAMES:
        spec, card = MODELS[name], read_card(SHIPPED / name)
        assert spec.name == name == card.name and spec.training.train.__name__ == f"train_{name}"
        # What `deepxray train` would write on the card is what the shipped card says.
        assert (card.input, card.output, card.labels) == (spec.card_input(), spec.output, list(spec.labels))


def test_the_registry_imports_without_tensorflow():
    import subprocess
    import sys

    code = "import sys, deepxray.models.registry; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_train_takes_the_model_names_and_the_old_spellings():
    from deepxray.cli import build_parser

    parser = build_parser()
    old = {"body-part": "body_part", "joints": "joint_detection", "scorer": "ratingen_score"}
    for given, name in [*old.items(), *((name, name) for name in MODEL_NAMES), ("all", "all")]:
        assert parser.parse_args(["train", given, "--out", "x"]).target == name
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "detector", "--out", "x"])


# --- `deepxray checkpoint`: one sentence on stderr and exit code 2 for bad input, never a traceback -------------------


@pytest.mark.parametrize(
    ("models", "epoch", "message"),
    [
        ("{tmp}/missing", "1", r"model folder .*missing does not exist$"),
        (
            "{tmp}",
            "1",
            r"model folder .* is not a DeepXRay model set: .*body_part lacks model_card.json and model.keras$",
        ),
        (
            "{shipped}",
            "99",
            r"no epoch-99 checkpoint of body_part, joint_detection, ratingen_score in .*epoch99.weights.h5",
        ),
        ("{shipped}", "0", r"--epoch must be 1 or more, not 0$"),
    ],
)
def test_checkpoint_errors_are_one_sentence(models, epoch, message, tmp_path, capsys):
    import re

    from deepxray.cli import main

    out = tmp_path / "out"
    models = models.format(tmp=tmp_path, shipped=SHIPPED)
    code = main(["checkpoint", "--models", models, "--epoch", epoch, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("deepxray: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err.strip()), err
    assert not out.exists()  # nothing written


# --- the shipped demo models ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shipped_artifacts_load_and_their_cards_are_complete(name):
    from deepxray.models.runtime import LoadedModel

    card = read_card(SHIPPED / name)
    data = json.loads((SHIPPED / name / "model_card.json").read_text())
    assert all(data[key] not in (None, "", {}, []) for key in REQUIRED_CARD_FIELDS)
    assert card.name == name and card.intended_use == INTENDED_USE
    assert "synthetic" in json.dumps(card.training_data)
    model = LoadedModel(SHIPPED / name)
    model.warm_up()


def test_shipped_models_are_small():
    size = sum(f.stat().st_size for name in MODEL_NAMES for f in (SHIPPED / name).rglob("*") if f.is_file())
    assert size <= 25 * 2**20, f"shipped models take {size / 2**20:.1f} MiB"


def test_golden_phantoms_get_their_recorded_answers():
    from deepxray.models.runtime import local_models
    from deepxray.training.golden import golden_answers

    expected = json.loads((ROOT / "tests/golden/expected.json").read_text())
    models = local_models(SHIPPED)
    assert models.versions == expected["models"], "models changed: rerun python -m deepxray.training.golden"
    atol = expected["probability_atol"]
    for got, want in zip(asyncio.run(golden_answers(models)), expected["images"], strict=True):
        assert got["status"] == want["status"], got
        if want["status"] != 200:
            assert got["error"] == want["error"]
            continue
        assert [hand["laterality"] for hand in got["hands"]] == [hand["laterality"] for hand in want["hands"]]
        for got_hand, want_hand in zip(got["hands"], want["hands"], strict=True):
            for name in JOINT_NAMES:
                probabilities = want_hand["probabilities"][name]
                np.testing.assert_allclose(got_hand["probabilities"][name], probabilities, atol=atol)
                margin = np.sort(probabilities)[-2:]
                if margin[1] - margin[0] > 2 * atol:  # a clear winner must stay the winner
                    assert got_hand["scores"][name] == want_hand["scores"][name]
