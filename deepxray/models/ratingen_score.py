"""ratingen_score: one joint crop in, probabilities of the Ratingen erosion classes 0..5 out."""

from __future__ import annotations

import keras
from keras import layers

from deepxray.imaging.model_inputs import CROP_SIZE
from deepxray.labels import RATINGEN_CLASSES
from deepxray.models.blocks import conv_stages, image_input


def build_scorer(crop: int = CROP_SIZE, classes: int = len(RATINGEN_CLASSES)) -> keras.Model:
    """A small CNN over an oriented joint crop (finger pointing up)."""
    inputs = image_input(crop, "crop")
    x = conv_stages(inputs, [[16, 32], [48, 48], [64, 64], [128]], pool_after_last=False)  # 96 -> 48, 24, 12, 6
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    logits = layers.Dense(classes, name="logits")(x)
    probabilities = layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name="ratingen_score")
