"""Custom Keras layers of the DeepXRay models, registered so that saved models reload without extra code."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="deepxray")
class Temperature(keras.layers.Layer):
    """Divides logits by a fitted temperature, so softmax probabilities are calibrated (temperature scaling).

    The temperature is a non-trainable weight set after training on held-out data (see
    `deepxray.training.calibration`); 1.0 leaves logits unchanged.
    """

    def build(self, input_shape):
        self.temperature = self.add_weight(name="temperature", shape=(), initializer="ones", trainable=False)

    def call(self, logits):
        return logits / self.temperature


@keras.saving.register_keras_serializable(package="deepxray")
class HeatmapKeypoints(keras.layers.Layer):
    """Turns K heatmaps (logits) into K keypoints (x, y, confidence) in input-view pixels.

    Each keypoint is the heatmap's peak refined to sub-pixel precision by the centre of mass of the activations
    in a (2w+1)² window around it; confidence is the peak activation (0..1). A global soft-argmax would be pulled
    towards a second, weaker peak (a neighbouring joint); a local one is not.

    Args:
        stride: Input-view pixels per heatmap cell.
        window: Half-size w of the refinement window, in cells.
    """

    def __init__(self, stride: int = 4, window: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride
        self.window = window

    def call(self, logits):
        heat = tf.sigmoid(logits)
        shape = tf.shape(heat)
        batch, height, width, joints = shape[0], shape[1], shape[2], shape[3]
        flat = tf.reshape(tf.transpose(heat, [0, 3, 1, 2]), tf.stack([batch, joints, height * width]))
        peak = tf.argmax(flat, axis=-1, output_type=tf.int32)
        confidence = tf.reduce_max(flat, axis=-1)
        offsets = tf.range(-self.window, self.window + 1)
        dy, dx = tf.meshgrid(offsets, offsets, indexing="ij")
        ys = tf.clip_by_value(peak[..., None] // width + tf.reshape(dy, [-1]), 0, height - 1)
        xs = tf.clip_by_value(peak[..., None] % width + tf.reshape(dx, [-1]), 0, width - 1)
        weights = tf.gather(flat, ys * width + xs, batch_dims=2)
        total = tf.reduce_sum(weights, axis=-1) + 1e-6
        cell_x = tf.reduce_sum(weights * tf.cast(xs, weights.dtype), axis=-1) / total
        cell_y = tf.reduce_sum(weights * tf.cast(ys, weights.dtype), axis=-1) / total
        # Cell centres sit at (cell + 0.5) * stride - 0.5 view pixels (pixel centres at integers).
        stride = tf.cast(self.stride, weights.dtype)
        return tf.stack([(cell_x + 0.5) * stride - 0.5, (cell_y + 0.5) * stride - 0.5, confidence], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3], 3)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "window": self.window}
