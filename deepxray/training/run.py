"""`deepxray train`: build the training arrays, train the chosen models, export them as versioned artifacts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from deepxray.imaging.model_inputs import BODY_PART_VIEW, CROP_SIZE, DETECTOR_VIEW
from deepxray.labels import BODY_PARTS, JOINT_NAMES, RATINGEN_CLASSES
from deepxray.training.data import ManifestSource, SyntheticSource, TrainingSet, build_training_set

MODEL_VERSION = "1.0.0"
TARGETS = ("body-part", "joints", "scorer")
PREPROCESSING = "deepxray.imaging.model_inputs: decode, percentile normalisation (0.5-99.5 %) to [0, 1]"


@dataclass(frozen=True)
class TrainingPlan:
    targets: tuple[str, ...]
    out_dir: Path
    seed: int = 0
    epochs: dict | None = None  # per target; None = each trainer's default
    threads: int | None = None


def load_or_build(source, cache: Path | None, progress: bool = True) -> TrainingSet:
    """The training arrays of `source`, from `cache` when it exists (and written there otherwise)."""
    from tqdm import tqdm

    if cache is not None and Path(cache).is_file():
        print(f"using cached training arrays {cache}")
        return TrainingSet.load(cache)
    jobs = len(source.jobs())
    with tqdm(total=jobs, desc="preparing images", unit="img", disable=not progress) as bar:
        data = build_training_set(source, progress=bar.update)
    if cache is not None:
        data.save(cache)
    return data


def describe_source(source) -> dict:
    if isinstance(source, SyntheticSource):
        return {
            "kind": "synthetic phantoms rendered in memory (deepxray.phantoms)",
            "seed": source.seed,
            "images": source.n,
            "body_parts": source.body_parts,
            "score_distribution": source.distribution,
            "degradations": (
                "30 % turned by up to ±30°, 25 % downscaled 0.45-0.8x, 25 % JPEG quality 55-95"
                if source.degrade
                else "none"
            ),
        }
    return {"kind": "manifest", "directory": str(source.directory), "images": len(source.records)}


def train(plan: TrainingPlan, source: SyntheticSource | ManifestSource, cache: Path | None = None) -> dict:
    """Train `plan.targets` and write one artifact directory per model under `plan.out_dir`."""
    data = load_or_build(source, cache)
    print(
        f"training arrays: {len(data.body_labels)} images, {len(data.hand_ids)} hands, {data.scores.size} joint crops",
        flush=True,
    )

    from deepxray.models.artifacts import ModelCard, save_artifact
    from deepxray.training.common import configure_tensorflow, write_json

    configure_tensorflow(plan.seed, plan.threads)
    training_data = describe_source(source)
    epochs = plan.epochs or {}
    results = {}
    work = Path(plan.out_dir) / "_training"
    for target in plan.targets:
        start = time.perf_counter()
        print(f"== {target}", flush=True)
        kwargs = {"epochs": epochs[target]} if target in epochs else {}
        if target == "body-part":
            from deepxray.training.body_part import train_body_part

            model, metrics = train_body_part(data, work / "body_part", plan.seed, **kwargs)
            card = ModelCard(
                name="body_part",
                version=MODEL_VERSION,
                input={
                    "name": "view",
                    "shape": [BODY_PART_VIEW, BODY_PART_VIEW, 1],
                    "dtype": "float32",
                    "range": [0, 1],
                    "preprocessing": PREPROCESSING + "; letterboxed, padded with 0",
                },  # fmt: skip
                output={"name": "probabilities", "shape": [len(BODY_PARTS)], "calibration": "temperature scaling"},
                labels=list(BODY_PARTS),
                training_data=training_data,
                seed=plan.seed,
                validation_metrics=metrics,
            )
        elif target == "joints":
            from deepxray.training.joints import train_joint_detector

            model, metrics = train_joint_detector(data, work / "joint_detection", plan.seed, **kwargs)
            card = ModelCard(
                name="joint_detection",
                version=MODEL_VERSION,
                input={
                    "name": "view",
                    "shape": [DETECTOR_VIEW, DETECTOR_VIEW, 1],
                    "dtype": "float32",
                    "range": [0, 1],
                    "preprocessing": PREPROCESSING + "; right hands mirrored to a left "
                    "hand's orientation; letterboxed, padded with 0",
                },  # fmt: skip
                output={
                    "name": "keypoints",
                    "shape": [len(JOINT_NAMES), 3],
                    "columns": ["x", "y", "confidence"],
                    "coordinates": "view pixels, pixel centres at integers",
                },  # fmt: skip
                labels=list(JOINT_NAMES),
                training_data=training_data,
                seed=plan.seed,
                validation_metrics=metrics,
            )
        elif target == "scorer":
            from deepxray.training.scorer import train_scorer

            model, metrics = train_scorer(data, work / "ratingen_score", plan.seed, **kwargs)
            card = ModelCard(
                name="ratingen_score",
                version=MODEL_VERSION,
                input={
                    "name": "crop",
                    "shape": [CROP_SIZE, CROP_SIZE, 1],
                    "dtype": "float32",
                    "range": [0, 1],
                    "preprocessing": PREPROCESSING + "; square of 1.3x the median neighbouring-MCP distance "
                    "around the joint, turned so the finger points up",
                },  # fmt: skip
                output={
                    "name": "probabilities",
                    "shape": [len(RATINGEN_CLASSES)],
                    "loss": "cross-entropy + squared earth mover's distance (ordinal)",
                },  # fmt: skip
                labels=list(RATINGEN_CLASSES),
                training_data=training_data,
                seed=plan.seed,
                validation_metrics=metrics,
            )
        else:
            raise ValueError(f"unknown training target {target!r}; choose from {', '.join(TARGETS)} or all")
        seconds = time.perf_counter() - start
        card.validation_metrics["training_seconds"] = round(seconds, 1)
        save_artifact(model, Path(plan.out_dir) / card.name, card)
        results[card.name] = card.validation_metrics
        print(f"   {card.name}: {metrics} ({seconds:.0f} s)", flush=True)
    write_json(work / "summary.json", results)
    return results
