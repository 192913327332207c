"""The arrays the three models see, made the same way for training and for serving.

One decoded radiograph becomes: a normalised full-resolution image; a small letterboxed view for the body-part
model; for a hand, the image mirrored to a left hand when it is a right one, a larger view for the joint detector,
and ten oriented joint crops cut from the full-resolution image where the joints are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from deepxray.imaging.crop import crop_joint as _crop_joint
from deepxray.imaging.crop import finger_axis_angles, joint_crop_size
from deepxray.imaging.normalize import normalize_intensity
from deepxray.imaging.views import ViewTransform, letterbox, mirror_horizontal

BODY_PART_VIEW = 128  # side of the body-part model's input
DETECTOR_VIEW = 256  # side of the joint detector's input
CROP_SIZE = 96  # side of one joint crop, the scorer's input


@dataclass(frozen=True)
class NormalisedImage:
    """A decoded image with intensities in [0, 1] (float32), bone bright."""

    pixels: np.ndarray

    @classmethod
    def from_pixels(cls, pixels: np.ndarray) -> NormalisedImage:
        return cls(normalize_intensity(pixels))

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    def mirrored(self) -> NormalisedImage:
        """A right hand turned into a left hand's orientation (thumb on the image's right)."""
        return NormalisedImage(mirror_horizontal(self.pixels))


def body_part_view(image: NormalisedImage) -> np.ndarray:
    """(BODY_PART_VIEW, BODY_PART_VIEW) float32 view for the body-part model."""
    view, _ = letterbox(image.pixels, BODY_PART_VIEW)
    return view.astype(np.float32)


def detector_view(image: NormalisedImage) -> tuple[np.ndarray, ViewTransform]:
    """(DETECTOR_VIEW, DETECTOR_VIEW) float32 view for the joint detector, and how to map points back."""
    view, transform = letterbox(image.pixels, DETECTOR_VIEW)
    return view.astype(np.float32), transform


def joint_crops(
    image: NormalisedImage,
    centers: Mapping[str, tuple[float, float]],
    names: tuple[str, ...],
    out_size: int = CROP_SIZE,
    context: float = 1.0,
) -> np.ndarray:
    """Crops of `names` (n, out_size, out_size), sized by the hand and turned so the finger points up.

    `context` > 1 cuts a proportionally larger square into a proportionally larger crop (training cuts extra
    margin so that it can shift and turn the crop for augmentation and still fill it).
    """
    size_px = joint_crop_size(centers) * context
    angles = finger_axis_angles(centers)
    crops = np.empty((len(names), out_size, out_size), dtype=np.float32)
    for i, name in enumerate(names):
        crops[i] = _crop_joint(image.pixels, centers[name], size_px, out_size=out_size, angle=angles[name])
    return crops


def crop_boxes(centers: Mapping[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Axis-aligned boxes [x0, y0, x1, y1] around each joint's (possibly turned) crop, in image pixels."""
    half = joint_crop_size(centers) / 2
    angles = finger_axis_angles(centers)
    boxes = {}
    for name, (x, y) in centers.items():
        reach = half * (abs(np.cos(angles[name])) + abs(np.sin(angles[name])))
        boxes[name] = [float(x - reach), float(y - reach), float(x + reach), float(y + reach)]
    return boxes
