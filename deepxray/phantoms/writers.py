"""Writing phantoms as files: 16-bit PNG, 8-bit JPEG, or DICOM (DX), with no real patient data in any tag."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from deepxray.phantoms.phantom import Phantom
from deepxray.phantoms.render import OUTPUT_MAX

FORMATS = ("png", "jpeg", "dicom")
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}
PHOTOMETRICS = ("MONOCHROME2", "MONOCHROME1")
DICOM_COMPRESSIONS = ("none", "rle", "jpeg2000")
PRESENTATION_LUT_SHAPES = ("IDENTITY", "INVERSE")
# `write_dicom(preamble=TIFF_PREAMBLE)`: a dual-personality file, DICOM and TIFF at once.
TIFF_PREAMBLE = "tiff"
DICOM_PREAMBLE_BYTES = 128
JPEG_QUALITY = 92

DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BODY_PART_EXAMINED = {"hand": "HAND", "foot": "FOOT", "chest": "CHEST", "knee": "KNEE", "skull": "SKULL"}


def to_8bit(image: np.ndarray) -> np.ndarray:
    """12-bit radiograph values to 8 bits (pictures are already 8-bit)."""
    if image.dtype == np.uint8:
        return image
    return ((image.astype(np.uint32) * 255 + OUTPUT_MAX // 2) // OUTPUT_MAX).astype(np.uint8)


def _bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image


def write_png(path: Path, image: np.ndarray) -> None:
    """PNG keeps a radiograph's 12-bit values in a 16-bit file.

    Level 1 with the RLE strategy encodes a full-size radiograph in about 0.18 s on one core here, against 0.24 s
    for plain level 1 and 0.33 s for level 3, and the files come out no larger.
    """
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    if not cv2.imwrite(str(path), _bgr(image), params):
        raise OSError(f"could not write {path}")


def write_jpeg(path: Path, image: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    if not cv2.imwrite(str(path), _bgr(to_8bit(image)), [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"could not write {path}")


def default_modality(phantom: Phantom) -> str:
    """The Modality a phantom's DICOM file has unless told otherwise: DX for a radiograph, OT for a picture."""
    return "DX" if phantom.image.dtype == np.uint16 else "OT"


def write_dicom(
    path: Path | BinaryIO,
    phantom: Phantom,
    uid_seed: str,
    photometric: str = "MONOCHROME2",
    compression: str = "none",
    *,
    modality: str | None = None,
    body_part_examined: str | None = None,
    image_laterality: str | None = None,
    presentation_lut_shape: str | None = None,
    preamble: bytes | str | None = None,
) -> str:
    """Write a DX image (radiographs) or a secondary capture (pictures); returns the transfer syntax UID.

    Identifiers are synthetic and derived from `uid_seed`, so the same phantom gives the same file. The header
    options exist to write what archives write, including what a reader must not trust blindly.

    Args:
        path: The file to write, or a binary file object.
        phantom: The image and what is known about it.
        uid_seed: Seed of the synthetic UIDs.
        photometric: MONOCHROME2, or MONOCHROME1 (as some detectors write: low values displayed white).
        compression: "none", "rle" or "jpeg2000" (lossless).
        modality: Modality (0008,0060); None: "DX" for a radiograph, "OT" for a picture; "" leaves it out.
        body_part_examined: Body Part Examined (0018,0015); None: from the phantom ("HAND", "CHEST", ...; pictures
            have none); "" leaves it out.
        image_laterality: Image Laterality (0020,0062); None: the phantom's ("L"/"R" for a hand, "B" for both
            hands); "" leaves it out.
        presentation_lut_shape: Presentation LUT Shape (2050,0020) of a grayscale image: None (not written),
            "IDENTITY" or "INVERSE". Not written for colour images. The stored values follow the polarity the
            header then declares, so that a reader following the standard shows bone bright: inverted (bone low)
            when the shape is INVERSE, or when there is no shape and the image is MONOCHROME1; as rendered (bone
            high) otherwise. MONOCHROME1 with INVERSE is the conforming DX pair; MONOCHROME2 with INVERSE and
            MONOCHROME1 with IDENTITY contradict each other, and the shape wins (see
            `deepxray.imaging.dicom._minimum_shows_white`).
        preamble: The 128-byte File Preamble: None, all zero as usual; bytes, written as given and padded with
            zeros (at most 128 bytes); `TIFF_PREAMBLE` ("tiff"), a little-endian TIFF header whose one strip is the
            DICOM Pixel Data, so that TIFF readers show the stored image: a dual-personality file (uncompressed
            only).
    """
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid

    if photometric not in PHOTOMETRICS:
        raise ValueError(f"photometric must be one of {PHOTOMETRICS}")
    if presentation_lut_shape is not None and presentation_lut_shape not in PRESENTATION_LUT_SHAPES:
        raise ValueError(f"presentation_lut_shape must be None or one of {PRESENTATION_LUT_SHAPES}")
    if isinstance(preamble, str) and preamble != TIFF_PREAMBLE:
        raise ValueError(f"preamble must be None, bytes or {TIFF_PREAMBLE!r}")
    if isinstance(preamble, bytes) and len(preamble) > DICOM_PREAMBLE_BYTES:
        raise ValueError(f"a preamble has at most {DICOM_PREAMBLE_BYTES} bytes")
    if preamble == TIFF_PREAMBLE and compression != "none":
        raise ValueError("a TIFF preamble needs uncompressed pixel data (--dicom-compression none)")
    image = phantom.image
    is_radiograph = image.dtype == np.uint16
    sop_class = DX_IMAGE_STORAGE if is_radiograph else SECONDARY_CAPTURE

    def uid(part: str) -> str:
        return generate_uid(entropy_srcs=["deepxray-phantom", uid_seed, part])

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = uid("sop")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"  # Explicit VR Little Endian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    # Synthetic identity only: no name, birth date or sex of any person.
    ds.PatientName = "PHANTOM^SYNTHETIC"
    ds.PatientID = f"PHANTOM-{uid_seed}"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = "20200624"
    ds.Manufacturer = "DeepXRay phantom generator"
    ds.ImageComments = "Synthetic phantom; research use only"
    if modality is None:
        modality = default_modality(phantom)
    if modality:
        ds.Modality = modality
    ds.ConversionType = "SYN" if not is_radiograph else None
    if ds.ConversionType is None:
        del ds.ConversionType
    if body_part_examined is None:
        body_part_examined = BODY_PART_EXAMINED.get(phantom.kind, "") if is_radiograph else ""
    if body_part_examined:
        ds.BodyPartExamined = body_part_examined
    if image_laterality is None:
        both = phantom.hands is not None and len(phantom.hands) > 1
        image_laterality = "B" if both else (phantom.laterality or "") if is_radiograph else ""
    if image_laterality:
        ds.ImageLaterality = image_laterality
    if is_radiograph:
        ds.PresentationIntentType = "FOR PRESENTATION"
        spacing = f"{phantom.pixel_spacing_mm:.5f}"
        ds.PixelSpacing = [spacing, spacing]
        ds.ImagerPixelSpacing = [spacing, spacing]
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
    ds.Rows, ds.Columns = image.shape[:2]
    if image.ndim == 3:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16 if is_radiograph else 8
    ds.BitsStored = 12 if is_radiograph else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    pixels = image
    if image.ndim == 2:
        if presentation_lut_shape is not None:
            ds.PresentationLUTShape = presentation_lut_shape
        minimum_white = presentation_lut_shape == "INVERSE" or (
            presentation_lut_shape is None and photometric == "MONOCHROME1"
        )
        if minimum_white:
            pixels = (OUTPUT_MAX if is_radiograph else 255) - image
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    # Lossless: the instance keeps its (synthetic, seeded) UID, and the same phantom gives the same file.
    if compression == "rle":
        ds.compress(RLELossless, generate_instance_uid=False)
    elif compression == "jpeg2000":
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    elif compression != "none":
        raise ValueError(f"compression must be one of {DICOM_COMPRESSIONS}")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if preamble == TIFF_PREAMBLE:
        # Pixel Data is the last element; its value is padded to an even length.
        pixel_offset = len(data) - (len(ds.PixelData) + len(ds.PixelData) % 2)
        if data[pixel_offset - 12 : pixel_offset - 8] != b"\xe0\x7f\x10\x00":
            raise AssertionError("Pixel Data is not the last element")
        data = _tiff_preamble(image, pixel_offset) + data[DICOM_PREAMBLE_BYTES:]
    elif preamble is not None:
        data = preamble.ljust(DICOM_PREAMBLE_BYTES, b"\0") + data[DICOM_PREAMBLE_BYTES:]
    if hasattr(path, "write"):  # a file object (benchmarks write to memory)
        path.write(data)
    else:
        Path(path).write_bytes(data)
    return str(ds.file_meta.TransferSyntaxUID)


def _tiff_preamble(image: np.ndarray, pixel_offset: int) -> bytes:
    """A little-endian TIFF header and IFD in 128 bytes, describing the uncompressed pixels at `pixel_offset`.

    Photometric 1 (BlackIsZero) for gray, 2 for RGB; the TIFF shows the stored values, so a MONOCHROME1 file's
    TIFF face is inverted (DICOM readers must not read such a file as TIFF: `deepxray.imaging.decode`).
    """
    rows, columns = image.shape[:2]
    samples = 1 if image.ndim == 2 else image.shape[2]
    bits = image.dtype.itemsize * 8
    entries = 8
    ifd_end = 8 + 2 + 12 * entries + 4
    tags = [
        (256, 4, 1, columns),  # ImageWidth, LONG
        (257, 4, 1, rows),  # ImageLength
        # BitsPerSample, SHORT; three values do not fit in the entry and follow the IFD.
        (258, 3, samples, bits if samples == 1 else ifd_end),
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1 if samples == 1 else 2),  # PhotometricInterpretation
        (273, 4, 1, pixel_offset),  # StripOffsets: the DICOM Pixel Data value
        (277, 3, 1, samples),  # SamplesPerPixel
        (279, 4, 1, rows * columns * samples * image.dtype.itemsize),  # StripByteCounts
    ]
    header = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", entries)
    for tag, kind, count, value in tags:
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 and count == 1 else struct.pack("<I", value)
        header += struct.pack("<HHI", tag, kind, count) + packed
    header += struct.pack("<I", 0)  # no next IFD
    if samples > 1:
        header += struct.pack("<3H", bits, bits, bits)
    if len(header) > DICOM_PREAMBLE_BYTES:
        raise AssertionError("TIFF header longer than the preamble")
    return header.ljust(DICOM_PREAMBLE_BYTES, b"\0")
