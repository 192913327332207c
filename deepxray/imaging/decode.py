"""Upload bytes to a grayscale, bone-bright pixel array: one decoder for training, evaluation and serving.

The format is sniffed from the first bytes, never taken from a file name or content type. The pixel count is
read from the header and checked before any pixel is decoded, so a decompression bomb costs microseconds, not
memory. PNG is decoded with imagecodecs (libpng, with a faster inflate than OpenCV's and Pillow's zlib: a
full-size 16-bit phantom film in 51 ms against 57 ms with OpenCV and Pillow, 2 cores), JPEG and TIFF with OpenCV;
what these do not read goes to OpenCV, then to Pillow, which tells damaged files from variants OpenCV lacks.
DICOM goes through pydicom (see `deepxray.imaging.dicom`).
"""

import io
import struct

import cv2
import numpy as np
from PIL import Image

from deepxray.imaging.decoded import DecodedImage, as_supported_dtype, check_pixel_count, to_grayscale
from deepxray.imaging.errors import (
    SUPPORTED_FORMATS,
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    ImagingError,
    UnsupportedFormatError,
)

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "SUPPORTED_FORMATS", "DecodedImage", "decode_image"]

DEFAULT_MAX_BYTES = 64 * 2**20
DEFAULT_MAX_PIXELS = 40_000_000

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# Classic TIFF and BigTIFF, little and big endian.
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_DICOM_PREAMBLE = 128
_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF"}
# The EXIF tag that says how to turn the stored pixels upright (1 = already upright; 2-8 flips and rotations).
_EXIF_ORIENTATION = 0x0112


def decode_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decodes an uploaded PNG, JPEG, TIFF or DICOM file.

    Args:
        data: The file's bytes.
        max_bytes: Largest accepted upload.
        max_pixels: Largest accepted width * height, checked from the header before decoding. For PNG, JPEG
            and TIFF, Pillow's own bomb limit (2 * `PIL.Image.MAX_IMAGE_PIXELS`, 179 Mpx) applies as well.

    Returns:
        The grayscale, bone-bright image (see `DecodedImage`).

    Raises:
        EmptyImageError: No bytes.
        ImageTooLargeError: More bytes than max_bytes, or a header declaring more pixels than max_pixels.
        UnsupportedFormatError: Not PNG, JPEG, TIFF or DICOM (the message lists these).
        CorruptImageError: A supported format that cannot be decoded or is truncated. No other exception type
            escapes for bad input: library errors are wrapped.
    """
    if not data:
        raise EmptyImageError()
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"The file has {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.1f} MiB.")
    data = bytes(data)  # memoryview/bytearray from a web framework: one immutable view for all readers
    format_name = _sniff_format(data)
    if format_name in ("dicom", "dicom_without_preamble"):
        # pydicom takes a third of a second to import; only DICOM uploads pay for it.
        from deepxray.imaging.dicom import decode_dicom

        return decode_dicom(data, max_pixels=max_pixels, has_preamble=format_name == "dicom")
    if format_name is None:
        raise UnsupportedFormatError()
    return _decode_raster(data, format_name, max_pixels)


def _sniff_format(data: bytes) -> str | None:
    """Names the format from magic bytes ("dicom_without_preamble" is only a candidate until parsed).

    "DICM" at byte 128 is checked first. The 128-byte preamble is free for applications to use and readers
    must not rely on its content (PS3.10 7.1); dual-personality files hold a TIFF header there, so that TIFF
    readers see the image too. Such a file is DICOM: read as TIFF it would lose MONOCHROME1 inversion, rescale
    and pixel spacing, or be refused.
    """
    if data[_DICOM_PREAMBLE : _DICOM_PREAMBLE + 4] == b"DICM":
        return "dicom"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data.startswith(_TIFF_MAGICS):
        return "tiff"
    if _looks_like_dicom_dataset(data):
        return "dicom_without_preamble"
    return None


def _looks_like_dicom_dataset(data: bytes) -> bool:
    """Cheap pre-check for a DICOM data set written without the 128-byte preamble.

    Such files start with a little-endian tag of the file meta group (0002) or the identifying group (0008).
    Requiring that before letting pydicom parse with `force=True` keeps random bytes, text and PDFs away from
    a parser that accepts almost anything.
    """
    if len(data) < 8:
        return False
    group, element = struct.unpack("<HH", data[:4])
    return group in (0x0002, 0x0008) and element < 0x0100


def _decode_raster(data: bytes, format_name: str, max_pixels: int) -> DecodedImage:
    orientation = _check_raster_header(data, format_name, max_pixels)
    pixels = _decode_png(data) if format_name == "png" else None
    channel_order = "RGB"
    if pixels is None:
        try:
            pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            pixels = None
        channel_order = "BGR"
    if pixels is not None and pixels.size:
        gray, was_color = to_grayscale(pixels, channel_order=channel_order)
    else:
        # OpenCV gives up both on damage and on variants it lacks (e.g. some TIFF sample formats);
        # Pillow tells the two apart by raising on the damaged ones.
        gray, was_color = _decode_with_pillow(data, format_name)
    gray = as_supported_dtype(_make_upright(gray, orientation))
    return DecodedImage(
        pixels=gray,
        format=format_name,
        was_color=was_color,
        pixel_spacing_mm=None,
        bits=gray.dtype.itemsize * 8,
    )


def _decode_png(data: bytes) -> np.ndarray | None:
    """The PNG's samples as stored (RGB order, palettes expanded, transparency as alpha), or None where imagecodecs
    does not read it (damaged, or a variant it lacks): then OpenCV and Pillow have their turn, as for any raster.
    imagecodecs releases the GIL while decoding, as OpenCV does, so decodes in threads run side by side."""
    try:
        from imagecodecs import png_decode

        return png_decode(data)
    except Exception:
        return None


def _check_raster_header(data: bytes, format_name: str, max_pixels: int) -> int:
    """Checks the declared size against max_pixels from the header alone; returns the EXIF orientation."""
    try:
        # Pillow reads the header lazily. Between its warning (89 Mpx) and error (179 Mpx) thresholds it only
        # warns, and our own limit rejects the image right after; warnings are not silenced here because
        # `warnings.catch_warnings` is not thread-safe and decoding runs in threads.
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[format_name]]) as image:
            check_pixel_count(*image.size, max_pixels)
            return _exif_orientation(image)
    except ImagingError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"The image declares over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; the limit is "
            f"{max_pixels / 1e6:.1f} megapixels."
        ) from exc
    except Exception as exc:
        raise CorruptImageError(
            f"The {format_name.upper()} header could not be read; the file may be truncated or damaged."
        ) from exc


def _exif_orientation(image: Image.Image) -> int:
    """EXIF orientation (1 = upright) without decoding pixels; a damaged EXIF block counts as upright."""
    try:
        if image.format == "PNG":
            # Pillow's PNG `getexif` decodes the whole image to look for an eXIf chunk after the pixel data;
            # only one before it, already in `info`, is read here.
            exif = Image.Exif()
            if raw := image.info.get("exif"):
                exif.load(raw)
        else:
            exif = image.getexif()
        orientation = int(exif.get(_EXIF_ORIENTATION, 1))
    except Exception:
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _decode_with_pillow(data: bytes, format_name: str) -> tuple[np.ndarray, bool]:
    try:
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[format_name]]) as image:
            image.load()
            if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
                image = image.convert("RGB")
            elif image.mode == "1":
                image = image.convert("L")
            pixels = np.asarray(image)
    except Exception as exc:
        raise CorruptImageError(
            f"The {format_name.upper()} image could not be decoded; the file may be truncated or damaged."
        ) from exc
    return to_grayscale(pixels, channel_order="RGB")


def _make_upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Applies an EXIF orientation, as photos of radiographs taken with a phone carry one."""
    if orientation == 2:
        pixels = pixels[:, ::-1]
    elif orientation == 3:
        pixels = pixels[::-1, ::-1]
    elif orientation == 4:
        pixels = pixels[::-1, :]
    elif orientation == 5:
        pixels = pixels.T
    elif orientation == 6:
        pixels = np.rot90(pixels, k=-1)
    elif orientation == 7:
        pixels = np.rot90(pixels, k=2).T
    elif orientation == 8:
        pixels = np.rot90(pixels, k=1)
    else:
        return pixels
    return np.ascontiguousarray(pixels)
