"""Why an upload could not become an image, with the HTTP status and error code the service answers with.

`ImagingError` is a `deepxray.api.errors.ApiError`: the service renders it as `{"error": code, "detail": ...}`
with `status`, so every way a file can be bad is a 4xx here and never a 500 there.
"""

from deepxray.api.errors import ApiError

# The formats `decode_image` reads, as `DecodedImage.format` names them. Kept here because the 415 message
# lists them and the decoder imports this module, not the other way round.
SUPPORTED_FORMATS: tuple[str, ...] = ("png", "jpeg", "tiff", "dicom")


class ImagingError(ApiError, status=400, code="bad_image"):
    """Base class: an upload that cannot be turned into an image (`detail` never contains patient data)."""

    default_detail = "The file could not be read as an image."


class EmptyImageError(ImagingError, code="empty_file"):
    default_detail = "The uploaded file is empty."


class CorruptImageError(ImagingError, code="undecodable"):
    """The file is in a format we read, but cannot be decoded or is truncated."""

    default_detail = "The image could not be decoded; the file may be truncated or damaged."


class UnsupportedFormatError(ImagingError, status=415, code="unsupported_format"):
    """The file is not in any format we read. The detail always lists the formats we do read."""

    def __init__(self, detail: str | None = None) -> None:
        formats = ", ".join(name.upper() for name in SUPPORTED_FORMATS)
        super().__init__(f"{detail or 'The file is not an image format we read.'} Supported formats: {formats}.")


class ImageTooLargeError(ImagingError, status=413, code="too_large"):
    """The upload is over the byte limit, or the image declares more pixels than the pixel limit.

    The pixel limit protects against decompression bombs: a few kilobytes of PNG can declare gigapixels.
    """

    default_detail = "The image is too large."
