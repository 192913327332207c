"""Small square views of a large image for the models, and the mapping of points between view and image.

Coordinates are (x, y) in pixels with pixel centres at integer positions (OpenCV's convention): x = 0 is the
centre of the first column. With this convention a point maps between image and view exactly as `cv2.resize`
moves pixels, so a joint found in a 256-pixel view lands on the right pixel of a 2560-pixel image.
"""

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ViewTransform:
    """Where an image sits inside its letterboxed view.

    A view pixel (x', y') and an image pixel (x, y) are related by
    x' = (x + 0.5) * scale_x - 0.5 + offset_x, and likewise for y.

    Attributes:
        scale_x: View pixels per image pixel, horizontally.
        scale_y: View pixels per image pixel, vertically (equal to scale_x up to rounding of the size).
        offset_x: Columns of padding left of the image in the view.
        offset_y: Rows of padding above the image in the view.
        image_width: Width of the original image.
        image_height: Height of the original image.
        view_size: Side of the square view.
    """

    scale_x: float
    scale_y: float
    offset_x: int
    offset_y: int
    image_width: int
    image_height: int
    view_size: int

    def to_view(self, xy: np.ndarray) -> np.ndarray:
        """Maps image coordinates, one point (x, y) or an array of shape (..., 2), to view coordinates (float64)."""
        return (np.asarray(xy, dtype=np.float64) + 0.5) * self._scale - 0.5 + self._offset

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Maps view coordinates back to image coordinates (the inverse of `to_view`), same shapes."""
        return (np.asarray(xy, dtype=np.float64) + 0.5 - self._offset) / self._scale - 0.5

    @property
    def _scale(self) -> np.ndarray:
        return np.array([self.scale_x, self.scale_y])

    @property
    def _offset(self) -> np.ndarray:
        return np.array([self.offset_x, self.offset_y], dtype=np.float64)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, ViewTransform]:
    """Fits a 2-D image into a size x size square, keeping its aspect ratio, centred, padded with 0.

    Shrinking uses `cv2.INTER_AREA` (averages the pixels it merges, so thin structures do not alias);
    enlarging, which INTER_AREA does not do well, uses `cv2.INTER_LINEAR`.

    Args:
        image: 2-D image, usually normalised float32 in [0, 1] (other dtypes are converted to float32).
        size: Side of the square view in pixels.

    Returns:
        The float32 (size, size) view and the transform between view and image coordinates.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim != 2 or pixels.size == 0:
        raise ValueError(f"expected a non-empty 2-D image, got shape {pixels.shape}")
    height, width = pixels.shape
    scale = size / max(height, width)
    new_width = min(size, max(1, round(width * scale)))
    new_height = min(size, max(1, round(height * scale)))
    shrinking = new_width < width or new_height < height
    resized = cv2.resize(
        pixels, (new_width, new_height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )
    offset_x = (size - new_width) // 2
    offset_y = (size - new_height) // 2
    view = np.zeros((size, size), dtype=np.float32)
    view[offset_y : offset_y + new_height, offset_x : offset_x + new_width] = resized
    transform = ViewTransform(
        scale_x=new_width / width,
        scale_y=new_height / height,
        offset_x=offset_x,
        offset_y=offset_y,
        image_width=width,
        image_height=height,
        view_size=size,
    )
    return view, transform


def mirror_horizontal(image: np.ndarray) -> np.ndarray:
    """Mirrors an image left to right (a right hand becomes a left hand), as a contiguous copy."""
    return np.ascontiguousarray(np.asarray(image)[:, ::-1])


def mirror_points_horizontal(xy: np.ndarray, width: int) -> np.ndarray:
    """Mirrors x-coordinates of points for an image `width` pixels wide, matching `mirror_horizontal`.

    Pixel column i becomes column width - 1 - i; applying it twice gives the points back.

    Args:
        xy: One point (x, y) or an array of points with shape (..., 2).
        width: Width of the image the points belong to.

    Returns:
        float64 array of the same shape.
    """
    points = np.array(xy, dtype=np.float64)  # a copy: the caller's points are left alone
    points[..., 0] = (width - 1) - points[..., 0]
    return points
