"""A model set for other TensorFlow runtimes: each model as a SavedModel with a `serving_default` signature.

`deepxray export --models DIR --format savedmodel --out OUT` writes, for each of the registry's models that DIR
holds:

    OUT/<name>/1/                 the SavedModel (`1`: TensorFlow Serving's numbered version folder, so
                                  `--model_base_path=OUT/<name>` serves it as it stands)
    OUT/<name>/model_card.json    the model card, copied
    OUT/<name>/signature.json     the `serving_default` signature: its input and named outputs

The signature takes the model's input as its card gives it (float32, [None, size, size, 1], keyed by the card's
input name, `view` or `crop`) and returns the artifact's output as it is served (the detector's keypoints, not its
heatmaps), keyed by the card's output name. Two models give more, from the same forward pass, as the service uses
them: the scorer the embedding it stores for similar-case search (`deepxray.models.runtime.SCORER_EMBEDDING_OF`),
the chest model the class activation map of each label (`heatmaps`, as `chest_findings_batch` gives them). Each
SavedModel is reloaded once written and must give the Keras model's outputs on a fixed batch, within `CHECK_ATOL`.

Written with Keras's `keras.export.ExportArchive` (the API under `Model.export(format="tf_saved_model")`), which
tracks the model's variables and saves a `tf.function` of the forward pass in inference mode; the custom layers
(`deepxray.models.layers`) are TensorFlow ops inside that function, so the SavedModel needs no DeepXRay code to load.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepxray.models.artifacts import CARD_FILE, INTENDED_USE, MODEL_FILE, ModelCard, read_card
from deepxray.models.registry import ALL_MODELS as EXPORTABLE_MODELS  # each exported where the model folder has it
from deepxray.models.runtime import SCORER_EMBEDDING_OF

FORMATS = ("savedmodel",)
SIGNATURE = "serving_default"
VERSION_FOLDER = "1"  # TF Serving serves the highest numbered folder under a model's base path
SIGNATURE_FILE = "signature.json"
# Outputs beyond the card's, as the service uses them (see `_served`).
EMBEDDING_OUTPUT = "embedding"  # ratingen_score
HEATMAPS_OUTPUT = "heatmaps"  # chest_findings
CHECK_ATOL = 1e-5  # exported against Keras, on the check batch; both run the same float32 graph on one machine


@dataclass(frozen=True)
class ExportedModel:
    """One model written: its tag, SavedModel folder, and the signature's inputs and outputs (name -> shape)."""

    tag: str
    path: Path
    inputs: dict[str, list]
    outputs: dict[str, list]

    def line(self) -> str:
        """The progress line: what was written and what its signature takes and gives."""

        def spec(tensors: dict[str, list]) -> str:
            return ", ".join(f"{name} float32 {_shape_text(shape)}" for name, shape in tensors.items())

        return f"wrote {self.path} ({self.tag}): {SIGNATURE}({spec(self.inputs)}) -> {spec(self.outputs)}"


def _shape_text(shape: list) -> str:
    return "[" + ", ".join("None" if size is None else str(size) for size in shape) + "]"


def models_to_export(models_dir: Path | str) -> list[str]:
    """The registry's models that `models_dir` holds, each with a model file and a readable card of its name;
    ValueError, one sentence, otherwise. Reads the cards only (no TensorFlow)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ValueError(f"model folder {models_dir} does not exist")
    held = [name for name in EXPORTABLE_MODELS if (models_dir / name).is_dir()]
    if not held:
        raise ValueError(f"model folder {models_dir} holds none of the models {', '.join(EXPORTABLE_MODELS)}")
    for name in held:
        artifact = models_dir / name
        missing = [file for file in (CARD_FILE, MODEL_FILE) if not (artifact / file).is_file()]
        if missing:
            raise ValueError(f"model folder {models_dir}: {artifact} lacks {' and '.join(missing)}")
        try:
            card = read_card(artifact)
        except (ValueError, TypeError) as error:
            raise ValueError(f"model folder {models_dir}: unreadable model card in {artifact} ({error})") from error
        if card.name != name:
            raise ValueError(f"model folder {models_dir}: the card in {artifact} is for {card.name!r}, not {name!r}")
    return held


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--out {out} is not empty: give a new or empty folder")


def export_model_set(
    models_dir: Path | str, out: Path | str, format: str = "savedmodel", progress: Callable[[str], None] = print
) -> list[ExportedModel]:
    """Export every registry model that `models_dir` holds into `out`, one `progress` line per model written.

    Everything is checked before TensorFlow is imported: the format, the folder and its cards, and that `out` is
    new or empty (ValueError, one sentence). Should an export fail, what this call wrote is removed.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    models_dir, out = Path(models_dir), Path(out)
    names = models_to_export(models_dir)
    _check_out_dir(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    exported = []
    try:
        for name in names:
            exported.append(export_savedmodel(models_dir / name, out / name))
            progress(exported[-1].line())
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for name in names:
                shutil.rmtree(out / name, ignore_errors=True)
        raise
    return exported


def export_savedmodel(artifact_dir: Path, out_dir: Path) -> ExportedModel:
    """One artifact as `out_dir/1/` (SavedModel), its card and its signature note; the SavedModel is reloaded and
    checked against the Keras model.

    Args:
        artifact_dir: The artifact (`model.keras` and `model_card.json`).
        out_dir: The model's folder in the export (made here).
    """
    import keras
    import tensorflow as tf

    from deepxray.models.artifacts import load_artifact

    try:
        model, card = load_artifact(artifact_dir)
    except ValueError as error:  # a model file Keras cannot read: the user's folder, not a fault of the export
        raise ValueError(f"cannot load {artifact_dir / MODEL_FILE}: {error}") from error
    size = int(card.input["shape"][0])
    input_name = card.input.get("name", "input")
    run, output_names, extra_about = _served(model, card)

    def serve(images):
        return dict(zip(output_names, run(images), strict=True))

    archive = keras.export.ExportArchive()
    archive.track(model)  # the extra outputs' networks share its layers, hence its variables
    signature = [tf.TensorSpec([None, size, size, 1], tf.float32, name=input_name)]
    endpoint = archive.add_endpoint(SIGNATURE, serve, input_signature=signature)
    saved_model = out_dir / VERSION_FOLDER
    out_dir.mkdir(parents=True)
    archive.write_out(str(saved_model), verbose=False)

    outputs = {name: spec.shape.as_list() for name, spec in endpoint.get_concrete_function().structured_outputs.items()}
    exported = ExportedModel(card.tag, saved_model, {input_name: [None, size, size, 1]}, outputs)
    _check_savedmodel(saved_model, input_name, serve, size)
    shutil.copy2(artifact_dir / CARD_FILE, out_dir / CARD_FILE)
    note = _signature_note(card, exported, extra_about, keras.__version__, tf.__version__)
    (out_dir / SIGNATURE_FILE).write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    return exported


def _output_names(model, card: ModelCard) -> list[str]:
    """The signature's names of the model's outputs: the card's output name for a model of one output, else the
    Keras model's own output names."""
    if len(model.outputs) == 1:
        return [card.output.get("name", "output")]
    return list(model.output_names)


def _served(model, card: ModelCard) -> tuple[Callable, list[str], dict[str, str]]:
    """What the signature runs (images -> its outputs, in order), their names, and what each extra output is.

    The extra outputs are what the service takes from the same forward pass: the scorer's embedding (the input of
    its `SCORER_EMBEDDING_OF` layer), the chest model's class activation maps ([None, labels, rows, columns], as
    `deepxray.models.chest_findings.chest_findings_batch` gives them).
    """
    import keras
    import tensorflow as tf

    names = _output_names(model, card)
    if card.name == "ratingen_score":
        network = keras.Model(model.inputs, [*model.outputs, model.get_layer(SCORER_EMBEDDING_OF).input])
        about = f"the input of the {SCORER_EMBEDDING_OF!r} layer (pooled features), as the service stores it for similar joints"
        return (lambda images: network(images, training=False)), [*names, EMBEDDING_OUTPUT], {EMBEDDING_OUTPUT: about}
    if card.name == "chest_findings":
        from deepxray.models.chest_findings import CAM_LAYER, CAM_STRIDE

        network = keras.Model(model.inputs, [model.output, model.get_layer(CAM_LAYER).output])

        def run(images):
            probabilities, maps = network(images, training=False)
            return probabilities, tf.transpose(maps, (0, 3, 1, 2))

        about = (
            f"each label's class activation map in logit units, [label, row, column] in the card's label order, one "
            f"cell per {CAM_STRIDE}x{CAM_STRIDE} view pixels; a label's logit is its map's mean plus its maximum, "
            f"and the map's peak is where the model saw the finding"
        )
        return run, [*names, HEATMAPS_OUTPUT], {HEATMAPS_OUTPUT: about}

    def run_model(images):
        outputs = model(images, training=False)
        return list(outputs) if isinstance(outputs, list | tuple) else [outputs]

    return run_model, names, {}


def _check_savedmodel(saved_model: Path, input_name: str, serve: Callable, size: int) -> None:
    """The reloaded SavedModel's `serving_default` must give what the Keras model gives, on a fixed batch."""
    import numpy as np
    import tensorflow as tf

    batch = np.random.default_rng(0).random((2, size, size, 1), dtype=np.float32)
    expected = {name: value.numpy() for name, value in serve(tf.constant(batch)).items()}
    got = tf.saved_model.load(str(saved_model)).signatures[SIGNATURE](**{input_name: tf.constant(batch)})
    for name, value in expected.items():
        difference = float(np.max(np.abs(got[name].numpy() - value)))
        if not difference <= CHECK_ATOL:
            raise RuntimeError(f"{saved_model}: output {name} differs from the Keras model's by {difference:g}")


def _signature_note(
    card: ModelCard, exported: ExportedModel, extra_about: dict[str, str], keras_version: str, tf_version: str
) -> dict:
    """`signature.json`: how to call the SavedModel, with what the card says of its input and output."""
    input_name, input_shape = next(iter(exported.inputs.items()))
    card_output = {key: value for key, value in card.output.items() if key not in ("name", "shape")}
    outputs = {name: {"dtype": "float32", "shape": shape} for name, shape in exported.outputs.items()}
    primary = next(iter(outputs))
    outputs[primary] |= card_output | {"labels": card.labels}
    for name, about in extra_about.items():
        outputs[name]["about"] = about
    return {
        "model": card.tag,
        "saved_model": VERSION_FOLDER,
        "signature": SIGNATURE,
        "inputs": {
            input_name: {"dtype": "float32", "shape": input_shape}
            | {key: value for key, value in card.input.items() if key in ("range", "preprocessing")}
        },
        "outputs": outputs,
        "exported_with": {"keras": keras_version, "tensorflow": tf_version},
        "intended_use": card.intended_use or INTENDED_USE,
    }
