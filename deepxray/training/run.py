"""`deepxray train`: build the training arrays, train the chosen models, export them as versioned artifacts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from deepxray.models.registry import ALL_MODEL_NAMES, ALL_MODELS
from deepxray.training.cache import load_or_prepare
from deepxray.training.chest_data import ChestSource, load_or_build_chest
from deepxray.training.chest_findings import LOCALISATION
from deepxray.training.data import ManifestSource, SyntheticSource, TrainingSet, build_training_set

MODEL_VERSION = "1.0.0"


@dataclass(frozen=True)
class TrainingPlan:
    targets: tuple[str, ...]  # model names (deepxray.models.registry.ALL_MODEL_NAMES)
    out_dir: Path
    seed: int = 0
    epochs: dict | None = None  # per target; None = each trainer's default
    threads: int | None = None


def load_or_build(source, cache: Path | None, progress: bool = True) -> TrainingSet:
    """The training arrays of `source`, from `cache` when it holds what this source and this code prepare (and
    written there otherwise; see `deepxray.training.cache`)."""
    from tqdm import tqdm

    def prepare() -> TrainingSet:
        with tqdm(total=len(source.jobs()), desc="preparing images", unit="img", disable=not progress) as bar:
            return build_training_set(source, progress=bar.update)

    return load_or_prepare(cache, repr(source), prepare, TrainingSet.load, TrainingSet.save, what="training arrays")


def describe_source(source) -> dict:
    if isinstance(source, ChestSource):
        return source.describe() | {"localisation": LOCALISATION}
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


def train(
    plan: TrainingPlan, source: SyntheticSource | ManifestSource | ChestSource, cache: Path | None = None
) -> dict:
    """Train `plan.targets` and write one artifact directory per model under `plan.out_dir`. A `ChestSource`
    (chest films rendered in memory) trains the chest-findings model only."""
    if isinstance(source, ChestSource):
        if tuple(plan.targets) != ("chest_findings",):
            raise ValueError("chest films train chest_findings only")
        data = load_or_build_chest(source, cache)
        print(f"chest films: {len(data.labels)}, positives per label {data.labels.sum(axis=0).tolist()}", flush=True)
    else:
        if "chest_findings" in plan.targets:
            raise ValueError("chest_findings trains on chest films rendered in memory: give --synthetic N")
        data = load_or_build(source, cache)
        print(
            f"training arrays: {len(data.body_labels)} images, {len(data.hand_ids)} hands, "
            f"{data.scores.size} joint crops",
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
        if target not in ALL_MODELS:
            raise ValueError(f"unknown training target {target!r}; choose from {', '.join(ALL_MODEL_NAMES)} or all")
        spec = ALL_MODELS[target]
        start = time.perf_counter()
        print(f"== {target}", flush=True)
        kwargs = {"epochs": epochs[target]} if target in epochs else {}
        model, metrics = spec.training.train(data, work / spec.name, plan.seed, **kwargs)
        card_fields = metrics.pop("card", {})  # a trainer's own card fields (chest_findings: thresholds)
        card = ModelCard(
            name=spec.name,
            version=MODEL_VERSION,
            input=spec.card_input(),
            output=dict(spec.output),
            labels=list(spec.labels),
            training_data=training_data,
            seed=plan.seed,
            validation_metrics=metrics,
            **card_fields,
        )
        seconds = time.perf_counter() - start
        card.validation_metrics["training_seconds"] = round(seconds, 1)
        save_artifact(model, Path(plan.out_dir) / card.name, card)
        results[card.name] = card.validation_metrics
        print(f"   {card.name}: {metrics} ({seconds:.0f} s)", flush=True)
    write_json(work / "summary.json", results)
    return results
