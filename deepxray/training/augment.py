"""On-the-fly augmentation of batches in tf.data (images are (batch, H, W, 1) floats in [0, 1])."""

from __future__ import annotations

import tensorflow as tf


def intensity(images, seed_offset: int = 0):
    """Exposure, contrast and gamma of another detector or another processing; a little noise."""
    batch = tf.shape(images)[0]
    gamma = tf.exp(tf.random.uniform([batch, 1, 1, 1], -0.35, 0.35))
    contrast = tf.random.uniform([batch, 1, 1, 1], 0.75, 1.25)
    shift = tf.random.uniform([batch, 1, 1, 1], -0.08, 0.08)
    images = tf.pow(tf.clip_by_value(images, 1e-4, 1.0), gamma)
    images = (images - 0.5) * contrast + 0.5 + shift
    images += tf.random.normal(tf.shape(images), stddev=tf.random.uniform([], 0.0, 0.02))
    return tf.clip_by_value(images, 0.0, 1.0)
