"""Training the joint detector: Gaussian heatmaps as targets, keypoints decoded with sub-pixel refinement."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepxray.imaging.model_inputs import DETECTOR_VIEW
from deepxray.training.common import dataset, fit
from deepxray.training.data import TrainingSet, validation_mask

HEATMAP_SIGMA = 1.5  # cells


def heatmap_targets(points, size: int, stride: int, sigma: float = HEATMAP_SIGMA):
    """(batch, size/stride, size/stride, joints) Gaussians centred on the points (view pixels)."""
    import tensorflow as tf

    cells = size // stride
    grid = tf.range(cells, dtype=tf.float32)
    centres = (points + 0.5) / stride - 0.5  # view pixels -> cell coordinates
    gx = tf.exp(-((grid[None, None, :] - centres[..., 0:1]) ** 2) / (2 * sigma**2))  # (b, j, W)
    gy = tf.exp(-((grid[None, None, :] - centres[..., 1:2]) ** 2) / (2 * sigma**2))  # (b, j, H)
    return tf.einsum("bjh,bjw->bhwj", gy, gx)


def heatmap_loss(targets, logits):
    """Squared error on the activations, weighted up near the peaks (they are a tiny share of the cells)."""
    import tensorflow as tf

    heat = tf.sigmoid(logits)
    return tf.reduce_mean(tf.square(heat - targets) * (1.0 + 20.0 * targets))


def train_joint_detection(data: TrainingSet, out_dir: Path, seed: int, epochs: int = 15, batch: int = 16):
    """Returns the served detector (view in, keypoints out) and its validation metrics."""
    import keras

    from deepxray.models.joint_detection import HEATMAP_STRIDE, build_detector, build_heatmap_net
    from deepxray.training.augment import intensity

    held = validation_mask(data.hand_ids, seed=seed)
    x = data.detector_views.astype(np.float32)[..., None]
    points = data.detector_points.astype(np.float32)

    def to_targets(images, pts):
        return images, heatmap_targets(pts, DETECTOR_VIEW, HEATMAP_STRIDE)

    def augment(images, pts):
        return intensity(images), heatmap_targets(pts, DETECTOR_VIEW, HEATMAP_STRIDE)

    train = dataset(x[~held], points[~held], batch, True, seed, augment)
    val = dataset(x[held], points[held], batch, False, seed, to_targets)
    net = build_heatmap_net(DETECTOR_VIEW)
    steps = max(1, int(np.ceil((~held).sum() / batch))) * epochs
    net.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)), loss=heatmap_loss)
    history = fit(net, train, val, out_dir, epochs, patience=6)

    detector = build_detector(net)
    predicted = detector.predict(x[held], batch_size=32, verbose=0)
    errors = np.linalg.norm(predicted[..., :2] - points[held], axis=-1)  # view pixels
    # Tolerance per image: a quarter of its neighbouring-MCP distance (the acceptance criterion).
    mcp = points[held][:, 1:5]
    neighbour = np.median(np.linalg.norm(np.diff(mcp, axis=1), axis=-1), axis=1)
    metrics = {
        "validation_images": int(held.sum()),
        "epochs_run": len(history["loss"]),
        "median_error_view_px": float(np.median(errors)),
        "p99_error_view_px": float(np.percentile(errors, 99)),
        "within_quarter_mcp_distance": float((errors <= 0.25 * neighbour[:, None]).mean()),
        "median_confidence": float(np.median(predicted[..., 2])),
    }
    return detector, metrics
