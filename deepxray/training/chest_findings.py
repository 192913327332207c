"""Training the chest-findings model on chest phantoms rendered in memory, and choosing each label's threshold.

The films come from `deepxray.phantoms.chest` (small films, 0.18-0.28 of the 2048x2560 detector, so the
view sees coarser and finer films than it will; a quarter of them JPEG-compressed), at the "balanced" prevalence
so the rare findings have positives to learn from, and pass through the serving preprocessing
(`deepxray.imaging.model_inputs.chest_view`). Each label's threshold maximises the F1 the label would have at the
registry's prevalence (`registry_prevalence`), computed from the held-out split's true- and false-positive rates:
the validation films are balanced, the films the model will meet are not, and precision depends on prevalence.

The loss is the labels' binary cross-entropy plus a localisation term on the class activation maps: the
generator records where each finding is (`region_masks`), so each map cell learns whether it lies in one of its
label's boxes, and the map's peak is asked to lie inside them (multiple-instance style: the best cell inside says
yes, the best outside no). Trained on the labels alone (a pilot of 6 epochs), the maps of findings judged against
the whole chest peaked wherever their wide receptive field could see them from (a cardiomegaly's in the lateral
right lung): 20 % of true positives had their peak inside the finding. With the per-cell term alone, a label's
maximum (half of its logit) settled on one fixed cell outside the finding for effusions and consolidations (68 %).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deepxray.imaging.model_inputs import CHEST_VIEW, ChestView, NormalisedImage, chest_view
from deepxray.labels import CHEST_FINDINGS, NO_FINDING
from deepxray.training.cache import STAMP_KEY, load_or_prepare
from deepxray.training.data import validation_mask

CAM_STRIDE = 8  # view pixels per map cell (deepxray.models.chest_findings.CAM_STRIDE; no Keras import here)
CAM_CELLS = CHEST_VIEW // CAM_STRIDE
# Weight of the localisation term against the labels' cross-entropy, and how much more a cell inside a box counts
# than one outside (a finding covers few cells).
LOCALISATION_WEIGHT = 1.0
INSIDE_WEIGHT = 4.0

VALIDATION_SHARE = 0.15
THRESHOLD_RULE = (
    "maximises the label's F1 at the registry prevalence (CheXpert's positive rates), from the validation split's "
    "true- and false-positive rates"
)
NOT_DRAWN_REASON = (
    "not drawn by the phantom generator: on a film pneumonia is consolidation or opacity read with the clinical "
    "picture, which a phantom lacks; the model never saw a positive, its output is not a finding"
)


@dataclass(frozen=True)
class ChestSource:
    """`n` chest films with findings rendered in memory from the set `seed` (`deepxray train chest_findings
    --synthetic N`)."""

    seed: int
    n: int
    distribution: str = "balanced"
    film_scale: tuple[float, float] = (0.18, 0.28)  # of the full 2048x2560 detector, drawn per film
    jpeg_share: float = 0.25

    def jobs(self) -> list[int]:
        return list(range(self.n))

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The view (float16), label vector (int8) and region masks (`region_masks`) of film `index`, the view as
        serving would see the film."""
        from deepxray.phantoms.chest import render_chest_phantom

        rng = np.random.default_rng([self.seed, index, 7031])  # the film's size and compression, apart from it
        scale = float(rng.uniform(*self.film_scale))
        phantom = render_chest_phantom(self.seed, index, self.distribution, film_scale=scale)
        pixels = phantom.image
        if rng.random() < self.jpeg_share:
            from deepxray.phantoms.writers import to_8bit

            _, encoded = cv2.imencode(".jpg", to_8bit(pixels), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 96))])
            pixels = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
        view = chest_view(NormalisedImage.from_pixels(pixels))
        findings = phantom.extra["findings"]
        labels = np.asarray(findings["labels"], dtype=np.int8)
        masks = region_masks({region["label"]: region["boxes"] for region in findings["regions"]}, view)
        return view.pixels.astype(np.float16), labels, masks

    def describe(self) -> dict:
        lo, hi = self.film_scale
        return {
            "kind": "synthetic chest phantoms with findings rendered in memory (deepxray.phantoms.chest)",
            "seed": self.seed,
            "images": self.n,
            "findings_distribution": self.distribution,
            "film_size": f"{lo:.2f}-{hi:.2f} of 2048x2560 (pixel spacing scaled to match)",
            "degradations": f"{self.jpeg_share:.0%} JPEG quality 55-95",
            "localisation": "each label's class activation map supervised by the generator's region boxes "
            f"(per-cell and peak cross-entropy, weight {LOCALISATION_WEIGHT})",
        }


def region_masks(regions: dict, view: ChestView) -> np.ndarray:
    """(14, CAM_CELLS, CAM_CELLS) uint8: 1 where a map cell's centre lies in one of its label's boxes (film
    pixels, moved into the view), and at least the cell holding each box's centre."""
    masks = np.zeros((len(CHEST_FINDINGS), CAM_CELLS, CAM_CELLS), np.uint8)
    centres = (np.arange(CAM_CELLS) + 0.5) * CAM_STRIDE - 0.5  # view pixels
    for label, boxes in regions.items():
        j = CHEST_FINDINGS.index(label)
        for x0, y0, x1, y1 in boxes:
            (u0, v0), (u1, v1) = view.transform.to_view(np.array([[x0 - 0.5, y0 - 0.5], [x1 - 0.5, y1 - 0.5]]))
            rows = (centres >= v0) & (centres < v1)
            cols = (centres >= u0) & (centres < u1)
            masks[j][np.ix_(rows, cols)] = 1
            cy, cx = ((v0 + v1) / 2 + 0.5) / CAM_STRIDE, ((u0 + u1) / 2 + 0.5) / CAM_STRIDE
            masks[j, int(np.clip(cy, 0, CAM_CELLS - 1)), int(np.clip(cx, 0, CAM_CELLS - 1))] = 1
    return masks


@dataclass
class ChestTrainingSet:
    views: np.ndarray  # (n, CHEST_VIEW, CHEST_VIEW) float16
    labels: np.ndarray  # (n, 14) int8, CHEST_FINDINGS order
    ids: np.ndarray  # (n,) film index
    masks: np.ndarray  # (n, 14, CAM_CELLS, CAM_CELLS) uint8: where each finding is (`region_masks`)

    def save(self, path: Path, stamp: str = "") -> None:
        """The films as an .npz, with the stamp of what prepared them (`deepxray.training.cache`)."""
        with open(path, "wb") as file:  # a file, not a name: np.savez would append ".npz" to another suffix
            np.savez(file, views=self.views, labels=self.labels, ids=self.ids, masks=self.masks, **{STAMP_KEY: stamp})

    @classmethod
    def load(cls, path: Path) -> ChestTrainingSet:
        with np.load(path) as data:
            return cls(data["views"], data["labels"], data["ids"], data["masks"])


def _init_worker() -> None:
    cv2.setNumThreads(1)


def build_chest_set(
    source: ChestSource, workers: int | None = None, progress: Callable[[int], None] | None = None
) -> ChestTrainingSet:
    """Render and prepare every film of `source`, one process per core, in index order."""
    jobs = source.jobs()
    workers = workers or os.cpu_count() or 1
    views = np.empty((len(jobs), CHEST_VIEW, CHEST_VIEW), np.float16)
    labels = np.empty((len(jobs), len(CHEST_FINDINGS)), np.int8)
    masks = np.empty((len(jobs), len(CHEST_FINDINGS), CAM_CELLS, CAM_CELLS), np.uint8)
    pool = None
    if workers == 1:
        _init_worker()
        iterator = map(source.example, jobs)
    else:  # a fork server, not fork: see deepxray.training.data.build_training_set
        pool = multiprocessing.get_context("forkserver").Pool(workers, initializer=_init_worker)
        iterator = pool.imap(source.example, jobs, chunksize=8)
    try:
        for i, (view, label, mask) in enumerate(iterator):
            views[i], labels[i], masks[i] = view, label, mask
            if progress:
                progress(1)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return ChestTrainingSet(views, labels, np.asarray(jobs), masks)


def load_or_build_chest(source: ChestSource, cache: Path | None = None, progress: bool = True) -> ChestTrainingSet:
    """The films of `source`, from `cache` when it holds what this source and this code render (and written there
    otherwise; see `deepxray.training.cache`)."""
    from tqdm import tqdm

    def render() -> ChestTrainingSet:
        with tqdm(total=source.n, desc="rendering chest films", unit="img", disable=not progress) as bar:
            return build_chest_set(source, progress=bar.update)

    return load_or_prepare(
        cache, repr(source), render, ChestTrainingSet.load, ChestTrainingSet.save, what="chest films"
    )


def registry_prevalence() -> np.ndarray:
    """Each label's positive rate at the generator's "clinical" (registry) distribution, in CHEST_FINDINGS order;
    No Finding's follows from the others (it is their joint absence); labels not drawn are 0."""
    from deepxray.phantoms.chest import CLINICAL_PREVALENCE, NORMAL_SHARE, SIGNS

    normal = NORMAL_SHARE["clinical"]
    rates = {label: (1 - normal) * min(CLINICAL_PREVALENCE[label] / (1 - normal), 1.0) for label in SIGNS}
    none = normal + (1 - normal) * float(np.prod([1 - min(CLINICAL_PREVALENCE[s] / (1 - normal), 1.0) for s in SIGNS]))
    rates[NO_FINDING] = none
    return np.array([rates.get(label, 0.0) for label in CHEST_FINDINGS])


def f1_at_prevalence(tpr: np.ndarray, fpr: np.ndarray, prevalence: float) -> np.ndarray:
    """The F1 a rule with these true- and false-positive rates has where positives make `prevalence` of cases:
    2·π·TPR / (π·(1 + TPR) + (1 − π)·FPR)."""
    tpr, fpr = np.asarray(tpr, dtype=float), np.asarray(fpr, dtype=float)
    denominator = prevalence * (1 + tpr) + (1 - prevalence) * fpr
    return np.where(denominator > 0, 2 * prevalence * tpr / np.maximum(denominator, 1e-12), 0.0)


def choose_threshold(scores: np.ndarray, truth: np.ndarray, prevalence: float) -> float:
    """The threshold on `scores` maximising `f1_at_prevalence` on held-out data (0.5 without both classes):
    midway between the chosen score and the next lower one, so it does not sit on a validation film's score."""
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth).astype(bool)
    if truth.all() or not truth.any() or prevalence <= 0:
        return 0.5
    candidates = np.unique(scores)[::-1]  # descending: "positive when score >= candidate"
    tpr = np.array([(scores[truth] >= c).mean() for c in candidates])
    fpr = np.array([(scores[~truth] >= c).mean() for c in candidates])
    best = int(np.argmax(f1_at_prevalence(tpr, fpr, prevalence)))
    lower = candidates[best + 1] if best + 1 < len(candidates) else 0.0
    return float((candidates[best] + lower) / 2)


def train_chest_findings(data: ChestTrainingSet, out_dir: Path, seed: int, epochs: int = 16, batch: int = 32):
    """Returns the trained model (uncompiled, ready to save) and its validation metrics; the metrics' "card"
    entry holds the card's `thresholds` and `not_drawn`."""
    import keras
    import tensorflow as tf

    from deepxray.models.chest_findings import CAM_LAYER, build_chest_findings_model, chest_findings_batch
    from deepxray.phantoms.chest import NOT_DRAWN
    from deepxray.training.augment import intensity
    from deepxray.training.common import fit
    from evaluation.chest import auroc

    held = validation_mask(data.ids, share=VALIDATION_SHARE, seed=seed)
    x = data.views
    y = data.labels.astype(np.float32)
    # The localisation term covers the findings with regions: not No Finding, not the labels never drawn.
    located = np.array([label not in (NO_FINDING, *NOT_DRAWN) for label in CHEST_FINDINGS], np.float32)

    def pipeline(rows: np.ndarray, shuffle: bool, augment: bool):
        ds = tf.data.Dataset.from_tensor_slices((x[rows], y[rows], data.masks[rows]))
        if shuffle:
            ds = ds.shuffle(int(rows.sum()), seed=seed, reshuffle_each_iteration=True)

        def prepare(images, labels, masks):
            images = tf.cast(images, tf.float32)[..., None]
            maps = tf.transpose(tf.cast(masks, tf.float32), [0, 2, 3, 1])  # (batch, cells, cells, labels)
            return (intensity(images) if augment else images), {"probabilities": labels, CAM_LAYER: maps}

        return ds.batch(batch).map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def localisation_loss(target, logits):
        """Each located label's map against its boxes: a per-cell cross-entropy (cells inside weighted more), and
        for the peak, as in multiple-instance learning: a present finding's best cell inside its boxes should say
        yes and its best cell outside them no; an absent finding's best cell anywhere no."""
        cells = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
        per_cell = tf.reduce_mean(cells * (1.0 + INSIDE_WEIGHT * target), axis=[1, 2])  # (batch, labels)
        present = tf.cast(tf.reduce_max(target, axis=[1, 2]) > 0, logits.dtype)
        inside = tf.reduce_max(logits - 1e4 * (1.0 - target), axis=[1, 2])
        outside = tf.reduce_max(logits - 1e4 * target, axis=[1, 2])
        peak = present * (tf.nn.softplus(-inside) + tf.nn.softplus(outside)) + (1.0 - present) * tf.nn.softplus(
            tf.reduce_max(logits, axis=[1, 2])
        )
        return tf.reduce_sum((per_cell + peak) * located, axis=-1) / float(located.sum())

    model = build_chest_findings_model(CHEST_VIEW)
    trainer = keras.Model(model.inputs, {"probabilities": model.output, CAM_LAYER: model.get_layer(CAM_LAYER).output})
    steps = max(1, int(np.ceil((~held).sum() / batch))) * epochs
    trainer.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
        loss={"probabilities": keras.losses.BinaryCrossentropy(), CAM_LAYER: localisation_loss},
        loss_weights={"probabilities": 1.0, CAM_LAYER: LOCALISATION_WEIGHT},
        metrics={"probabilities": [keras.metrics.AUC(multi_label=True, num_labels=len(CHEST_FINDINGS), name="auc")]},
    )
    history = fit(trainer, pipeline(~held, True, True), pipeline(held, False, False), out_dir, epochs, patience=4)

    # The artifact: the same network uncompiled (no optimizer state in the file).
    network = build_chest_findings_model(CHEST_VIEW)
    network.set_weights(model.get_weights())
    held_views = x[held]
    probabilities = np.concatenate(
        [chest_findings_batch(network, held_views[i : i + 128])[0] for i in range(0, len(held_views), 128)]
    )
    truth = data.labels[held].astype(bool)
    prevalence = registry_prevalence()
    thresholds, per_label = {}, {}
    for j, label in enumerate(CHEST_FINDINGS):
        if label in NOT_DRAWN:
            thresholds[label] = 0.5
            per_label[label] = {"auroc": None, "positives": int(truth[:, j].sum()), "not_drawn": True}
            continue
        threshold = choose_threshold(probabilities[:, j], truth[:, j], float(prevalence[j]))
        predicted = probabilities[:, j] >= threshold
        tpr = float(predicted[truth[:, j]].mean()) if truth[:, j].any() else None
        fpr = float(predicted[~truth[:, j]].mean()) if (~truth[:, j]).any() else None
        thresholds[label] = round(threshold, 4)
        per_label[label] = {
            "auroc": auroc(truth[:, j], probabilities[:, j]),
            "positives": int(truth[:, j].sum()),
            "sensitivity": tpr,
            "specificity": None if fpr is None else 1 - fpr,
            "f1_at_registry_prevalence": None
            if tpr is None or fpr is None
            else float(f1_at_prevalence(tpr, fpr, float(prevalence[j]))),
        }
    drawn = [v["auroc"] for v in per_label.values() if v["auroc"] is not None]
    metrics = {
        "validation_images": int(held.sum()),
        "epochs_run": len(history["loss"]),
        "mean_auroc_drawn_labels": float(np.mean(drawn)),
        "min_auroc_drawn_labels": float(np.min(drawn)),
        "per_label": per_label,
        "card": {
            "thresholds": thresholds,
            "threshold_rule": THRESHOLD_RULE,
            "not_drawn": {label: NOT_DRAWN_REASON for label in NOT_DRAWN},
        },
    }
    return network, metrics
