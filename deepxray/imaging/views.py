"""Small square views of a large image for the models, and the mapping of points between view and image.

Coordinates are (x, y) in pixels with pixel centres at integer positions (OpenCV's convention): x = 0 is the
centre of the first column. With this convention a point maps between image and view exactly as `cv2.resize`
moves pixels, so a joint found in a 256-pixel view lands on the right pixel of a 2560-pixel image.
"""

import functools
import math
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
    [(resized, transform)] = fit_views(np.asarray(image, dtype=np.float32), (size,))
    return pad_view(resized, transform), transform


def fit_views(
    image: np.ndarray, sizes: tuple[int, ...], clip: tuple[float, float] | None = None
) -> list[tuple[np.ndarray, ViewTransform]]:
    """The image resized to fit each size x size square, aspect kept (`letterbox` before padding), as float32.

    Shrinking gives the means `cv2.INTER_AREA` gives, in two passes: one over the whole image along the side
    whose pixels divide evenly into the view's (a 2560-row film into 256 or 128 rows: a block sum, unrounded),
    then OpenCV's INTER_AREA along the other side of the little that is left. Where neither side divides evenly,
    the first pass is a sparse product with each row's share of each view row, a band of rows at a time. On a
    2560 x 2048 uint16 film the block sum takes ~0.9 ms and each pass along the rows ~1 ms, where OpenCV's
    INTER_AREA straight to 256 pixels takes ~12 ms (2 cores, unloaded; its general case, for scales other than
    whole numbers, weighs every pixel one at a time). The means match OpenCV's within 3e-7 of the range (float32).

    Args:
        image: 2-D image: uint8, uint16 or float32 (other types are converted to float32).
        sizes: Sides of the square views.
        clip: (low, high): the image is taken clipped to this range (for whole-number images, to the whole
            numbers around it: `floor(low)`, `ceil(high)`), as normalising clips it, before the means are taken.

    Returns:
        Per size, the resized image (float32, not padded) and the transform between view and image coordinates.
    """
    pixels = np.asarray(image)
    if pixels.ndim != 2 or pixels.size == 0:
        raise ValueError(f"expected a non-empty 2-D image, got shape {pixels.shape}")
    if pixels.dtype not in (np.uint8, np.uint16, np.float32):
        pixels = pixels.astype(np.float32)
    if clip is not None:
        low, high = clip
        if pixels.dtype.kind in "ui":
            low, high = math.floor(low), math.ceil(high)
        pixels = np.clip(pixels, low, high).astype(pixels.dtype, copy=False)
    height, width = pixels.shape
    fits = [_fit(height, width, size) for size in sizes]
    shrunk = [(rows, columns) for rows, columns, _ in fits if rows <= height and columns <= width]
    # Rows first where they divide evenly, or where the columns do not either; else columns first.
    column_means = _column_means(pixels, {rows for rows, columns in shrunk if height % rows == 0 or width % columns})
    views = []
    for rows, columns, transform in fits:
        if rows in column_means:
            resized = cv2.resize(column_means[rows], (columns, rows), interpolation=cv2.INTER_AREA)
        elif (rows, columns) in shrunk:
            # Whole blocks of columns (a film on its side: 3584 columns into 256): OpenCV's fast path, whose means
            # of whole-number pixels are rounded, then along the columns of what is left.
            narrow = cv2.resize(pixels, (columns, height), interpolation=cv2.INTER_AREA).astype(np.float32)
            resized = cv2.resize(narrow, (columns, rows), interpolation=cv2.INTER_AREA)
        else:  # enlarged along one side at least: small, and rare
            shrinking = rows < height or columns < width
            interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            resized = cv2.resize(pixels.astype(np.float32), (columns, rows), interpolation=interpolation)
        views.append((resized, transform))
    return views


def _fit(height: int, width: int, size: int) -> tuple[int, int, ViewTransform]:
    """Rows and columns of an image of (height, width) fitted into a size x size view, and its transform."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    scale = size / max(height, width)
    columns = min(size, max(1, round(width * scale)))
    rows = min(size, max(1, round(height * scale)))
    transform = ViewTransform(
        scale_x=columns / width,
        scale_y=rows / height,
        offset_x=(size - columns) // 2,
        offset_y=(size - rows) // 2,
        image_width=width,
        image_height=height,
        view_size=size,
    )
    return rows, columns, transform


def _column_means(pixels: np.ndarray, row_counts: set[int]) -> dict[int, np.ndarray]:
    """For each row count n, the image averaged down its columns into n rows as INTER_AREA averages (each
    output row the mean of the input rows, and parts of rows, it covers): (n, width) float32."""
    height = pixels.shape[0]
    means: dict[int, np.ndarray] = {}
    for rows in sorted((n for n in row_counts if height % n == 0), reverse=True):
        # Whole blocks of rows: a sum over a reshape (from a finer result already made where blocks nest).
        finer = min((n for n in means if n % rows == 0), default=None)
        source, source_rows = (pixels, height) if finer is None else (means[finer], finer)
        block = source_rows // rows
        means[rows] = source.reshape(rows, block, -1).sum(axis=1, dtype=np.float32) / np.float32(block)
    uneven = sorted(n for n in row_counts if height % n)
    if uneven:
        from scipy import sparse  # only for sizes that do not divide evenly

        shares = sparse.vstack([_row_shares(height, rows) for rows in uneven], format="csc")
        averaged = np.zeros((shares.shape[0], pixels.shape[1]), np.float32)
        for start in range(0, height, _BAND_ROWS):  # a band of rows at a time: no float copy of the whole image
            band = slice(start, start + _BAND_ROWS)
            averaged += shares[:, band] @ pixels[band].astype(np.float32)
        for rows, start in zip(uneven, np.cumsum([0, *uneven[:-1]]), strict=True):
            means[rows] = np.ascontiguousarray(averaged[start : start + rows])
    return means


# Rows of an image turned to float at a time where the view's rows do not divide the image's evenly.
_BAND_ROWS = 256


@functools.lru_cache(maxsize=64)
def _row_shares(height: int, rows: int):
    """(rows, height) sparse float32 matrix: the share of input row j in output row i (INTER_AREA's weights)."""
    from scipy import sparse

    step = height / rows
    starts = np.arange(rows) * step
    ends = np.minimum(starts + step, height)
    first, last = np.floor(starts).astype(np.int64), np.ceil(ends).astype(np.int64)
    counts = last - first
    out_rows = np.repeat(np.arange(rows), counts)
    in_rows = np.repeat(first, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    overlap = np.minimum(in_rows + 1, ends[out_rows]) - np.maximum(in_rows, starts[out_rows])
    weights = (overlap / (ends - starts)[out_rows]).astype(np.float32)
    return sparse.csr_matrix((weights, (out_rows, in_rows)), shape=(rows, height))


def pad_view(resized: np.ndarray, transform: ViewTransform) -> np.ndarray:
    """A resized image (`fit_views`) placed in its square, padded with 0, as float32."""
    view = np.zeros((transform.view_size, transform.view_size), dtype=np.float32)
    height, width = resized.shape
    view[transform.offset_y : transform.offset_y + height, transform.offset_x : transform.offset_x + width] = resized
    return view


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
