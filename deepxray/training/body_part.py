"""Training the body-part model, with temperature scaling so its probabilities can be trusted for refusals."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from deepxray.imaging.model_inputs import BODY_PART_VIEW
from deepxray.labels import BODY_PARTS
from deepxray.settings import default
from deepxray.training.common import class_weights, dataset, fit
from deepxray.training.data import TrainingSet, validation_mask

# The service refuses an image unless the body-part model says "hand" with at least this probability.
ACCEPT_THRESHOLD = default("accept_probability")


def _negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (1.0, 8.0)) -> float:
    """The temperature minimising the negative log-likelihood of held-out labels, within `bounds` ([1, 8]).

    Only softening is allowed: when the held-out set is classified without error, the likelihood keeps rising
    as the temperature falls towards 0, which would make the model ever more overconfident. The likelihood is
    convex in 1/T, so a bounded scalar search over 1/T finds the minimum; the bounds themselves are compared
    too, since a bounded search never evaluates them (the error-free case gives exactly 1).
    """
    from scipy.optimize import minimize_scalar

    low, high = bounds
    nll = functools.partial(_negative_log_likelihood, logits, labels)
    found = minimize_scalar(lambda inverse: nll(1.0 / inverse), bounds=(1.0 / high, 1.0 / low), method="bounded")
    candidates = [float(low), float(high), float(1.0 / found.x)]
    return min(candidates, key=nll)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def train_body_part(data: TrainingSet, out_dir: Path, seed: int, epochs: int = 12, batch: int = 64):
    """Returns the trained model (calibrated) and its validation metrics."""
    import keras
    import tensorflow as tf

    from deepxray.models.body_part import build_body_part_model
    from deepxray.training.augment import intensity

    held = validation_mask(data.body_ids, seed=seed)
    x = data.body_views.astype(np.float32)[..., None]
    y = data.body_labels
    weights = class_weights(y[~held], len(BODY_PARTS))[y].astype(np.float32)

    def augment(images, labels, w):
        return intensity(images), labels, w

    train = dataset(x[~held], y[~held], batch, True, seed, augment, weights[~held])
    val = dataset(x[held], y[held], batch, False, seed)
    model = build_body_part_model(BODY_PART_VIEW)
    steps = max(1, int(np.ceil((~held).sum() / batch))) * epochs
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    history = fit(model, train, val, out_dir, epochs, patience=6)

    logits_model = keras.Model(model.input, model.get_layer("logits").output)
    logits = logits_model.predict(x[held], batch_size=256, verbose=0)
    before = tf.nn.softmax(logits).numpy()
    temperature = fit_temperature(logits, y[held])
    model.get_layer("temperature").temperature.assign(temperature)
    probabilities = model.predict(x[held], batch_size=256, verbose=0)
    predicted = probabilities.argmax(axis=1)
    left = BODY_PARTS.index("left_hand")
    hands = [BODY_PARTS.index(p) for p in ("left_hand", "right_hand")]
    accepted = np.isin(predicted, hands) & (probabilities.max(axis=1) >= ACCEPT_THRESHOLD)
    metrics = {
        "validation_images": int(held.sum()),
        "epochs_run": len(history["loss"]),
        "accuracy": float((predicted == y[held]).mean()),
        "temperature": temperature,
        "ece_before_calibration": expected_calibration_error(before, y[held]),
        "ece": expected_calibration_error(probabilities, y[held]),
        "left_hands_refused": int(((y[held] == left) & ~accepted).sum()),
        "non_hands_accepted": int((~np.isin(y[held], hands) & accepted).sum()),
    }
    return model, metrics
