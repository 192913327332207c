"""Versioned model artifacts: a directory holding `model.keras` and `model_card.json`.

The card says what the model is, what it takes and gives, what it was trained on, how it scored on held-out
data, and that it is for research use only.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MODEL_FILE = "model.keras"
CARD_FILE = "model_card.json"
INTENDED_USE = "research use only; trained on synthetic radiographs"
REQUIRED_CARD_FIELDS = (
    "name",
    "version",
    "input",
    "output",
    "labels",
    "training_data",
    "seed",
    "validation_metrics",
    "date",
    "intended_use",
)


# Card fields only some models have; left out of a card where they are None, so the other cards stay as they were.
OPTIONAL_FIELDS = ("thresholds", "threshold_rule", "not_drawn")


def shipped_models_dir() -> Path:
    """The shipped demo models: `models/` beside the package.

    Reads no environment: the one variable for another model folder, `DEEPXRAY_MODELS_DIR`, belongs to
    `deepxray.settings.Settings.models_dir`.
    """
    return Path(__file__).resolve().parents[2] / "models"


@dataclass
class ModelCard:
    name: str
    version: str
    input: dict
    output: dict
    labels: list
    training_data: dict
    seed: int
    validation_metrics: dict
    date: str = field(default_factory=lambda: dt.date.today().isoformat())
    intended_use: str = INTENDED_USE
    framework: dict = field(default_factory=dict)
    limitations: str = (
        "Trained and validated on procedurally rendered phantoms only; no figure on this card is a measure of "
        "accuracy on real radiographs."
    )
    # Multi-label models (chest_findings): each label's decision threshold on its probability, how they were
    # chosen, and the labels the training data never showed (label -> why). None elsewhere, and then not written.
    thresholds: dict | None = None
    threshold_rule: str | None = None
    not_drawn: dict | None = None

    @property
    def tag(self) -> str:
        """`name@version`, as the service reports it."""
        return f"{self.name}@{self.version}"


def save_artifact(model, directory: Path, card: ModelCard) -> Path:
    """Write the model and its card into `directory` (created if needed)."""
    import keras
    import tensorflow as tf

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    card.framework = {"keras": keras.__version__, "tensorflow": tf.__version__}
    model.save(directory / MODEL_FILE)
    fields = {key: value for key, value in asdict(card).items() if value is not None or key not in OPTIONAL_FIELDS}
    (directory / CARD_FILE).write_text(json.dumps(fields, indent=2) + "\n", encoding="utf-8")
    return directory


def read_card(directory: Path) -> ModelCard:
    """The card of an artifact; a clear error when it is missing or incomplete."""
    path = Path(directory) / CARD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no model card at {path}: is {directory} a DeepXRay model artifact?")
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [key for key in REQUIRED_CARD_FIELDS if key not in data]
    if missing:
        raise ValueError(f"model card {path} lacks {', '.join(missing)}")
    return ModelCard(**data)


def load_artifact(directory: Path):
    """(Keras model, card) of an artifact directory. Imports TensorFlow: call it where the model is used."""
    import keras

    import deepxray.models.layers  # noqa: F401  (registers the custom layers before loading)

    directory = Path(directory)
    card = read_card(directory)
    model_path = directory / MODEL_FILE
    if not model_path.is_file():
        raise FileNotFoundError(f"no {MODEL_FILE} in {directory}")
    return keras.saving.load_model(model_path, compile=False), card
