"""Training the Ratingen scorer: an ordinal loss, class balancing, and crops jittered like detector output."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepxray.imaging.model_inputs import CROP_SIZE
from deepxray.labels import RATINGEN_CLASSES
from deepxray.training.common import class_weights, dataset, fit
from deepxray.training.data import CONTEXT_CROP_SIZE, TrainingSet, validation_mask

EMD_WEIGHT = 2.0


def ordinal_loss(labels, probabilities):
    """Cross-entropy plus the squared earth mover's distance between the predicted and true distributions.

    Cross-entropy alone treats calling a 5 a 4 as wrong as calling it a 0; the EMD term (the squared difference
    of the cumulative distributions) grows with how far the probability mass sits from the true class.
    """
    import tensorflow as tf

    classes = tf.shape(probabilities)[-1]
    one_hot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), classes)
    p = tf.clip_by_value(probabilities, 1e-7, 1.0)
    cross_entropy = -tf.reduce_sum(one_hot * tf.math.log(p), axis=-1)
    emd = tf.reduce_sum(tf.square(tf.cumsum(probabilities, axis=-1) - tf.cumsum(one_hot, axis=-1)), axis=-1)
    return cross_entropy + EMD_WEIGHT * emd


def _geometric_augmentation():
    """Shift, turn and zoom a context crop as detector error would, then cut the served crop's field of view."""
    import keras

    margin = (CONTEXT_CROP_SIZE - CROP_SIZE) / 2
    return keras.Sequential(
        [
            keras.layers.RandomRotation(10 / 360, fill_mode="constant"),
            keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant"),
            keras.layers.RandomZoom(0.1, fill_mode="constant"),
            keras.layers.Cropping2D(int(margin)),
        ]
    )


def train_ratingen_score(data: TrainingSet, out_dir: Path, seed: int, epochs: int = 15, batch: int = 128):
    """Returns the trained scorer and its validation metrics (on centred crops)."""
    import keras

    from deepxray.models.ratingen_score import build_scorer
    from deepxray.training.augment import intensity
    from evaluation.metrics import cohen_kappa

    hands = len(data.scores)
    ids = np.repeat(data.hand_ids, data.scores.shape[1])
    held = validation_mask(ids, seed=seed)
    x = data.crops.reshape(hands * data.scores.shape[1], CONTEXT_CROP_SIZE, CONTEXT_CROP_SIZE)[..., None]
    y = data.scores.reshape(-1)
    weights = class_weights(y[~held], len(RATINGEN_CLASSES))[y].astype(np.float32)
    geometry = _geometric_augmentation()
    margin = (CONTEXT_CROP_SIZE - CROP_SIZE) // 2

    def augment(images, labels, w):
        images = geometry(images, training=True)
        return intensity(images), labels, w

    def centre(images, labels):
        return images[:, margin : margin + CROP_SIZE, margin : margin + CROP_SIZE, :], labels

    train = dataset(x[~held].astype(np.float32), y[~held], batch, True, seed, augment, weights[~held])
    val = dataset(x[held].astype(np.float32), y[held], batch, False, seed, centre)
    model = build_scorer(CROP_SIZE)
    steps = max(1, int(np.ceil((~held).sum() / batch))) * epochs
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
        loss=ordinal_loss,
        metrics=["accuracy"],
    )
    history = fit(model, train, val, out_dir, epochs, patience=6)

    probabilities = model.predict(val, verbose=0)
    predicted = probabilities.argmax(axis=1)
    truth = y[held]
    metrics = {
        "validation_joints": int(held.sum()),
        "epochs_run": len(history["loss"]),
        "exact_accuracy": float((predicted == truth).mean()),
        "within_one_class": float((np.abs(predicted - truth) <= 1).mean()),
        "quadratic_kappa": cohen_kappa(truth, predicted, weights="quadratic"),
    }
    return model, metrics
