"""`deepxray export --format savedmodel`: each shipped model as a SavedModel whose `serving_default` signature
gives what the Keras model gives on the golden phantoms' inputs; bad input refused in one sentence."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepxray.cli import main
from deepxray.imaging.decode import decode_image
from deepxray.imaging.model_inputs import NormalisedImage
from deepxray.labels import JOINT_NAMES
from deepxray.models.artifacts import CARD_FILE, read_card, shipped_models_dir
from deepxray.models.export import EMBEDDING_OUTPUT, EXPORTABLE_MODELS, HEATMAPS_OUTPUT, SIGNATURE, SIGNATURE_FILE
from deepxray.models.runtime import SCORER_EMBEDDING_OF
from deepxray.phantoms.phantom import Phantom, render_phantom
from deepxray.training.golden import GOLDEN_IMAGES, GOLDEN_SEED

SHIPPED = shipped_models_dir()
ATOL = 1e-5  # the same float32 graph in both runtimes, on one machine


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, list[str]]:
    """The shipped models exported through the CLI, and the lines it printed."""
    out = tmp_path_factory.mktemp("export") / "savedmodel"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", "--models", str(SHIPPED), "--format", "savedmodel", "--out", str(out)])
    assert code == 0
    return out, printed.getvalue().splitlines()


@pytest.fixture(scope="module")
def golden_films() -> list[tuple[NormalisedImage, Phantom]]:
    """The golden phantoms as the service decodes and normalises them (as 16-bit PNG uploads, pictures as 8-bit
    colour), each with its labels."""
    films = []
    for index, body_part, distribution in GOLDEN_IMAGES:
        phantom = render_phantom(GOLDEN_SEED, index, body_part, distribution)
        image = cv2.cvtColor(phantom.image, cv2.COLOR_RGB2BGR) if phantom.image.ndim == 3 else phantom.image
        pixels = decode_image(cv2.imencode(".png", image)[1].tobytes()).pixels
        films.append((NormalisedImage.from_pixels(pixels), phantom))
    return films


def golden_inputs(name: str, films: list[tuple[NormalisedImage, Phantom]]) -> np.ndarray:
    """(n, S, S) inputs of a model, made from the golden films by its registry input builder: the view of every
    film, or the crops of the joints of every hand on them."""
    spec = EXPORTABLE_MODELS[name]
    inputs = []
    for image, phantom in films:
        if spec.input.name == "crop":
            for hand in phantom.hands or ():
                inputs.extend(spec.input.build(image, hand.centers, JOINT_NAMES, mirrored=hand.laterality == "R"))
        else:
            view = spec.input.build(image)
            inputs.append(getattr(view, "pixels", view))  # the detector's view comes with its way back
    return np.stack(inputs).astype(np.float32)


def test_one_line_per_model_written(exported):
    out, lines = exported
    held = [name for name in EXPORTABLE_MODELS if (SHIPPED / name).is_dir()]
    assert [line.split()[1] for line in lines] == [str(out / name / "1") for name in held]
    assert all(f"{SIGNATURE}(" in line for line in lines), lines
    assert sorted(path.name for path in out.iterdir()) == sorted(held)


@pytest.mark.parametrize("name", list(EXPORTABLE_MODELS))
def test_serving_default_gives_the_keras_outputs_on_the_golden_inputs(name, exported, golden_films):
    import tensorflow as tf

    from deepxray.models.runtime import LoadedModel

    if not (SHIPPED / name).is_dir():
        pytest.skip(f"no {name} among the shipped models")
    out, _ = exported
    card = read_card(SHIPPED / name)
    assert (out / name / CARD_FILE).read_bytes() == (SHIPPED / name / CARD_FILE).read_bytes()

    keras_model = LoadedModel(SHIPPED / name, embedding_of=SCORER_EMBEDDING_OF if name == "ratingen_score" else None)
    inputs = golden_inputs(name, golden_films)
    assert len(inputs) >= len(golden_films)
    expected = {card.output["name"]: keras_model.predict(inputs)}  # as the service computes them, per model
    if name == "ratingen_score":
        expected[EMBEDDING_OUTPUT] = np.stack(
            [embedding for _, embedding in keras_model.predict_with_embedding(inputs)]
        )
    if name == "chest_findings":
        from deepxray.models.chest_findings import chest_findings_batch

        expected[card.output["name"]], expected[HEATMAPS_OUTPUT] = chest_findings_batch(keras_model, inputs)

    signature = tf.saved_model.load(str(out / name / "1")).signatures[SIGNATURE]
    input_name = card.input["name"]
    assert list(signature.structured_input_signature[1]) == [input_name]
    got = {key: value.numpy() for key, value in signature(**{input_name: tf.constant(inputs[..., None])}).items()}
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, atol=ATOL, err_msg=key)

    note = json.loads((out / name / SIGNATURE_FILE).read_text(encoding="utf-8"))
    assert (note["model"], note["signature"], note["saved_model"]) == (card.tag, SIGNATURE, "1")
    assert note["inputs"][input_name]["shape"] == [None, *card.input["shape"]]
    assert {key: value["shape"] for key, value in note["outputs"].items()} == {
        key: spec.shape.as_list() for key, spec in signature.structured_outputs.items()
    }


# --- one sentence on stderr and exit code 2 for bad input, nothing written ------------------------------------------


def _model_set_with(folder: Path, broken: str) -> Path:
    """A copy of the shipped body-part artifact, broken as named."""
    artifact = folder / "models" / "body_part"
    artifact.mkdir(parents=True)
    shutil.copy2(SHIPPED / "body_part" / CARD_FILE, artifact / CARD_FILE)
    if broken == "wrong card":
        card = json.loads((artifact / CARD_FILE).read_text()) | {"name": "ratingen_score"}
        (artifact / CARD_FILE).write_text(json.dumps(card))
        shutil.copy2(SHIPPED / "body_part" / "model.keras", artifact / "model.keras")
    return folder / "models"


@pytest.mark.parametrize(
    ("models", "export_format", "out_holds", "message"),
    [
        ("{tmp}/missing", "savedmodel", None, r"model folder .*missing does not exist$"),
        ("{tmp}", "savedmodel", None, r"model folder .* holds none of the models body_part, joint_detection, "),
        ("no model file", "savedmodel", None, r"model folder .*: .*body_part lacks model.keras$"),
        ("wrong card", "savedmodel", None, r"the card in .*body_part is for 'ratingen_score', not 'body_part'$"),
        ("{shipped}", "onnx", None, r"unknown export format 'onnx'; choose from savedmodel$"),
        ("{shipped}", "savedmodel", "a file", r"--out .*out is not empty: give a new or empty folder$"),
        ("{shipped}", "savedmodel", "nothing: it is a file", r"--out .*out is a file: give a new or empty folder$"),
    ],
    ids=[
        "missing folder",
        "no models",
        "no model file",
        "card of another model",
        "unknown format",
        "out not empty",
        "out is a file",
    ],
)
def test_export_errors_are_one_sentence(models, export_format, out_holds, message, tmp_path, capsys):
    out = tmp_path / "out"
    if models in ("no model file", "wrong card"):
        models = str(_model_set_with(tmp_path / "set", models))
    models = models.format(tmp=tmp_path, shipped=SHIPPED)
    if out_holds == "a file":
        out.mkdir()
        (out / "kept.txt").write_text("mine")
    elif out_holds is not None:
        out.write_text("mine")
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    code = main(["export", "--models", models, "--format", export_format, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("deepxray: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err.strip()), err
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before  # nothing written
