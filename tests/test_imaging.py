"""Unit tests of the shared preprocessing: decoding, normalisation, views and joint crops.

Every file is written here, in memory, with OpenCV, Pillow or pydicom: nothing is downloaded.
"""

import io
import math
import struct
import time
import warnings
import zlib

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from deepxray.imaging import (
    JOINT_CROP_FACTOR,
    NON_RADIOGRAPH_MODALITIES,
    PROJECTION_MODALITIES,
    SUPPORTED_FORMATS,
    CorruptImageError,
    DecodedImage,
    DicomFacts,
    EmptyImageError,
    ImageTooLargeError,
    ImagingError,
    UnsupportedFormatError,
    crop_joint,
    decode_image,
    finger_axis_angles,
    joint_crop_size,
    letterbox,
    mirror_horizontal,
    mirror_points_horizontal,
    non_radiograph_modality,
    normalize_intensity,
)
from deepxray.imaging.model_inputs import NormalisedImage, joint_crops
from deepxray.labels import JOINT_NAMES

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-0042-SECRET"


# --- helpers that write test files ----------------------------------------------------------------------


def anatomy(height: int = 48, width: int = 40, top: int = 4095, seed: int = 0) -> np.ndarray:
    """A smooth, bone-bright-in-the-middle uint16 image with noise, values in [0, top]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    blob = np.exp(-(((x - width / 2) / (width / 4)) ** 2) - ((y - height / 2) / (height / 4)) ** 2)
    pixels = 0.1 * top + 0.8 * top * blob + rng.normal(0, 0.02 * top, (height, width))
    return np.clip(pixels, 0, top).astype(np.uint16)


def encode(pixels: np.ndarray, extension: str) -> bytes:
    ok, buffer = cv2.imencode(extension, pixels)
    assert ok
    return buffer.tobytes()


def dicom_bytes(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    transfer_syntax: str | None = None,
    preamble: bool = True,
    **tags,
) -> bytes:
    """A DX DICOM file with patient tags, optionally compressed; extra keyword arguments become tags."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = DX_STORAGE
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.SOPClassUID = DX_STORAGE
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.PatientName = PATIENT_NAME
    dataset.PatientID = PATIENT_ID
    dataset.PatientBirthDate = "19700101"
    dataset.Modality = "DX"
    dataset.set_pixel_data(pixels, photometric, bits_stored)
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    if transfer_syntax is not None:
        dataset.compress(transfer_syntax, pixels)
    buffer = io.BytesIO()
    if preamble:
        dataset.save_as(buffer, enforce_file_format=True)
    else:
        del dataset.file_meta
        pydicom.dcmwrite(buffer, dataset, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def without_modality(data: bytes) -> bytes:
    """The DICOM file with its Modality removed, as old files and some secondary captures come."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    del dataset.Modality
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny but well-formed PNG whose header declares width x height 8-bit gray pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


# --- decoding rasters -------------------------------------------------------------------------------------


def test_png_16_bit_round_trip_keeps_exact_values():
    pixels = anatomy(top=65535)
    decoded = decode_image(encode(pixels, ".png"))
    assert isinstance(decoded, DecodedImage)
    assert decoded.format == "png"
    assert decoded.pixels.dtype == np.uint16
    assert decoded.bits == 16
    assert not decoded.was_color
    assert decoded.pixel_spacing_mm is None
    assert (decoded.width, decoded.height) == (40, 48)
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_png_8_bit_decodes_exactly():
    pixels = (anatomy() >> 4).astype(np.uint8)
    decoded = decode_image(encode(pixels, ".png"))
    assert decoded.pixels.dtype == np.uint8
    assert decoded.bits == 8
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_jpeg_decodes_close_to_the_original():
    pixels = (anatomy() >> 4).astype(np.uint8)
    decoded = decode_image(encode(pixels, ".jpg"))
    assert decoded.format == "jpeg"
    assert decoded.pixels.shape == pixels.shape
    assert decoded.pixels.dtype == np.uint8
    assert np.abs(decoded.pixels.astype(int) - pixels).mean() < 4


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_decodes_8_and_16_bit(dtype):
    pixels = anatomy(top=np.iinfo(dtype).max).astype(dtype)
    decoded = decode_image(encode(pixels, ".tif"))
    assert decoded.format == "tiff"
    assert decoded.pixels.dtype == dtype
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_big_endian_tiff_from_pillow_decodes():
    pixels = anatomy(top=65535)
    buffer = io.BytesIO()
    height, width = pixels.shape
    Image.frombytes("I;16B", (width, height), pixels.astype(">u2").tobytes()).save(buffer, "TIFF")
    assert buffer.getvalue().startswith(b"MM\x00*")
    np.testing.assert_array_equal(decode_image(buffer.getvalue()).pixels, pixels)


def test_colour_png_becomes_grayscale_and_remembers_colour():
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200  # a red photo
    rgb[::2, :, 2] = 90
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, "PNG")
    decoded = decode_image(buffer.getvalue())
    assert decoded.was_color
    assert decoded.pixels.ndim == 2
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    np.testing.assert_allclose(decoded.pixels, expected, atol=1)


def test_palette_and_rgba_pngs_are_colour():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:8] = (255, 0, 0)
    rgb[8:] = (0, 0, 255)
    for image in (Image.fromarray(rgb).convert("P"), Image.fromarray(rgb).convert("RGBA")):
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        decoded = decode_image(buffer.getvalue())
        assert decoded.was_color
        assert decoded.pixels.ndim == 2


def test_gray_content_saved_as_rgb_jpeg_is_not_colour():
    # Radiographs are often exported as RGB with R = G = B; that is not a colour photo.
    gray = (anatomy(64, 64) >> 4).astype(np.uint8)
    decoded = decode_image(encode(np.dstack([gray, gray, gray]), ".jpg"))
    assert not decoded.was_color
    assert decoded.pixels.ndim == 2


def test_exif_orientation_is_applied():
    pixels = np.zeros((20, 30), np.uint8)
    pixels[0, 0] = 255  # top-left marker
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif.tobytes())
    decoded = decode_image(buffer.getvalue())
    assert decoded.pixels.shape == (30, 20)
    np.testing.assert_array_equal(decoded.pixels, np.rot90(pixels, k=-1))


# --- decoding DICOM ---------------------------------------------------------------------------------------


def test_dicom_monochrome1_and_monochrome2_decode_to_the_same_bone_bright_image():
    bone_bright = anatomy()
    as_monochrome2 = decode_image(dicom_bytes(bone_bright, "MONOCHROME2"))
    as_monochrome1 = decode_image(dicom_bytes(4095 - bone_bright, "MONOCHROME1"))
    assert as_monochrome2.format == as_monochrome1.format == "dicom"
    assert as_monochrome2.bits == 12
    np.testing.assert_array_equal(as_monochrome1.pixels, bone_bright)
    np.testing.assert_allclose(
        normalize_intensity(as_monochrome1.pixels), normalize_intensity(as_monochrome2.pixels), atol=1e-6
    )
    # Bone (the bright blob in the middle) is brighter than the edge.
    assert as_monochrome1.pixels[24, 20] > as_monochrome1.pixels[0, 0]


def test_dicom_rescale_slope_and_intercept_are_applied():
    stored = anatomy()
    decoded = decode_image(dicom_bytes(stored, RescaleSlope=2.0, RescaleIntercept=-100.0))
    assert decoded.pixels.dtype == np.float32
    np.testing.assert_allclose(decoded.pixels, stored * 2.0 - 100.0)


def test_dicom_rescaled_monochrome1_is_still_bone_bright():
    stored = 4095 - anatomy()
    decoded = decode_image(dicom_bytes(stored, "MONOCHROME1", RescaleSlope=0.5, RescaleIntercept=10.0))
    expected = normalize_intensity(anatomy())
    np.testing.assert_allclose(normalize_intensity(decoded.pixels), expected, atol=1e-5)


def test_dicom_pixel_spacing_is_read_and_imager_spacing_is_the_fallback():
    pixels = anatomy()
    assert decode_image(dicom_bytes(pixels, PixelSpacing=[0.1, 0.15])).pixel_spacing_mm == (0.1, 0.15)
    decoded = decode_image(dicom_bytes(pixels, ImagerPixelSpacing=[0.139, 0.139]))
    assert decoded.pixel_spacing_mm == pytest.approx((0.139, 0.139))
    assert decode_image(dicom_bytes(pixels)).pixel_spacing_mm is None


def _encoder_available(transfer_syntax) -> bool:
    return get_encoder(transfer_syntax).is_available


@pytest.mark.parametrize("transfer_syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_compressed_dicom_decodes_to_the_same_pixels_as_uncompressed(transfer_syntax):
    if not _encoder_available(transfer_syntax):
        pytest.skip(f"no installed encoder writes {transfer_syntax.name}")
    pixels = anatomy()
    data = dicom_bytes(pixels, transfer_syntax=transfer_syntax)
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == transfer_syntax
    uncompressed = decode_image(dicom_bytes(pixels)).pixels
    np.testing.assert_array_equal(decode_image(data).pixels, uncompressed)
    np.testing.assert_array_equal(uncompressed, pixels)


def test_jpeg_baseline_dicom_decodes():
    # No installed encoder writes JPEG baseline DICOM, so a JPEG from OpenCV is encapsulated by hand.
    pixels = (anatomy() >> 4).astype(np.uint8)
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(pixels, bits_stored=8)))
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.PixelData = encapsulate([encode(pixels, ".jpg")])
    dataset["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    decoded = decode_image(buffer.getvalue())
    assert decoded.pixels.shape == pixels.shape
    assert np.abs(decoded.pixels.astype(int) - pixels).mean() < 4


def test_multiframe_dicom_gives_the_first_frame():
    frames = np.stack([anatomy(seed=seed) for seed in range(3)])
    decoded = decode_image(dicom_bytes(frames))
    np.testing.assert_array_equal(decoded.pixels, frames[0])


def test_colour_dicom_becomes_grayscale_and_remembers_colour():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 1] = 180
    decoded = decode_image(dicom_bytes(rgb, "RGB", bits_stored=8))
    assert decoded.was_color
    assert decoded.pixels.shape == (16, 16)


def test_dicom_without_preamble_is_read():
    pixels = anatomy()
    data = dicom_bytes(pixels, preamble=False)
    assert data[128:132] != b"DICM"
    np.testing.assert_array_equal(decode_image(data).pixels, pixels)


def test_patient_tags_are_neither_returned_nor_warned_nor_logged(caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing the invalid date warns; only reading it is under test
        data = dicom_bytes(anatomy(), PatientBirthDate="not a date")  # invalid: parsing it would warn
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = decode_image(data)
        with pytest.raises(CorruptImageError) as error:
            decode_image(data[: len(data) - 500])
    text = " ".join(
        [repr(decoded.format), repr(decoded.pixel_spacing_mm), repr(decoded.bits), repr(decoded.dicom)]
        + [str(error.value)]
        + [str(warning.message) for warning in caught]
        + [record.getMessage() for record in caplog.records]
    )
    assert PATIENT_NAME.split("^")[0] not in text
    assert PATIENT_ID not in text
    assert "not a date" not in text
    assert set(vars(decoded)) == {"pixels", "format", "was_color", "pixel_spacing_mm", "bits", "dicom"}
    # The header facts are what the image shows, never whom.
    assert set(vars(decoded.dicom)) == {"modality", "body_part_examined", "laterality"}


def test_dicom_without_an_image_is_an_unsupported_format():
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.SOPClassUID = BASIC_TEXT_SR
    dataset.PatientName = PATIENT_NAME
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with pytest.raises(UnsupportedFormatError, match="no image"):
        decode_image(buffer.getvalue())


def tiff_header(size: int = 128) -> bytes:
    """The first `size` bytes of a small TIFF written by Pillow: a valid TIFF header, as dual-personality
    DICOM files carry in their preamble."""
    buffer = io.BytesIO()
    Image.fromarray(anatomy(8, 8)).save(buffer, format="TIFF")
    return buffer.getvalue()[:size].ljust(size, b"\0")


PREAMBLES = {
    "tiff": tiff_header(),
    "png-magic": b"\x89PNG\r\n\x1a\n".ljust(128, b"\0"),
    "jpeg-magic": b"\xff\xd8\xff\xe0".ljust(128, b"\x55"),
    "random": np.random.default_rng(3).integers(0, 256, 128, dtype=np.uint8).tobytes(),
}


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("preamble", list(PREAMBLES), ids=list(PREAMBLES))
def test_dicom_with_anything_in_its_preamble_decodes_as_dicom(preamble, photometric):
    """A dual-personality file (a TIFF header in the 128-byte preamble, "DICM" at 128) is DICOM: read as a TIFF
    it would lose the MONOCHROME1 inversion and the spacing, or be refused."""
    bone_bright = anatomy()
    stored = bone_bright if photometric == "MONOCHROME2" else 4095 - bone_bright
    plain = dicom_bytes(stored, photometric, PixelSpacing=[0.1, 0.12])
    dual = PREAMBLES[preamble] + plain[128:]
    assert plain[:128] == bytes(128) and dual[128:132] == b"DICM"
    if preamble == "tiff":
        assert dual.startswith((b"II*\0", b"MM\0*"))
    decoded, reference = decode_image(dual), decode_image(plain)
    assert decoded.format == reference.format == "dicom"
    assert np.array_equal(decoded.pixels, reference.pixels)
    assert np.array_equal(decoded.pixels, bone_bright)
    assert decoded.pixel_spacing_mm == reference.pixel_spacing_mm == pytest.approx((0.1, 0.12))
    assert decoded.bits == 12
    assert decoded.dicom == reference.dicom == DicomFacts(modality="DX")


# Presentation LUT Shape against Photometric Interpretation, and whether a reader following the standard shows
# the lowest stored value white (PS3.3 C.7.6.1, C.8.11.3, C.11.6.1.2; see `_minimum_shows_white`).
POLARITIES = [
    ("MONOCHROME2", None, False),
    ("MONOCHROME1", None, True),
    ("MONOCHROME2", "IDENTITY", False),  # the conforming pair for MONOCHROME2
    ("MONOCHROME1", "INVERSE", True),  # the conforming pair for MONOCHROME1: one inversion, not two
    ("MONOCHROME2", "INVERSE", True),  # contradictory: the shape, the later pipeline stage, decides
    ("MONOCHROME1", "IDENTITY", False),  # contradictory: likewise
    ("MONOCHROME1", "LIN OD", True),  # a print-only shape: ignored
]


@pytest.mark.parametrize(("photometric", "shape", "minimum_white"), POLARITIES)
def test_presentation_lut_shape_and_photometric_give_bone_bright(photometric, shape, minimum_white):
    bone_bright = anatomy()
    stored = 4095 - bone_bright if minimum_white else bone_bright
    tags = {"PresentationLUTShape": shape} if shape else {}
    decoded = decode_image(dicom_bytes(stored, photometric, **tags))
    assert np.array_equal(decoded.pixels, bone_bright)
    assert decoded.pixels[24, 20] > decoded.pixels[0, 0]  # bone (the middle) brighter than the edge


def test_presentation_lut_shape_inverse_applies_after_the_rescale():
    stored = 4095 - anatomy()
    decoded = decode_image(dicom_bytes(stored, PresentationLUTShape="INVERSE", RescaleSlope=0.5, RescaleIntercept=7))
    np.testing.assert_allclose(normalize_intensity(decoded.pixels), normalize_intensity(anatomy()), atol=1e-5)


def test_presentation_lut_shape_written_in_lower_case_is_honoured():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when writing an invalid code string
        data = dicom_bytes(4095 - anatomy(), PresentationLUTShape="inverse ")
    assert np.array_equal(decode_image(data).pixels, anatomy())


# --- DICOM header facts -----------------------------------------------------------------------------------


def test_dicom_header_facts_are_read_and_normalised():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lower case is invalid in a code string; archives hold it anyway
        data = dicom_bytes(anatomy(), Modality="cr ", BodyPartExamined=" hand", ImageLaterality="r")
    assert decode_image(data).dicom == DicomFacts(modality="CR", body_part_examined="HAND", laterality="R")
    assert decode_image(without_modality(dicom_bytes(anatomy()))).dicom == DicomFacts()


@pytest.mark.parametrize(
    ("tags", "laterality"),
    [
        ({"ImageLaterality": "L"}, "L"),
        ({"Laterality": "R"}, "R"),  # the series' laterality when the image has none
        ({"ImageLaterality": "L", "Laterality": "R"}, "L"),  # the image's own wins
        ({"ImageLaterality": "B", "Laterality": "L"}, None),  # both hands on one image: neither side
        ({"ImageLaterality": "U"}, None),  # unpaired
        ({}, None),
    ],
)
def test_laterality_comes_from_image_laterality_then_laterality(tags, laterality):
    assert decode_image(dicom_bytes(anatomy(), **tags)).dicom.laterality == laterality


def test_header_facts_are_read_without_a_preamble_and_absent_for_rasters():
    data = dicom_bytes(anatomy(), preamble=False, Modality="MR", BodyPartExamined="HAND")
    assert decode_image(data).dicom == DicomFacts(modality="MR", body_part_examined="HAND")
    assert decode_image(encode(anatomy(), ".png")).dicom is None


@pytest.mark.parametrize("modality", ["CT", "MR", "US", "NM", "PT", "SR", "ES", "XC", "DX", "CR", "RG", "OT", None])
def test_a_cross_sectional_or_non_x_ray_modality_rules_out_a_radiograph(modality):
    data = dicom_bytes(anatomy(), Modality=modality) if modality else without_modality(dicom_bytes(anatomy()))
    expected = modality if modality in ("CT", "MR", "US", "NM", "PT", "SR", "ES") else None
    assert non_radiograph_modality(decode_image(data).dicom) == expected


def test_modality_sets():
    # Projection X-ray codes, "other" and missing modalities are never reason to refuse an image.
    assert {"CR", "DX", "RG", "OT"} <= PROJECTION_MODALITIES
    assert not PROJECTION_MODALITIES & NON_RADIOGRAPH_MODALITIES
    for code in (*PROJECTION_MODALITIES, "IO", "PX", "BMD", "RTIMAGE", "XC", "HC", "XR", "DR", "PA", None):
        assert non_radiograph_modality(DicomFacts(modality=code)) is None, code
    for code in ("CT", "MR", "NM", "PT", "US", "OCT", "SM", "ECG", "SR", "SEG", "RTDOSE", "DOC"):
        assert non_radiograph_modality(DicomFacts(modality=code)) == code
    assert non_radiograph_modality(None) is None


# --- bad input ------------------------------------------------------------------------------------------


def test_empty_bytes_are_an_empty_file():
    with pytest.raises(EmptyImageError) as error:
        decode_image(b"")
    assert (error.value.status, error.value.code) == (400, "empty_file")


def truncated_files() -> list:
    pixels8 = (anatomy(64, 64) >> 4).astype(np.uint8)
    pixels16 = anatomy(64, 64)
    cases = {
        "png": encode(pixels16, ".png"),
        "jpeg": encode(pixels8, ".jpg"),
        "progressive-jpeg": cv2.imencode(".jpg", pixels8, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(),
        "tiff": encode(pixels16, ".tif"),
        "dicom": dicom_bytes(pixels16),
        "dicom-rle": dicom_bytes(pixels16, transfer_syntax=RLELossless),
    }
    params = [
        pytest.param(data[: int(len(data) * fraction)], id=f"{name}-{fraction}")
        for name, data in cases.items()
        for fraction in (0.5, 0.98)
    ]
    params.append(pytest.param(cases["dicom"][:140], id="dicom-header-only"))
    params.append(pytest.param(cases["jpeg"][:-2], id="jpeg-without-end-marker"))
    return params


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow and pydicom warn about what they cannot read
@pytest.mark.parametrize("data", truncated_files())
def test_truncated_files_are_undecodable(data):
    with pytest.raises(CorruptImageError) as error:
        decode_image(data)
    assert (error.value.status, error.value.code) == (400, "undecodable")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_damaged_files_raise_only_imaging_errors():
    # Cut files and overwritten runs: decoding may succeed or fail, but every failure is an ImagingError.
    rng = np.random.default_rng(5)
    pixels = anatomy(32, 32)
    originals = [
        encode(pixels, ".png"),
        encode((pixels >> 4).astype(np.uint8), ".jpg"),
        encode(pixels, ".tif"),
        dicom_bytes(pixels),
        dicom_bytes(pixels, transfer_syntax=RLELossless),
        dicom_bytes(pixels, preamble=False),
    ]
    for original in originals:
        for trial in range(40):
            damaged = bytearray(original)
            position = int(rng.integers(0, len(damaged)))
            if trial % 2:
                damaged[position : position + 8] = rng.bytes(8)
            else:
                damaged = damaged[: max(1, position)]
            try:
                decoded = decode_image(bytes(damaged))
            except ImagingError:
                continue
            assert decoded.pixels.ndim == 2
            assert decoded.pixels.dtype in (np.uint8, np.uint16, np.float32)


def test_pillow_decodes_what_opencv_cannot(monkeypatch):
    # OpenCV lacks some variants (it returns None for them); Pillow is the fallback for those.
    pixels = anatomy(top=65535)
    data = encode(pixels, ".png")
    monkeypatch.setattr(cv2, "imdecode", lambda *args: None)
    decoded = decode_image(data)
    assert decoded.pixels.dtype == np.uint16
    np.testing.assert_array_equal(decoded.pixels, pixels)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    assert decode_image(encode(rgb, ".png")).was_color
    with pytest.raises(CorruptImageError):
        decode_image(data[: len(data) // 2])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_garbage_behind_valid_magic_bytes_is_undecodable():
    for magic in (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"\0" * 128 + b"DICM"):
        with pytest.raises(CorruptImageError):
            decode_image(magic + bytes(range(256)) * 4)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom, asked to parse the DICOM look-alike
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(np.random.default_rng(1).bytes(4096), id="random"),
        pytest.param(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n", id="pdf"),
        pytest.param(b"patient,score\nA,3\nB,0\n" * 20, id="text"),
        pytest.param(b"GIF89a" + bytes(64), id="gif"),
        # Looks like the start of a DICOM data set (group 0008) but is not one.
        pytest.param(b"\x08\x00\x05\x00" + np.random.default_rng(2).bytes(2048), id="dicom-lookalike"),
    ],
)
def test_other_files_are_unsupported_and_the_message_lists_our_formats(data):
    with pytest.raises(UnsupportedFormatError) as error:
        decode_image(data)
    assert (error.value.status, error.value.code) == (415, "unsupported_format")
    for name in ("PNG", "JPEG", "TIFF", "DICOM"):
        assert name in error.value.detail
    assert error.value.to_json() == {"error": "unsupported_format", "detail": error.value.detail}


@pytest.mark.parametrize("side", [100_000, 8_000], ids=["over-pillow-limit", "over-our-limit"])
def test_png_declaring_a_huge_size_is_rejected_fast_without_decoding(side):
    data = png_header_only(side, side)
    assert len(data) < 100
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as error:
        decode_image(data)
    assert time.perf_counter() - start < 0.1
    assert (error.value.status, error.value.code) == (413, "too_large")


def test_pixel_limit_applies_to_every_format():
    pixels = anatomy(64, 64)
    for data in (encode(pixels, ".png"), encode(pixels, ".tif"), dicom_bytes(pixels)):
        with pytest.raises(ImageTooLargeError, match="megapixels"):
            decode_image(data, max_pixels=64 * 63)
        assert decode_image(data, max_pixels=64 * 64).pixels.shape == (64, 64)


def test_bytes_over_the_limit_are_too_large():
    data = encode(anatomy(64, 64), ".png")
    with pytest.raises(ImageTooLargeError, match="MiB"):
        decode_image(data, max_bytes=len(data) - 1)
    assert decode_image(data, max_bytes=len(data)).width == 64


def test_error_classes_carry_status_and_code():
    expected = {
        EmptyImageError: (400, "empty_file"),
        CorruptImageError: (400, "undecodable"),
        UnsupportedFormatError: (415, "unsupported_format"),
        ImageTooLargeError: (413, "too_large"),
    }
    for error_class, (status, code) in expected.items():
        assert issubclass(error_class, ImagingError)
        error = error_class()
        assert (error.status, error.code) == (status, code)
        assert error.detail and str(error) == error.detail
    assert SUPPORTED_FORMATS == ("png", "jpeg", "tiff", "dicom")


# --- normalisation ----------------------------------------------------------------------------------------


def test_normalize_maps_percentiles_and_ignores_outliers():
    rng = np.random.default_rng(3)
    pixels = rng.uniform(1000, 3000, (512, 640)).astype(np.float32)
    pixels[:3, :3] = 1e9  # hot pixels
    pixels[-3:, -3:] = -1e9  # dead pixels
    normalised = normalize_intensity(pixels)
    assert normalised.dtype == np.float32
    assert normalised.min() == 0.0 and normalised.max() == 1.0
    # Without the outliers the result is (almost) the same: they did not set the contrast.
    clean = pixels.copy()
    clean[:3, :3] = clean[-3:, -3:] = 2000
    interior = np.s_[10:-10, 10:-10]
    assert np.abs(normalize_intensity(clean)[interior] - normalised[interior]).max() < 0.01
    assert abs(float(np.median(normalised)) - 0.5) < 0.02


def test_normalize_handles_constant_integer_and_nan_images():
    for constant in (np.zeros((8, 8), np.uint16), np.full((8, 8), 7.0, np.float32)):
        normalised = normalize_intensity(constant)
        assert normalised.dtype == np.float32
        assert np.all(normalised == 0.0)
    mostly_flat = np.zeros((100, 100), np.uint8)
    mostly_flat[50, 50] = 200  # fewer pixels than the top 0.5 %: falls back to min/max
    assert normalize_intensity(mostly_flat)[50, 50] == 1.0
    with_nan = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    with_nan[0, 0] = np.nan
    assert np.isfinite(normalize_intensity(with_nan)).all()
    with pytest.raises(ValueError):
        normalize_intensity(with_nan, 60, 40)


def test_normalize_16_bit_and_8_bit_versions_agree():
    pixels16 = anatomy(128, 96, top=65535)
    pixels8 = (pixels16 >> 8).astype(np.uint8)
    assert np.abs(normalize_intensity(pixels16) - normalize_intensity(pixels8)).mean() < 0.01


# --- views ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (64, 64), (20, 10)])
def test_letterbox_keeps_aspect_and_maps_points_both_ways(shape):
    height, width = shape
    image = np.zeros(shape, np.float32)
    image[height // 3, width // 4] = 1.0
    view, transform = letterbox(image, 128)
    assert view.shape == (128, 128) and view.dtype == np.float32
    assert transform.scale_x == pytest.approx(transform.scale_y, rel=0.05)
    points = np.array([[0.0, 0.0], [width - 1.0, height - 1.0], [width / 4, height / 3]])
    np.testing.assert_allclose(transform.to_image(transform.to_view(points)), points, atol=1e-9)
    # The bright pixel shows up in the view where to_view says.
    bright = np.array(np.unravel_index(np.argmax(view), view.shape))[::-1]
    np.testing.assert_allclose(bright, transform.to_view([width // 4, height // 3]), atol=1.0)
    # Padding is 0 and the image is centred.
    image_corner = transform.to_view([[-0.5, -0.5], [width - 0.5, height - 0.5]])
    np.testing.assert_allclose(image_corner[0] + image_corner[1], [128 - 1, 128 - 1], atol=1.0)


def test_letterbox_pads_with_zero():
    view, transform = letterbox(np.ones((100, 50), np.float32), 64)
    assert view[:, 0].max() == 0.0 and view[:, -1].max() == 0.0
    assert view[32, 32] == pytest.approx(1.0)
    assert (transform.offset_x, transform.offset_y) == (16, 0)


def test_mirroring_images_and_points_agree():
    image = np.zeros((10, 30), np.float32)
    image[4, 7] = 1.0
    mirrored = mirror_horizontal(image)
    assert mirrored.flags.c_contiguous
    (row,), (column,) = np.nonzero(mirrored)
    np.testing.assert_allclose(mirror_points_horizontal([7.0, 4.0], 30), [column, row])
    points = np.array([[1.5, 2.0], [29.0, 9.0]])
    np.testing.assert_allclose(mirror_points_horizontal(mirror_points_horizontal(points, 30), 30), points)


# --- joint crops ----------------------------------------------------------------------------------------


def hand_centres(scale: float = 1.0, offset=(0.0, 0.0)) -> dict[str, tuple[float, float]]:
    """A left hand seen palm down, fingers up; MCP spacing 40 * scale pixels."""
    mcps = {"mcp1": (60, 300), "mcp2": (110, 220), "mcp3": (150, 210), "mcp4": (190, 215), "mcp5": (230, 230)}
    pips = {"pip1": (30, 240), "pip2": (100, 140), "pip3": (150, 120), "pip4": (200, 130), "pip5": (250, 160)}
    return {name: (x * scale + offset[0], y * scale + offset[1]) for name, (x, y) in {**mcps, **pips}.items()}


def test_crop_size_comes_from_the_hand_and_scales_with_it():
    centres = hand_centres()
    distances = sorted(
        math.dist(centres[a], centres[b]) for a, b in [("mcp2", "mcp3"), ("mcp3", "mcp4"), ("mcp4", "mcp5")]
    )
    assert joint_crop_size(centres) == pytest.approx(distances[1] * JOINT_CROP_FACTOR)
    assert joint_crop_size(hand_centres(scale=2.0)) == pytest.approx(2 * joint_crop_size(centres))
    assert joint_crop_size(hand_centres(offset=(500, 70))) == pytest.approx(joint_crop_size(centres))
    with pytest.raises(ValueError):
        joint_crop_size({"mcp1": (0, 0), "pip1": (0, 10)})


def test_finger_axis_angles_follow_each_ray():
    angles = finger_axis_angles(
        {
            "mcp1": (0, 0), "pip1": (10, -10),  # up and to the right: +45 degrees
            "mcp2": (0, 0), "pip2": (0, -10),  # straight up
            "mcp3": (0, 0), "pip3": (-10, 0),  # to the left: -90 degrees
            "mcp4": (0, 0), "pip4": (0, 10),  # down
            "mcp5": (5, 5), "pip5": (5, 5),  # no direction
        }
    )  # fmt: skip
    assert set(angles) == set(JOINT_NAMES)
    assert angles["mcp1"] == angles["pip1"] == pytest.approx(math.pi / 4)
    assert angles["mcp2"] == pytest.approx(0.0)
    assert angles["pip3"] == pytest.approx(-math.pi / 2)
    assert abs(angles["mcp4"]) == pytest.approx(math.pi)
    assert angles["mcp5"] == 0.0


def centroid(crop: np.ndarray) -> np.ndarray:
    weights = np.clip(crop, 0, None)
    y, x = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]]
    return np.array([(x * weights).sum(), (y * weights).sum()]) / weights.sum()


@pytest.mark.parametrize("angle", [0.0, 0.4, -1.1, math.pi / 2])
@pytest.mark.parametrize("size_px", [40.0, 300.0], ids=["upsampling", "downsampling"])
def test_a_dot_at_the_centre_lands_in_the_crop_centre(angle, size_px):
    image = np.zeros((800, 900), np.float32)
    centre = (412.0, 377.0)
    cv2.circle(image, (412, 377), 3, 1.0, -1)
    crop = crop_joint(image, centre, size_px, out_size=96, angle=angle)
    assert crop.shape == (96, 96) and crop.dtype == np.float32
    np.testing.assert_allclose(centroid(crop), [47.5, 47.5], atol=0.3)


def test_the_crop_turns_the_finger_upright():
    image = np.zeros((400, 400), np.float32)
    mcp, pip = (200.0, 200.0), (260.0, 120.0)  # a finger leaning right
    cv2.line(image, (200, 200), (260, 120), 1.0, 3)
    angle = finger_axis_angles({f"{kind}{ray}": point for ray in range(1, 6) for kind, point in
                                (("mcp", mcp), ("pip", pip))})["mcp2"]  # fmt: skip
    crop = crop_joint(image, mcp, 120.0, out_size=64, angle=angle)
    # The finger runs from the centre straight up: bright above the centre, dark below and to the sides.
    column = crop[:, 31:33].mean(axis=1)
    assert column[5:28].min() > 0.5
    assert column[40:].max() < 0.05
    assert crop[:28, :20].max() < 0.05 and crop[:28, 44:].max() < 0.05


def test_downsampling_crops_do_not_alias():
    # A one-pixel checkerboard shrunk eight times must average to gray, not show stray patterns.
    image = (np.indices((1000, 1000)).sum(axis=0) % 2).astype(np.float32)
    crop = crop_joint(image, (500.0, 500.0), 768.0, out_size=96, angle=0.3)
    assert abs(float(crop.mean()) - 0.5) < 0.01
    assert float(crop.std()) < 0.05


def test_crops_outside_the_image_are_padded_with_zero():
    image = np.ones((100, 100), np.float32)
    crop = crop_joint(image, (0.0, 50.0), 50.0, out_size=50)
    assert crop[:, :20].max() == 0.0
    assert crop[:, 30:].min() == pytest.approx(1.0)
    assert not crop_joint(image, (-500.0, -500.0), 50.0, out_size=50).any()


def test_crop_touches_only_the_region_it_needs():
    # A 40000 x 40000 "image" that is one repeated pixel: warping or copying all of it would need 6 GB.
    huge = np.broadcast_to(np.float32(0.25), (40_000, 40_000))
    start = time.perf_counter()
    crop = crop_joint(huge, (20_000.0, 30_000.0), 500.0, out_size=96, angle=0.7)
    assert time.perf_counter() - start < 0.5
    np.testing.assert_allclose(crop, 0.25, atol=1e-6)


def test_joint_crops_are_in_joint_name_order():
    centres = hand_centres(scale=3.0)
    image = np.zeros((1100, 900), np.float32)
    for index, name in enumerate(JOINT_NAMES):
        x, y = centres[name]
        cv2.circle(image, (round(x), round(y)), 6, (index + 1) / 10, -1)
    crops = joint_crops(NormalisedImage(image), centres, JOINT_NAMES, out_size=64)
    assert crops.shape == (10, 64, 64) and crops.dtype == np.float32
    for index in range(10):
        assert crops[index, 31:33, 31:33].mean() == pytest.approx((index + 1) / 10, abs=0.01)
