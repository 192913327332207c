"""body_part: which body part a radiograph shows, or that it is no radiograph at all."""

from __future__ import annotations

import keras
from keras import layers

from deepxray.imaging.model_inputs import BODY_PART_VIEW
from deepxray.labels import BODY_PARTS
from deepxray.models.blocks import conv_stages, image_input
from deepxray.models.layers import Temperature


def build_body_part_model(view: int = BODY_PART_VIEW, classes: int = len(BODY_PARTS)) -> keras.Model:
    """A small CNN on the letterboxed view; calibrated class probabilities out.

    The last feature map is flattened, not averaged, so that where things are (a thumb on the left or the right
    of the palm) survives to the classifier: left and right hands differ only in that.
    """
    inputs = image_input(view, "view")
    x = conv_stages(inputs, [[16, 24], [32, 32], [64], [96]])  # 128 -> 64, 32, 16, 8, 4
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(64, activation="relu")(x)
    logits = layers.Dense(classes, name="logits")(x)
    calibrated = Temperature(name="temperature")(logits)
    probabilities = layers.Softmax(name="probabilities")(calibrated)
    return keras.Model(inputs, probabilities, name="body_part")
