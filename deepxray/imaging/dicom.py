"""DICOM to a bone-bright grayscale array with pydicom 3.

Only the tags needed to build the image are read (`specific_tags`): patient and study tags are never parsed,
so they cannot end up in a result, a log line or an error message. Decodes what the installed pydicom plugins
decode: uncompressed, RLE Lossless (pydicom itself), JPEG baseline/extended (Pillow or pylibjpeg-libjpeg),
JPEG lossless and JPEG-LS (pylibjpeg-libjpeg), JPEG 2000 (pylibjpeg-openjpeg or Pillow).

Besides the image, four header facts are read and returned as `DicomFacts`: Modality, Body Part Examined and
Image Laterality / Laterality, for checking the upload against the models' findings.
"""

import io
import math

import numpy as np

from deepxray.imaging.decoded import (
    DecodedImage,
    DicomFacts,
    as_supported_dtype,
    check_pixel_count,
    to_grayscale,
)
from deepxray.imaging.errors import CorruptImageError, ImagingError, UnsupportedFormatError

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PALETTE_KEYWORDS = tuple(
    f"{prefix}{colour}PaletteColorLookupTable{suffix}"
    for colour in ("Red", "Green", "Blue")
    for prefix, suffix in (("", "Descriptor"), ("", "Data"), ("Segmented", "Data"))
)
# What pydicom needs to decode the first frame, plus what we read from it. Nothing that identifies a person.
_IMAGE_KEYWORDS = (
    "SOPClassUID",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "PresentationLUTShape",
    "PlanarConfiguration",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "ModalityLUTSequence",
    "PixelSpacing",
    "ImagerPixelSpacing",
    # Enhanced (multi-frame) objects keep rescale and spacing in the shared functional groups.
    "SharedFunctionalGroupsSequence",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    *_PALETTE_KEYWORDS,
    *_PIXEL_DATA_KEYWORDS,
    # Header facts (`DicomFacts`): what the image shows, never whom.
    "Modality",
    "BodyPartExamined",
    "ImageLaterality",
    "Laterality",
)


def decode_dicom(data: bytes, *, max_pixels: int, has_preamble: bool) -> DecodedImage:
    """Decodes the first frame of a DICOM file.

    Args:
        data: The file's bytes.
        max_pixels: Largest accepted Rows * Columns, checked before the pixel data is decoded.
        has_preamble: True when the file has the 128-byte preamble and "DICM". Without it the bytes are only a
            candidate: unless pydicom finds an image in them they are reported as an unsupported format.

    Raises:
        UnsupportedFormatError: Not DICOM after all, or a DICOM object without an image (e.g. a report).
        CorruptImageError: Truncated or undecodable DICOM, or a compression no installed plugin decodes.
        ImageTooLargeError: Rows * Columns over max_pixels.
    """
    dataset = _read_dataset(data, has_preamble)
    try:
        return _decode_dataset(dataset, max_pixels)
    except ImagingError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        # BaseException, not Exception: decoder plugins written in Rust (pylibjpeg-rle) signal a damaged frame with
        # pyo3's PanicException, which derives from BaseException. Only the exception type is kept in the message:
        # library messages may quote tag values.
        raise CorruptImageError(
            f"The DICOM pixel data could not be decoded ({type(exc).__name__}); the file may be truncated, "
            "damaged or use a compression we cannot decode."
        ) from exc


def _read_dataset(data: bytes, has_preamble: bool):
    import pydicom

    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=not has_preamble, specific_tags=list(_IMAGE_KEYWORDS))
    except Exception as exc:
        if not has_preamble:
            raise UnsupportedFormatError() from exc
        raise CorruptImageError("The DICOM file could not be parsed; it may be truncated or damaged.") from exc
    has_geometry = "Rows" in dataset and "Columns" in dataset
    has_pixels = any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS)
    if not has_preamble and not (has_geometry and has_pixels):
        # `force=True` parses nearly any bytes into some data set; only one holding an image counts as DICOM.
        raise UnsupportedFormatError()
    if not has_pixels:
        sop_class = _sop_class_name(dataset)
        if sop_class and "Image" not in sop_class:
            raise UnsupportedFormatError(f"The DICOM file holds no image (it is a {sop_class} object).")
        # An image object without pixel data was cut short: pydicom silently drops an encapsulated Pixel
        # Data element that ends early, and stops reading at the end of a truncated header.
        raise CorruptImageError("The DICOM file has no pixel data; it may be truncated.")
    return dataset


def _sop_class_name(dataset) -> str | None:
    """Name of the SOP class (e.g. "Digital X-Ray Image Storage - For Presentation"), None when unknown."""
    from pydicom.uid import UID

    meta = getattr(dataset, "file_meta", None)
    uid = (meta.get("MediaStorageSOPClassUID") if meta is not None else None) or dataset.get("SOPClassUID")
    if not uid:
        return None
    name = UID(str(uid)).name
    # pydicom names an unknown UID by the UID itself.
    return None if name == str(uid) else name


def _decode_dataset(dataset, max_pixels: int) -> DecodedImage:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

    check_pixel_count(int(dataset.Columns), int(dataset.Rows), max_pixels)
    _ensure_transfer_syntax(dataset)
    pixels = pixel_array(dataset, index=0)  # the first frame only; a radiograph rarely has more
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits_stored = int(dataset.get("BitsStored") or pixels.dtype.itemsize * 8)
    was_color = False
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, dataset)
    if pixels.ndim == 3:
        # pydicom already turned YBR into RGB.
        pixels, was_color = to_grayscale(pixels, channel_order="RGB")
    else:
        inversion_bits = bits_stored
        if dataset.get("ModalityLUTSequence"):
            pixels = apply_modality_lut(pixels, dataset)
            inversion_bits = pixels.dtype.itemsize * 8  # the LUT's output depth replaces Bits Stored
        else:
            slope, intercept = _rescale(dataset)
            if (slope, intercept) != (1.0, 0.0):
                # float32, not pydicom's float64: half the memory, and ample for 16-bit detector values.
                pixels = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        if _minimum_shows_white(dataset, photometric):
            pixels = _invert(pixels, inversion_bits)
    return DecodedImage(
        pixels=as_supported_dtype(np.ascontiguousarray(pixels)),
        format="dicom",
        was_color=was_color,
        pixel_spacing_mm=_pixel_spacing(dataset),
        bits=bits_stored,
        dicom=_facts(dataset),
    )


def _minimum_shows_white(dataset, photometric: str) -> bool:
    """Whether a grayscale image is meant to be displayed with its lowest values white (and must be inverted).

    Two attributes describe the polarity. Photometric Interpretation (0028,0004): MONOCHROME1 means the minimum
    value is displayed white after the VOI transformation, MONOCHROME2 black (PS3.3 C.7.6.3.1.2). Presentation
    LUT Shape (2050,0020), the last stage of the grayscale pipeline (PS3.4 N.2.1.4): IDENTITY means the output
    of the earlier stages is in P-Values (low = dark), INVERSE that it is after inversion (P-Value = maximum -
    value, PS3.3 C.11.6.1.2). In image objects (General Image module C.7.6.1, DX Image module C.8.11.3)
    INVERSE "shall be used" with MONOCHROME1 and IDENTITY with MONOCHROME2: both attributes state the same one
    inversion, they are not two inversions to be chained. So:

    - MONOCHROME2, shape IDENTITY or absent: minimum black, kept as stored.
    - MONOCHROME1, shape INVERSE or absent: minimum white, inverted once (the normal CR/DX MONOCHROME1 file;
      inverting twice shows bone dark, the bug Weasis 4.0.3 shipped and 4.1 fixed).
    - MONOCHROME2 with INVERSE: minimum white, inverted, as a MONOCHROME1 image.
    - MONOCHROME1 with IDENTITY: minimum black, kept as stored, as a MONOCHROME2 image.

    When the two disagree, the Presentation LUT Shape decides, being the later stage of the pipeline; DCMTK and
    dcm4che render such files the same way. Any other shape value (e.g. LIN OD, a print-only shape) is ignored
    and Photometric Interpretation decides.
    """
    shape = _text(dataset, "PresentationLUTShape")
    if shape in ("IDENTITY", "INVERSE"):
        return shape == "INVERSE"
    return photometric == "MONOCHROME1"


def _facts(dataset) -> DicomFacts:
    """Modality, body part and laterality from the header; a value that cannot be read counts as absent."""
    image_laterality = _text(dataset, "ImageLaterality")
    laterality = image_laterality if image_laterality is not None else _text(dataset, "Laterality")
    return DicomFacts(
        modality=_text(dataset, "Modality"),
        body_part_examined=_text(dataset, "BodyPartExamined"),
        laterality=laterality if laterality in ("L", "R") else None,
    )


def _text(dataset, keyword: str) -> str | None:
    """A code string's (first) value, stripped and upper-cased; None when absent, empty or unreadable."""
    try:
        value = dataset.get(keyword)
        if value is None:
            return None
        if not isinstance(value, str | bytes):
            value = value[0] if len(value) else ""  # a multi-valued element ("DX\\CR")
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        text = str(value).strip().upper()
    except Exception:
        return None
    return text or None


def _ensure_transfer_syntax(dataset) -> None:
    """Infers the Transfer Syntax UID of a file written without file meta, from how pydicom parsed it."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if getattr(dataset, "file_meta", None) is None:
        dataset.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in dataset.file_meta:
        return
    implicit, little_endian = dataset.original_encoding
    if implicit is None or little_endian is None:
        raise CorruptImageError("The DICOM file declares no transfer syntax and its encoding is unclear.")
    if implicit:
        dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian


def _rescale(dataset) -> tuple[float, float]:
    """Returns (Rescale Slope, Rescale Intercept), top level first, then the shared functional groups."""
    sources = [dataset]
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared and "PixelValueTransformationSequence" in shared[0]:
        sources.append(shared[0].PixelValueTransformationSequence[0])
    for source in sources:
        slope, intercept = source.get("RescaleSlope"), source.get("RescaleIntercept")
        if slope is not None or intercept is not None:
            return float(slope if slope is not None else 1.0), float(intercept or 0.0)
    return 1.0, 0.0


def _invert(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """An image displayed with low values white (MONOCHROME1, Presentation LUT Shape INVERSE) flipped so that
    bone is bright, as in MONOCHROME2."""
    if pixels.dtype in (np.uint8, np.uint16):
        # Exact and type-preserving: the same anatomy stored as MONOCHROME2 decodes to the same array.
        top = min((1 << bits_stored) - 1, np.iinfo(pixels.dtype).max)
        return (top - np.minimum(pixels, top)).astype(pixels.dtype)
    values = pixels.astype(np.float32)
    return values.max() + values.min() - values


def _pixel_spacing(dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm: calibrated Pixel Spacing first, then the detector's Imager Pixel Spacing.

    Imager Pixel Spacing is measured at the detector and so includes the geometric magnification (~5-10 %).
    """
    candidates = [dataset.get("PixelSpacing"), dataset.get("ImagerPixelSpacing")]
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared and "PixelMeasuresSequence" in shared[0]:
        candidates.append(shared[0].PixelMeasuresSequence[0].get("PixelSpacing"))
    for value in candidates:
        try:
            row, column = (float(part) for part in value)
        except (TypeError, ValueError):
            continue
        if all(math.isfinite(part) and part > 0 for part in (row, column)):
            return row, column
    return None
