"""The three models, one entry each: the one place that says what a model is called at every layer.

A model's name (`body_part`, `joint_detection`, `ratingen_score`) is its training target, its artifact folder
under `models/`, the `name` on its card, its key in the service's answers, and (in CamelCase) its Ray Serve
deployment. Each entry also holds the input it is given (the builder in `deepxray.imaging.model_inputs` and its
size), what its card says about input and output, and how it is trained (`Training`). Importing this module does not import TensorFlow: the trainers import it when they run, and the network
builders are small wrappers that import Keras when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deepxray.imaging.model_inputs import (
    BODY_PART_VIEW,
    CHEST_VIEW,
    CROP_SIZE,
    DETECTOR_VIEW,
    body_part_view,
    chest_view,
    detector_view,
    joint_crops,
)
from deepxray.labels import BODY_PARTS, JOINT_NAMES, RATINGEN_CLASSES
from deepxray.labels import CHEST_FINDINGS as CHEST_FINDING_LABELS
from deepxray.models.artifacts import CARD_FILE, MODEL_FILE, read_card
from deepxray.training.body_part import train_body_part
from deepxray.training.chest_findings import train_chest_findings
from deepxray.training.joint_detection import train_joint_detection
from deepxray.training.ratingen_score import train_ratingen_score

PREPROCESSING = "deepxray.imaging.model_inputs: decode, percentile normalisation (0.5-99.5 %) to [0, 1]"


@dataclass(frozen=True)
class ModelInput:
    """What a model is given: its card name ("view" or "crop"), the side of the square (size, size, 1) float32
    input, the `deepxray.imaging.model_inputs` function that makes it, and how (beyond PREPROCESSING)."""

    name: str
    size: int
    build: Callable
    preprocessing: str


@dataclass(frozen=True)
class Training:
    """How a model is made: its trainer, the Keras network the trainer fits (which its epoch checkpoints hold),
    and how a fitted network becomes the saved artifact."""

    train: Callable  # train(data, out_dir, seed, epochs=...) -> (model, validation metrics)
    build_network: Callable  # () -> the untrained network
    export_network: Callable = field(default=lambda network: network)  # fitted network -> the saved artifact


@dataclass(frozen=True)
class ModelSpec:
    """One model at every layer: definition, training, deployment, artifact."""

    name: str  # training target, artifact folder, card name, key in the service's answers
    input: ModelInput
    output: dict  # the card's `output`
    labels: tuple[str, ...]  # the card's `labels`
    training: Training
    aliases: tuple[str, ...] = field(default=())  # older spellings the CLI still accepts

    @property
    def deployment(self) -> str:
        """The Ray Serve deployment's name: the model's name in CamelCase (`joint_detection` -> JointDetection)."""
        return "".join(part.title() for part in self.name.split("_"))

    @property
    def input_size(self) -> int:
        return self.input.size

    def card_input(self) -> dict:
        """The card's `input`."""
        return {
            "name": self.input.name,
            "shape": [self.input.size, self.input.size, 1],
            "dtype": "float32",
            "range": [0, 1],
            "preprocessing": f"{PREPROCESSING}; {self.input.preprocessing}",
        }


def _build_body_part_network():
    from deepxray.models.body_part import build_body_part_model

    return build_body_part_model()


def _build_heatmap_network():
    from deepxray.models.joint_detection import build_heatmap_net

    return build_heatmap_net()


def _build_detector(heatmap_net):
    from deepxray.models.joint_detection import build_detector

    return build_detector(heatmap_net)


def _build_ratingen_score_network():
    from deepxray.models.ratingen_score import build_scorer

    return build_scorer()


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="body_part",
            aliases=("body-part",),
            input=ModelInput("view", BODY_PART_VIEW, body_part_view, "letterboxed, padded with 0"),
            output={"name": "probabilities", "shape": [len(BODY_PARTS)], "calibration": "temperature scaling"},
            labels=BODY_PARTS,
            training=Training(train_body_part, _build_body_part_network),
        ),
        ModelSpec(
            name="joint_detection",
            aliases=("joints",),
            input=ModelInput(
                "view",
                DETECTOR_VIEW,
                detector_view,
                "right hands flipped to a left hand's orientation; letterboxed, padded with 0",
            ),
            output={
                "name": "keypoints",
                "shape": [len(JOINT_NAMES), 3],
                "columns": ["x", "y", "confidence"],
                "coordinates": "view pixels, pixel centres at integers",
            },
            labels=JOINT_NAMES,
            training=Training(train_joint_detection, _build_heatmap_network, _build_detector),
        ),
        ModelSpec(
            name="ratingen_score",
            aliases=("scorer",),
            input=ModelInput(
                "crop",
                CROP_SIZE,
                joint_crops,
                "square of 1.3x the median neighbouring-MCP distance around the joint, turned "
                "so the finger points up (a right hand's flipped)",
            ),
            output={
                "name": "probabilities",
                "shape": [len(RATINGEN_CLASSES)],
                "loss": "cross-entropy + squared earth mover's distance (ordinal)",
            },
            labels=RATINGEN_CLASSES,
            training=Training(train_ratingen_score, _build_ratingen_score_network),
        ),
    )
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
# Old spellings of the training targets (`deepxray train joints`) -> the model's name.
ALIASES: dict[str, str] = {alias: spec.name for spec in MODELS.values() for alias in spec.aliases}


def _build_chest_findings_network():
    from deepxray.models.chest_findings import build_chest_findings_model

    return build_chest_findings_model()


# The chest-findings model: not one of the hand-scoring set above (`MODELS`, which the service, the evaluation, the
# batch scorer and the model-set checks take as "the models"); it trains on chest phantoms rendered in memory
# (`deepxray train chest_findings --synthetic N`), not on the hand training arrays.
CHEST_FINDINGS = ModelSpec(
    name="chest_findings",
    input=ModelInput("view", CHEST_VIEW, chest_view, "the whole film letterboxed, padded with 0"),
    output={
        "name": "probabilities",
        "shape": [len(CHEST_FINDING_LABELS)],
        "activation": "sigmoid per label (multi-label)",
        "heatmaps": "class activation maps: layer `cam`, (32, 32, 14) logits per cell of the view (8 pixels each); "
        "a label's logit is its map's mean plus its maximum",
    },
    labels=CHEST_FINDING_LABELS,
    training=Training(train_chest_findings, _build_chest_findings_network),
)
# Every model DeepXRay trains: the three hand models and the chest-findings model.
ALL_MODELS: dict[str, ModelSpec] = {**MODELS, CHEST_FINDINGS.name: CHEST_FINDINGS}
ALL_MODEL_NAMES: tuple[str, ...] = tuple(ALL_MODELS)


def resolve(name: str) -> ModelSpec:
    """The entry of a model by its name or an old alias; ValueError naming the choices otherwise."""
    spec = ALL_MODELS.get(ALIASES.get(name, name))
    if spec is None:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(ALL_MODEL_NAMES)}")
    return spec


def check_model_set(directory: Path | str, role: str = "model folder") -> Path:
    """`directory` when it holds an artifact of each model with a readable card; else ValueError, one sentence.

    Reads the cards only (no TensorFlow), so a command can refuse a bad folder before any slow work.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{role} {directory} does not exist")
    for name in MODEL_NAMES:
        artifact = directory / name
        missing = [file for file in (CARD_FILE, MODEL_FILE) if not (artifact / file).is_file()]
        if missing:
            raise ValueError(
                f"{role} {directory} is not a DeepXRay model set: {artifact} lacks {' and '.join(missing)}"
            )
        try:
            card = read_card(artifact)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{role} {directory}: unreadable model card in {artifact} ({error})") from error
        if card.name != name:
            raise ValueError(f"{role} {directory}: the card in {artifact} is for {card.name!r}, not {name!r}")
    return directory
