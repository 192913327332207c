"""What the three trainers share: seeding, threads, the fit loop with its callbacks, and tf.data plumbing."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def configure_tensorflow(seed: int, threads: int | None = None) -> None:
    """Fix every seed and TensorFlow's threads before any model is built."""
    import keras
    import tensorflow as tf

    threads = threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass  # already initialised in this process (a second trainer in `train all`): the first setting holds
    keras.utils.set_random_seed(seed)


def fit(model, train_ds, val_ds, out_dir: Path, epochs: int, patience: int, monitor: str = "val_loss", mode="min"):
    """Train with early stopping on `monitor`, keep the best weights, checkpoint every epoch, log every epoch.

    Returns the per-epoch history (a dict of lists) and writes it as `history.csv` beside the checkpoints.
    """
    import keras

    out_dir = Path(out_dir)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(
            out_dir / "checkpoints" / "epoch{epoch:02d}.weights.h5", save_weights_only=True, save_freq="epoch"
        ),
        keras.callbacks.CSVLogger(str(out_dir / "history.csv")),
        EpochLog(),
    ]
    # A progress bar on a terminal; one line per epoch in CI logs.
    verbose = 1 if sys.stdout.isatty() else 0
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False
    )
    return history.history


class EpochLog:
    """Prints one line per epoch with every metric and the time taken (readable in CI logs)."""

    def __new__(cls):
        import keras

        class _EpochLog(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted((logs or {}).items()))
                print(f"  epoch {epoch + 1}: {metrics} ({time.perf_counter() - self.start:.0f} s)", flush=True)

        return _EpochLog()


def dataset(arrays, labels, batch: int, shuffle: bool, seed: int, augment=None, weights=None):
    """A tf.data pipeline over in-memory arrays; `augment` maps a batch (x, y[, w]) on the fly."""
    import tensorflow as tf

    parts = (arrays, labels) if weights is None else (arrays, labels, weights)
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch)
    if augment is not None:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def class_weights(labels: np.ndarray, classes: int) -> np.ndarray:
    """Inverse-frequency weights, normalised to mean 1 over the examples (classes never seen get 0)."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (classes * np.maximum(counts, 1)), 0.0)
    return weights


def write_json(path: Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
