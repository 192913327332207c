"""The decoded image, the DICOM header facts that come with it, and the checks every decoder shares (pixel
limit, colour to grayscale, pixel types)."""

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

# Modality (0008,0060) codes whose images can be a projection radiograph of a hand (PS3.3 C.7.3.1.1.1):
# - CR (computed radiography, storage phosphor plates), DX (digital radiography) and RG (conventional film/screen
#   radiography, e.g. digitised films): the hand radiographs of rheumatology.
# - OT ("other"): secondary captures (scanned films, screenshots, exports from viewers) carry it; so do old files.
#   A missing Modality is allowed for the same reason (it is not in this set, but `non_radiograph_modality`
#   passes it).
# - RF (radio fluoroscopy) and XA (X-ray angiography): projection X-ray equipment; a spot film or a hand
#   angiogram is a projection radiograph, if a poor one for erosion scoring.
# - MG (mammography): projection X-ray; fine-detail mammography film and units have been used for hand
#   radiographs in rheumatoid-arthritis studies.
# Left out, although they are radiographs: IO (intra-oral radiography: a sensor inside the mouth) and PX
# (panoramic dental X-ray: a rotating tomograph of the jaws) cannot image a hand; BMD (bone densitometry, DXA)
# and RTIMAGE (radiotherapy portal images) are projection X-ray images but not diagnostic radiographs. Neither
# are they rejected by `non_radiograph_modality`: they are X-ray projections, so rejecting them is left to the
# body-part model.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "RG", "RF", "XA", "MG", "OT"})

# Modality codes whose images are certainly not projection radiographs (PS3.3 C.7.3.1.1.1, defined terms and
# retired ones): cross-sectional imaging, imaging without X-rays, and objects that are no image at all.
# Not listed, so never rejected on the modality alone: the projection X-ray codes above and IO, PX, BMD,
# RTIMAGE; HC (hard copy: a print may be of a radiograph); XC (external-camera photography: a photograph of a
# film on a light box is how many radiographs reach us); the retired X-ray codes CF, DF, DS, VF (cine and digital
# fluorography, digital subtraction angiography, video fluorography); and any code not in the standard
# (some systems write "XR", "DR" and the like). PA (photoacoustic imaging) is left out too: the same letters name
# the posteroanterior view, and refusing a mislabelled radiograph costs more than letting a photoacoustic image
# reach the body-part model.
NON_RADIOGRAPH_MODALITIES = frozenset(
    {
        # Cross-sectional and tomographic imaging.
        "CT", "MR", "NM", "PT", "US", "BDUS", "IVUS", "OCT", "IVOCT", "OPT", "OPTBSV", "OPTENF",
        # Imaging without X-rays: endoscopy, photography of the eye, microscopy, surface scans, thermography...
        "ES", "OP", "SM", "GM", "CFM", "DMS", "DG", "TG", "BI", "LS", "OSS", "M3D", "TEXTUREMAP", "OPM", "STAIN",
        # Waveforms, measurements and documents.
        "ECG", "EEG", "EMG", "EOG", "EPS", "HD", "RESP", "AU", "POS", "AR", "KER", "LEN", "IOL", "OAM", "SRF",
        "VA", "OPV", "DOC",
        # Objects about other objects: reports, selections, presentation states, segmentations, plans, RT.
        "SR", "KO", "PR", "REG", "SEG", "FID", "RWV", "SMR", "PLAN", "ANN", "ASMT", "CTPROTOCOL", "XAPROTOCOL",
        "RTDOSE", "RTPLAN", "RTSTRUCT", "RTRECORD", "RTINTENT", "RTRAD", "RTSEGANN",
        # Retired codes of the same kinds (Doppler, echocardiography, endoscopies, MR angiography and
        # spectroscopy, SPECT, fluorescein angiography, fundoscopy, digital microscopy, refraction).
        "CD", "DD", "EC", "CP", "CS", "LP", "MA", "MS", "ST", "FA", "FS", "DM", "OPR",
    }
)  # fmt: skip


@dataclass(frozen=True)
class DicomFacts:
    """What a DICOM header says about the image, for checking it against the models (nothing about a person).

    Attributes:
        modality: Modality (0008,0060), stripped and upper-cased, e.g. "DX", "CR", "CT"; None when absent.
        body_part_examined: Body Part Examined (0018,0015), stripped and upper-cased, e.g. "HAND"; None when
            absent.
        laterality: "L" or "R": Image Laterality (0020,0062) when present, else the series' Laterality
            (0020,0060). None when neither says left or right, including Image Laterality "B" (both) or "U"
            (unpaired), which is not overridden by the series' value.
    """

    modality: str | None = None
    body_part_examined: str | None = None
    laterality: str | None = None


def non_radiograph_modality(facts: DicomFacts | None) -> str | None:
    """The modality code when it says the image is certainly not a projection radiograph, else None.

    Returns e.g. "CT", "MR" or "US" (see `NON_RADIOGRAPH_MODALITIES`). None for the projection X-ray codes (CR,
    DX, RG, ...), for OT, for a missing modality, for codes not in the standard and for non-DICOM uploads
    (`facts` None): only a code that rules a radiograph out counts as evidence.
    """
    if facts is None or facts.modality is None:
        return None
    return facts.modality if facts.modality in NON_RADIOGRAPH_MODALITIES else None


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """One decoded radiograph, grayscale, bone bright.

    Attributes:
        pixels: 2-D array (height, width) as decoded: uint8, uint16 or float32 (float32 when a DICOM rescale
            was applied or the source held signed or floating-point samples). Bone is bright: DICOM
            polarity (MONOCHROME1, Presentation LUT Shape INVERSE) is already applied.
        format: The container format: "png", "jpeg", "tiff" or "dicom".
        was_color: True when the source had colour content (not merely RGB channels holding the same gray).
            A colour photograph is a hint that the upload is not a radiograph.
        pixel_spacing_mm: (row spacing, column spacing) in millimetres, DICOM order, from Pixel Spacing or
            Imager Pixel Spacing; None when the file does not say (always for PNG/JPEG/TIFF, whose DPI fields
            describe print size, not anatomy).
        bits: Significant bits per sample in the source (8 or 16 for rasters; Bits Stored for DICOM, e.g. 12).
        dicom: Modality, body part and laterality from a DICOM header (see `DicomFacts`); None for PNG, JPEG
            and TIFF.
    """

    pixels: np.ndarray
    format: str
    was_color: bool
    pixel_spacing_mm: tuple[float, float] | None
    bits: int
    dicom: DicomFacts | None = None

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
