"""The decoded image and the checks every decoder shares (pixel limit, colour to grayscale, pixel types)."""

from dataclasses import dataclass

import cv2
import numpy as np

from deepxray.imaging.errors import ImageTooLargeError

# Sample types handed on unchanged; anything else (signed or 32-bit integers, float64) becomes float32.
_KEPT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))

# A pixel counts as coloured when its channels differ by more than this share of the full scale. Radiographs
# exported as RGB (R = G = B, plus a few levels of JPEG chroma noise) stay well under it; photographs do not.
_COLOUR_SPREAD = 0.04
# ... and an image counts as colour when more than this share of its (subsampled) pixels is coloured, so a
# small coloured annotation burnt into a radiograph does not make it a "photo".
_COLOUR_AREA = 0.01
# Colour is judged on about this many pixels: enough to be stable, cheap on a 2048 x 2560 image.
_COLOUR_SAMPLES = 2**16


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """One decoded radiograph, grayscale, bone bright.

    Attributes:
        pixels: 2-D array (height, width) as decoded: uint8, uint16 or float32 (float32 when a DICOM rescale
            was applied or the source held signed or floating-point samples). Bone is bright: DICOM
            MONOCHROME1 is already inverted.
        format: The container format: "png", "jpeg", "tiff" or "dicom".
        was_color: True when the source had colour content (not merely RGB channels holding the same gray).
            A colour photograph is a hint that the upload is not a radiograph.
        pixel_spacing_mm: (row spacing, column spacing) in millimetres, DICOM order, from Pixel Spacing or
            Imager Pixel Spacing; None when the file does not say (always for PNG/JPEG/TIFF, whose DPI fields
            describe print size, not anatomy).
        bits: Significant bits per sample in the source (8 or 16 for rasters; Bits Stored for DICOM, e.g. 12).
    """

    pixels: np.ndarray
    format: str
    was_color: bool
    pixel_spacing_mm: tuple[float, float] | None
    bits: int

    @property
    def height(self) -> int:
        """Number of pixel rows."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Number of pixel columns."""
        return int(self.pixels.shape[1])


def check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    """Rejects an image whose header declares more pixels than allowed, before anything is allocated.

    Raises:
        ImageTooLargeError: When width * height exceeds max_pixels.
    """
    count = int(width) * int(height)
    if count > max_pixels:
        raise ImageTooLargeError(
            f"The image declares {width} x {height} pixels ({count / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:.1f} megapixels."
        )


def has_colour(channels: np.ndarray) -> bool:
    """Tells whether a (height, width, channels) image holds colour, judged on a strided subsample."""
    step = max(1, int(np.sqrt(channels.shape[0] * channels.shape[1] / _COLOUR_SAMPLES)))
    sample = channels[::step, ::step, :3].astype(np.float32)
    spread = sample.max(axis=2) - sample.min(axis=2)
    integer = channels.dtype.kind in "ui"
    full_scale = float(np.iinfo(channels.dtype).max) if integer else float(np.ptp(sample)) or 1.0
    return bool(np.mean(spread > _COLOUR_SPREAD * full_scale) > _COLOUR_AREA)


def to_grayscale(pixels: np.ndarray, channel_order: str) -> tuple[np.ndarray, bool]:
    """Reduces a decoded array to one channel.

    Args:
        pixels: (height, width) or (height, width, channels) with 1 to 4 channels; a fourth channel is alpha
            and is dropped (radiographs have no meaningful transparency).
        channel_order: "BGR" for OpenCV output, "RGB" for Pillow and pydicom output.

    Returns:
        The 2-D grayscale array (same dtype where OpenCV supports it) and whether the source had colour.
    """
    if pixels.ndim == 2:
        return pixels, False
    channels = pixels.shape[2]
    if channels <= 2:
        # Gray, or gray plus alpha.
        return np.ascontiguousarray(pixels[:, :, 0]), False
    colour = np.ascontiguousarray(pixels[:, :, :3])
    was_color = has_colour(colour)
    if colour.dtype not in _KEPT_DTYPES:
        colour = colour.astype(np.float32)
    code = cv2.COLOR_BGR2GRAY if channel_order == "BGR" else cv2.COLOR_RGB2GRAY
    return cv2.cvtColor(colour, code), was_color


def as_supported_dtype(pixels: np.ndarray) -> np.ndarray:
    """Keeps uint8/uint16/float32 as they are and turns any other sample type into float32."""
    if pixels.dtype in _KEPT_DTYPES:
        return pixels
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * np.uint8(255)
    return pixels.astype(np.float32)
