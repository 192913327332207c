"""chest_findings: CheXpert's fourteen labels on a chest film, each with a class activation map.

CheXNet's recipe (a CNN, global pooling, one sigmoid per label, class activation maps), sized for two CPU cores: a
few convolution stages on the 256x256 letterboxed film (`deepxray.imaging.model_inputs.chest_view`), a 16x16
context stage merged back into the 32x32 features, and a 1x1 convolution (`cam`) that gives each label a logit
per cell of the 32x32 grid. A label's logit is the mean plus the maximum of its map: the mean carries findings
that cover much of the chest (an effusion, edema), the maximum those that fill a few cells (a nodule, a fracture).
The maps are thus the class activation maps themselves (Zhou et al. 2016, with the dense layer moved in front of
the pooling, which changes nothing for the mean): no second pass, no gradients, and only standard Keras layers,
so the saved model loads without custom objects.

Importing this module imports Keras: the registry reaches it through small wrappers, the deployment in its replica.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
from keras import layers

from deepxray.imaging.model_inputs import CHEST_VIEW
from deepxray.labels import CHEST_FINDINGS
from deepxray.models.blocks import conv_bn, image_input

CAM_LAYER = "cam"  # (32, 32, 14) logit maps, one per label
CAM_STRIDE = 8  # view pixels per cell of the maps


def build_chest_findings_model(view: int = CHEST_VIEW, labels: int = len(CHEST_FINDINGS)) -> keras.Model:
    """The network: (view, view, 1) in [0, 1] -> (labels,) independent probabilities."""
    inputs = image_input(view, "view")
    x = conv_bn(inputs, 16, stride=2)  # 128
    x = conv_bn(x, 32, stride=2)  # 64: fine detail (a rib's break, a wire) is still resolved here
    x = conv_bn(x, 32)
    x = layers.MaxPooling2D()(x)  # 32
    x = conv_bn(x, 48)
    fine = conv_bn(x, 48)
    x = layers.MaxPooling2D()(fine)  # 16: context for what is judged against the whole chest (heart, mediastinum)
    x = conv_bn(x, 96)
    x = conv_bn(x, 96, dilation=2)
    x = conv_bn(x, 96, dilation=4)
    context = layers.UpSampling2D(interpolation="bilinear")(layers.Conv2D(48, 1, name="context")(x))
    x = layers.Add()([fine, context])
    features = conv_bn(x, 48, name="features")
    features = layers.SpatialDropout2D(0.1)(features)
    cam = layers.Conv2D(labels, 1, name=CAM_LAYER)(features)
    logits = layers.Add(name="logits")([layers.GlobalAveragePooling2D()(cam), layers.GlobalMaxPooling2D()(cam)])
    probabilities = layers.Activation("sigmoid", name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name="chest_findings")


# One compiled function per model object, made on first use: (views) -> (probabilities, maps).
_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _function(model: keras.Model):
    function = _FUNCTIONS.get(model)
    if function is None:
        import tensorflow as tf

        size = int(model.input_shape[1])
        both = keras.Model(model.inputs, [model.output, model.get_layer(CAM_LAYER).output])
        signature = [tf.TensorSpec([None, size, size, 1], tf.float32)]
        function = tf.function(lambda x: both(x, training=False), input_signature=signature)
        _FUNCTIONS[model] = function
    return function


def _keras_model(model) -> keras.Model:
    """A Keras model, or the one inside a `deepxray.models.runtime.LoadedModel`."""
    return model if isinstance(model, keras.Model) else model.model


def chest_findings_batch(model, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, S, S) views in [0, 1] -> probabilities (n, 14) and heatmaps (n, 14, S/8, S/8), float32.

    A heatmap is its label's class activation map in logit units (the label's logit is its mean plus its
    maximum); its peak is where the model saw the finding (`heatmap_peak`).
    """
    batch = np.asarray(views, dtype=np.float32)
    if batch.ndim != 3:
        raise ValueError(f"expected (n, S, S) views, got shape {batch.shape}")
    probabilities, maps = _function(_keras_model(model))(batch[..., None])
    return probabilities.numpy(), np.ascontiguousarray(np.transpose(maps.numpy(), (0, 3, 1, 2)))


def chest_findings_with_heatmaps(model, view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One (S, S) view -> probabilities (14,) and heatmaps (14, S/8, S/8): in-process, or in a deployment's
    replica (`deepxray.deployments.chest_findings`). `model` is a Keras model or a `LoadedModel`."""
    probabilities, heatmaps = chest_findings_batch(model, np.asarray(view)[None])
    return probabilities[0], heatmaps[0]


def heatmap_peak(heatmap: np.ndarray, view_size: int = CHEST_VIEW) -> tuple[float, float]:
    """Where a (h, w) heatmap peaks, in view pixels (x, y): the map scaled to the view (bilinear, cell centres at
    (cell + 0.5) * stride - 0.5, as `deepxray.imaging.views` places pixels), then its largest value."""
    import cv2

    scaled = cv2.resize(np.asarray(heatmap, np.float32), (view_size, view_size), interpolation=cv2.INTER_LINEAR)
    y, x = np.unravel_index(int(np.argmax(scaled)), scaled.shape)
    return float(x), float(y)
