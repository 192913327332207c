"""An early checkpoint of a training run, exported as a model set: a deliberately weaker baseline to compare with."""

from __future__ import annotations

from pathlib import Path

from deepxray.models.artifacts import MODEL_NAMES, read_card, save_artifact


def export_checkpoint(models_dir: Path, epoch: int, out_dir: Path) -> Path:
    """Rebuild each model with the weights it had after `epoch` and save the three as artifacts in `out_dir`.

    Needs the training run's work files (`MODELS/_training/*/checkpoints/`), which stay on the machine that trained.
    """
    from deepxray.models.body_part import build_body_part_model
    from deepxray.models.joint_detection import build_detector, build_heatmap_net
    from deepxray.models.ratingen_score import build_scorer

    builders = {
        "body_part": build_body_part_model,
        "joint_detection": build_heatmap_net,
        "ratingen_score": build_scorer,
    }
    for name in MODEL_NAMES:
        weights = Path(models_dir) / "_training" / name / "checkpoints" / f"epoch{epoch:02d}.weights.h5"
        if not weights.is_file():
            raise FileNotFoundError(f"no checkpoint {weights}: was {models_dir} trained on this machine?")
        model = builders[name]()
        model.load_weights(weights)
        if name == "joint_detection":
            model = build_detector(model)
        card = read_card(Path(models_dir) / name)
        card.version = f"{card.version}-epoch{epoch:02d}"
        card.validation_metrics = {"note": f"weights after epoch {epoch} of the run that made {name}; not validated"}
        save_artifact(model, Path(out_dir) / name, card)
    return Path(out_dir)
