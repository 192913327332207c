"""joint_detection: the ten scored joints of a left hand in one forward pass."""

from __future__ import annotations

import keras
from keras import layers

from deepxray.imaging.model_inputs import DETECTOR_VIEW
from deepxray.labels import JOINT_NAMES
from deepxray.models.blocks import conv_bn, image_input
from deepxray.models.layers import HeatmapKeypoints

HEATMAP_STRIDE = 4  # view pixels per heatmap cell


def build_heatmap_net(view: int = DETECTOR_VIEW, joints: int = len(JOINT_NAMES)) -> keras.Model:
    """A small U-Net: the view in, one heatmap (logits) per joint out, at 1/HEATMAP_STRIDE resolution.

    The encoder goes down to 1/32 so that each cell sees the whole hand (telling MCP3 from MCP4 needs the
    context of all five rays); the decoder comes back to 1/4 with skip connections for precise peaks.
    """
    inputs = image_input(view, "view")
    x = conv_bn(inputs, 16, stride=2)  # 1/2
    s2 = conv_bn(x, 16)
    x = conv_bn(s2, 32, stride=2)  # 1/4
    s4 = conv_bn(x, 32)
    x = conv_bn(s4, 48, stride=2)  # 1/8
    s8 = conv_bn(x, 48)
    x = conv_bn(s8, 64, stride=2)  # 1/16
    s16 = conv_bn(x, 64)
    x = conv_bn(s16, 96, stride=2)  # 1/32
    x = conv_bn(x, 96, dilation=2)
    for skip, filters in ((s16, 64), (s8, 48), (s4, 32)):
        x = layers.UpSampling2D(interpolation="bilinear")(x)
        x = layers.Concatenate()([x, skip])
        x = conv_bn(x, filters)
    heatmaps = layers.Conv2D(joints, 1, name="heatmaps", bias_initializer=keras.initializers.Constant(-4.0))(x)
    return keras.Model(inputs, heatmaps, name="joint_heatmaps")


def build_detector(heatmap_net: keras.Model) -> keras.Model:
    """The served detector: view in, (10, 3) keypoints out (x, y in view pixels, confidence)."""
    keypoints = HeatmapKeypoints(stride=HEATMAP_STRIDE, name="keypoints")(heatmap_net.output)
    return keras.Model(heatmap_net.input, keypoints, name="joint_detection")
