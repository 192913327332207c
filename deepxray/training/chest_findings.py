"""Training the chest-findings model on chest phantoms rendered in memory, and choosing each label's threshold.

The films are `deepxray.training.chest_data`'s, at the "balanced" prevalence. Each label's threshold maximises the
F1 the label would have at the registry's prevalence (`registry_prevalence`), computed from the held-out split's
true- and false-positive rates: the validation films are balanced, the films the model will meet are not, and
precision depends on prevalence.

The loss is the labels' binary cross-entropy plus a localisation term on the class activation maps: the
generator records where each finding is (`chest_data.region_masks`), so each map cell learns whether it lies in one of its
label's boxes, and the map's peak is asked to lie inside them (multiple-instance style: the best cell inside says
yes, the best outside no). Trained on the labels alone (a pilot of 6 epochs), the maps of findings judged against
the whole chest peaked wherever their wide receptive field could see them from (a cardiomegaly's in the lateral
right lung): 20 % of true positives had their peak inside the finding. With the per-cell term alone, a label's
maximum (half of its logit) settled on one fixed cell outside the finding for effusions and consolidations (68 %).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepxray.imaging.model_inputs import CHEST_VIEW
from deepxray.labels import CHEST_FINDINGS, NO_FINDING
from deepxray.training.chest_data import ChestTrainingSet
from deepxray.training.data import validation_mask

# Weight of the localisation term against the labels' cross-entropy, and how much more a cell inside a box counts
# than one outside (a finding covers few cells).
LOCALISATION_WEIGHT = 1.0
INSIDE_WEIGHT = 4.0
LOCALISATION = (  # the card's `training_data.localisation`
    "each label's class activation map supervised by the generator's region boxes "
    f"(per-cell and peak cross-entropy, weight {LOCALISATION_WEIGHT})"
)

VALIDATION_SHARE = 0.15
THRESHOLD_RULE = (
    "maximises the label's F1 at the registry prevalence (CheXpert's positive rates), from the validation split's "
    "true- and false-positive rates"
)
NOT_DRAWN_REASON = (
    "not drawn by the phantom generator: on a film pneumonia is consolidation or opacity read with the clinical "
    "picture, which a phantom lacks; the model never saw a positive, its output is not a finding"
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
