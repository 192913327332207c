"""The arrays the three models see, made the same way for training and for serving.

One decoded radiograph becomes: a normalised full-resolution image; a small letterboxed view for the body-part
model; for a hand, a larger view for the joint detector and ten oriented joint crops cut from the full-resolution
image where the joints are. A right hand's view and crops are flipped to a left hand's orientation, so the
detector and the scorer only ever see left hands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from deepxray.imaging.crop import crop_joint as _crop_joint
from deepxray.imaging.crop import finger_axis_angles, joint_crop_size
from deepxray.imaging.normalize import normalize_intensity
from deepxray.imaging.views import ViewTransform, letterbox

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


def body_part_view(image: NormalisedImage) -> np.ndarray:
    """(BODY_PART_VIEW, BODY_PART_VIEW) float32 view for the body-part model."""
    view, _ = letterbox(image.pixels, BODY_PART_VIEW)
    return view.astype(np.float32)


def turn_view(view: np.ndarray, turns: int) -> np.ndarray:
    """A square view turned clockwise by `turns` quarter turns (a film stored turned, shown upright)."""
    return np.ascontiguousarray(np.rot90(view, -turns))


def turn_points(xy: np.ndarray, turns: int, size: int) -> np.ndarray:
    """Points (x, y) of a `size`-square view to where `turn_view(view, turns)` shows them (negative: back)."""
    xy = np.array(xy, dtype=np.float64)
    for _ in range(turns % 4):  # one clockwise quarter turn: (x, y) -> (size - 1 - y, x)
        xy[..., 0], xy[..., 1] = size - 1 - xy[..., 1], xy[..., 0].copy()
    return xy


@dataclass(frozen=True)
class DetectorView:
    """The detector's input: always a left hand's orientation, upright, and the way back to the original image.

    The letterboxed original is turned clockwise by `turns` quarter turns (a film stored turned), then, for a
    right hand, flipped left to right. Points found in it map back to the original as stored, so nothing of the
    full-size image ever needs turning or mirroring.
    """

    pixels: np.ndarray  # (DETECTOR_VIEW, DETECTOR_VIEW) float32
    transform: ViewTransform  # letterbox of the original (unturned, unflipped) image
    mirrored: bool
    turns: int = 0

    def _flip(self, xy: np.ndarray) -> np.ndarray:
        xy = np.array(xy, dtype=np.float64)
        if self.mirrored:
            xy[..., 0] = self.transform.view_size - 1 - xy[..., 0]
        return xy

    def to_image(self, xy_view: np.ndarray) -> np.ndarray:
        """View pixels (as the detector sees them) to original image pixels."""
        unturned = turn_points(self._flip(xy_view), -self.turns, self.transform.view_size)
        return self.transform.to_image(unturned)

    def to_view(self, xy_image: np.ndarray) -> np.ndarray:
        """Original image pixels to view pixels (as the detector sees them)."""
        return self._flip(turn_points(self.transform.to_view(xy_image), self.turns, self.transform.view_size))


def detector_view(image: NormalisedImage, mirrored: bool = False, turns: int = 0) -> DetectorView:
    """The joint detector's input; `mirrored` for a right hand, `turns` clockwise quarter turns for a film
    stored turned."""
    view, transform = letterbox(image.pixels, DETECTOR_VIEW)
    view = turn_view(view.astype(np.float32), turns) if turns % 4 else view.astype(np.float32)
    if mirrored:
        view = np.ascontiguousarray(view[:, ::-1])
    return DetectorView(view, transform, mirrored, turns % 4)


def joint_crops(
    image: NormalisedImage,
    centers: Mapping[str, tuple[float, float]],
    names: tuple[str, ...],
    mirrored: bool = False,
    out_size: int = CROP_SIZE,
    context: float = 1.0,
) -> np.ndarray:
    """Crops of `names` (n, out_size, out_size), sized by the hand and turned so the finger points up.

    Centres are in the original image. A right hand's crops (`mirrored`) are flipped left to right, so the
    scorer always sees a left hand's joint. `context` > 1 cuts a proportionally larger square into a
    proportionally larger crop (training cuts extra margin so it can shift and turn crops for augmentation).
    """
    size_px = joint_crop_size(centers) * context
    angles = finger_axis_angles(centers)
    crops = np.empty((len(names), out_size, out_size), dtype=np.float32)
    for i, name in enumerate(names):
        crops[i] = _crop_joint(image.pixels, centers[name], size_px, out_size=out_size, angle=angles[name])
    if mirrored:
        crops = np.ascontiguousarray(crops[:, :, ::-1])
    return crops


def crop_boxes(centers: Mapping[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Axis-aligned boxes [x0, y0, x1, y1] around each joint's (turned) crop, in image pixels."""
    half = joint_crop_size(centers) / 2
    angles = finger_axis_angles(centers)
    boxes = {}
    for name, (x, y) in centers.items():
        reach = half * (abs(np.cos(angles[name])) + abs(np.sin(angles[name])))
        boxes[name] = [float(x - reach), float(y - reach), float(x + reach), float(y + reach)]
    return boxes
