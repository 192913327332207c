"""The one preprocessing path shared by training, evaluation and serving.

decode (bytes to a bone-bright grayscale array) -> normalise (float32 in [0, 1]) -> views for the models
(letterboxed squares, mirrored right hands) and joint crops from the full-resolution image. Serving and training
normalise only what the models see: the views and the crops (`deepxray.imaging.model_inputs.NormalisedImage`).

Importing this package does not import pydicom (only DICOM uploads pay for it), scipy (only views whose rows do
not divide the image's evenly) nor TensorFlow.
"""

from deepxray.imaging.crop import (
    JOINT_CROP_FACTOR,
    crop_joint,
    finger_axis_angles,
    joint_crop_size,
)
from deepxray.imaging.decode import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    SUPPORTED_FORMATS,
    DecodedImage,
    decode_image,
)
from deepxray.imaging.decoded import (
    NON_RADIOGRAPH_MODALITIES,
    PROJECTION_MODALITIES,
    DicomFacts,
    non_radiograph_modality,
)
from deepxray.imaging.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    ImagingError,
    UnsupportedFormatError,
)
from deepxray.imaging.normalize import normalize_intensity
from deepxray.imaging.views import ViewTransform, letterbox, mirror_horizontal, mirror_points_horizontal

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "JOINT_CROP_FACTOR",
    "NON_RADIOGRAPH_MODALITIES",
    "PROJECTION_MODALITIES",
    "SUPPORTED_FORMATS",
    "CorruptImageError",
    "DecodedImage",
    "DicomFacts",
    "EmptyImageError",
    "ImageTooLargeError",
    "ImagingError",
    "UnsupportedFormatError",
    "ViewTransform",
    "crop_joint",
    "decode_image",
    "finger_axis_angles",
    "joint_crop_size",
    "letterbox",
    "mirror_horizontal",
    "mirror_points_horizontal",
    "non_radiograph_modality",
    "normalize_intensity",
]
