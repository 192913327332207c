"""The arrays the three models see, made the same way for training and for serving.

One decoded radiograph becomes: the image and its intensity window (`NormalisedImage`, normalised lazily); a small
letterboxed view for the body-part model; for a hand, a larger view for the joint detector and ten oriented joint
crops cut from the full-resolution image where the joints are. A right hand's view and crops are flipped to a left
hand's orientation, so the detector and the scorer only ever see left hands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from deepxray.imaging.crop import crop_joint as _crop_joint
from deepxray.imaging.crop import finger_axis_angles, joint_crop_size
from deepxray.imaging.normalize import apply_window, intensity_window, normalize_intensity
from deepxray.imaging.views import ViewTransform, fit_views, pad_view

BODY_PART_VIEW = 128  # side of the body-part model's input
DETECTOR_VIEW = 256  # side of the joint detector's input
CROP_SIZE = 96  # side of one joint crop, the scorer's input


@dataclass(frozen=True, eq=False)
class NormalisedImage:
    """A decoded image and the window of its intensities that maps to [0, 1] (bone bright), applied lazily.

    Intensities from `low` to `high` map linearly onto [0, 1], clipped outside (`normalize_intensity`'s rule). Only
    what the models see is mapped: the views are averaged from the image's own pixels clipped to the window (see
    `view`) and mapped small; the crops map the few pixels they are cut from. So no full-size float copy of a film
    is made for an 8- or 16-bit image (20 MiB, and 11 ms on 2 cores to map a 2560 x 2048 film, before its views
    took another 12 ms each); one holding floats (a rescaled DICOM) is normalised whole, NaN becoming 0. In one
    run of `benchmarks.pipeline_steps` (2 cores, loaded by other work) the window and the body-part view took
    9.8 ms against 44 ms normalising the whole film first, and the detector view then 0.1 ms against 14.6 ms. The
    golden phantoms' probabilities stay within 0.0001 of their recorded answers (`tests/test_models.py`), as
    before; shrinking the films by whole blocks first, cheaper still, moved one by 0.07.

    Attributes:
        pixels: The image as decoded (uint8, uint16), or normalised already (float32 in [0, 1]).
        low: The intensity mapped to 0 (0.0: `pixels` is normalised already).
        high: The intensity mapped to 1 (1.0: `pixels` is normalised already).
    """

    pixels: np.ndarray
    low: float = 0.0
    high: float = 1.0

    @classmethod
    def from_pixels(cls, pixels: np.ndarray) -> NormalisedImage:
        values = np.asarray(pixels)
        window = intensity_window(values) if values.dtype in (np.uint8, np.uint16) else None
        if window is None:  # floats, or a constant image: normalised whole (all zeros for a constant one)
            return cls(normalize_intensity(values))
        return cls(values, *window)

    @property
    def window(self) -> tuple[float, float]:
        return self.low, self.high

    @cached_property
    def _views(self) -> dict[int, tuple[np.ndarray, ViewTransform]]:
        """Both models' views, unpadded and unmapped (`fit_views`), made in one pass over the image."""
        sizes = (BODY_PART_VIEW, DETECTOR_VIEW)
        return dict(zip(sizes, fit_views(self.pixels, sizes, clip=self._clip), strict=True))

    @property
    def _clip(self) -> tuple[float, float] | None:
        """What the views clip the pixels to: the window; nothing for pixels normalised already."""
        return None if self.pixels.dtype.kind == "f" and self.window == (0.0, 1.0) else self.window

    def view(self, size: int) -> tuple[np.ndarray, ViewTransform]:
        """`letterbox` of the normalised image: a (size, size) float32 view in [0, 1], and its transform.

        Made from the image clipped to the window, whose means are those of the normalised pixels (the window's
        linear map commutes with taking means); the means are mapped. Whole-number intensities are clipped to
        the whole numbers around the window, so a pixel below `low` counts as up to one intensity step (1/3700
        of the window of a 12-bit film) too bright in a mean with pixels inside it.
        """
        resized, transform = (
            self._views[size] if size in self._views else fit_views(self.pixels, (size,), self._clip)[0]
        )
        return pad_view(apply_window(resized, self.low, self.high), transform), transform


def body_part_view(image: NormalisedImage) -> np.ndarray:
    """(BODY_PART_VIEW, BODY_PART_VIEW) float32 view for the body-part model."""
    view, _ = image.view(BODY_PART_VIEW)
    return view


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
    view, transform = image.view(DETECTOR_VIEW)
    view = turn_view(view, turns) if turns % 4 else view
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
        crops[i] = _crop_joint(
            image.pixels, centers[name], size_px, out_size=out_size, angle=angles[name], window=image.window
        )
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


CHEST_VIEW = 256  # side of the chest-findings model's input


@dataclass(frozen=True)
class ChestView:
    """The chest-findings model's input, and the way back from it to the film: a heatmap's peak found in the view
    (`to_image`) lands on the film's pixels."""

    pixels: np.ndarray  # (CHEST_VIEW, CHEST_VIEW) float32 in [0, 1]
    transform: ViewTransform  # letterbox of the film as stored

    def to_image(self, xy_view: np.ndarray) -> np.ndarray:
        """View pixels (x, y) to film pixels."""
        return self.transform.to_image(xy_view)


def chest_view(image: NormalisedImage) -> ChestView:
    """The chest-findings model's input: the whole film letterboxed into (CHEST_VIEW, CHEST_VIEW), padded with 0,
    as the body-part view is made (the same normalisation); training and serving both call this."""
    view, transform = image.view(CHEST_VIEW)
    return ChestView(view, transform)
