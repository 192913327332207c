"""Building blocks shared by the three networks."""

from __future__ import annotations

import keras
from keras import layers


def conv_bn(x, filters: int, stride: int = 1, dilation: int = 1, name: str | None = None):
    """3×3 convolution, batch normalisation, ReLU: the unit every network here is made of."""
    x = layers.Conv2D(filters, 3, strides=stride, dilation_rate=dilation, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def conv_stages(x, stages: list[list[int]], pool_after_last: bool = True):
    """Stages of `conv_bn` units (their filter counts), 2x2 max pooling between stages (and after the last when
    `pool_after_last`); the very first unit has stride 2, halving the input once before any pooling."""
    for stage, filter_counts in enumerate(stages):
        for unit, filters in enumerate(filter_counts):
            x = conv_bn(x, filters, stride=2 if stage == unit == 0 else 1)
        if pool_after_last or stage < len(stages) - 1:
            x = layers.MaxPooling2D()(x)
    return x


def image_input(size: int, name: str) -> keras.KerasTensor:
    """A square one-channel float input in [0, 1]."""
    return keras.Input(shape=(size, size, 1), name=name)
