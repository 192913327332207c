"""An early checkpoint of a training run, exported as a model set: a deliberately weaker baseline to compare with.

Training writes each model's weights after every epoch to `MODELS/_training/<name>/checkpoints/epochNN.weights.h5`
(`deepxray.training.common.fit`). `deepxray checkpoint --models MODELS --epoch N --out DIR` rebuilds each network,
loads those weights and saves the three as artifacts with the cards of `MODELS` (version `...-epochNN`).
A run's work files stay on the machine that trained (`models/_training/` is not shipped): the README makes a
small model set first and compares its first epoch with the shipped models.
"""

from __future__ import annotations

from pathlib import Path

from deepxray.models.artifacts import read_card, save_artifact
from deepxray.models.registry import MODELS, check_model_set


def checkpoint_path(models_dir: Path, name: str, epoch: int) -> Path:
    """Where the training run that wrote `models_dir` left model `name`'s weights after `epoch`."""
    return Path(models_dir) / "_training" / name / "checkpoints" / f"epoch{epoch:02d}.weights.h5"


def export_checkpoint(models_dir: Path, epoch: int, out_dir: Path) -> Path:
    """Rebuild each model with the weights it had after `epoch` and save the three as artifacts in `out_dir`.

    Every input is checked before anything is written; a missing folder, artifact or checkpoint is a ValueError
    of one sentence.
    """
    if epoch < 1:
        raise ValueError(f"--epoch must be 1 or more, not {epoch}")
    models_dir = check_model_set(models_dir)
    weights = {name: checkpoint_path(models_dir, name, epoch) for name in MODELS}
    missing = [name for name, path in weights.items() if not path.is_file()]
    if missing:
        raise ValueError(
            f"no epoch-{epoch} checkpoint of {', '.join(missing)} in {models_dir} "
            f"(looked for {weights[missing[0]]}); the run that trained {models_dir} did not keep that epoch"
        )
    for name, spec in MODELS.items():
        network = spec.training.build_network()
        network.load_weights(weights[name])
        card = read_card(models_dir / name)
        card.version = f"{card.version}-epoch{epoch:02d}"
        card.validation_metrics = {"note": f"weights after epoch {epoch} of the run that made {name}; not validated"}
        save_artifact(spec.training.export_network(network), Path(out_dir) / name, card)
    return Path(out_dir)
