"""Why an upload could not become an image, with the HTTP status and error code the service answers with.

The ingress turns any `ImagingError` into `{"error": code, "detail": message}` with `status`, so every way a
file can be bad is a 4xx here and never a 500 there.
"""

# The formats `decode_image` reads, as `DecodedImage.format` names them. Kept here because the 415 message
# lists them and the decoder imports this module, not the other way round.
SUPPORTED_FORMATS: tuple[str, ...] = ("png", "jpeg", "tiff", "dicom")


class ImagingError(Exception):
    """Base class: an upload that cannot be turned into an image.

    Attributes:
        status: The HTTP status the service answers with.
        code: A short machine-readable error code (the `error` field of the JSON answer).
        message: A human-readable sentence (the `detail` field); it never contains patient data.
    """

    status: int = 400
    code: str = "bad_image"
    default_message: str = "The file could not be read as an image."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    def to_json(self) -> dict[str, str]:
        """Returns the error body of the `/score` contract."""
        return {"error": self.code, "detail": self.message}


class EmptyImageError(ImagingError):
    """The upload has no bytes."""

    status = 400
    code = "empty_file"
    default_message = "The uploaded file is empty."


class CorruptImageError(ImagingError):
    """The file is in a format we read, but cannot be decoded or is truncated."""

    status = 400
    code = "undecodable"
    default_message = "The image could not be decoded; the file may be truncated or damaged."


class UnsupportedFormatError(ImagingError):
    """The file is not in any format we read. The message always lists the formats we do read."""

    status = 415
    code = "unsupported_format"
    default_message = "The file is not an image format we read."

    def __init__(self, message: str | None = None) -> None:
        formats = ", ".join(name.upper() for name in SUPPORTED_FORMATS)
        super().__init__(f"{message or self.default_message} Supported formats: {formats}.")


class ImageTooLargeError(ImagingError):
    """The upload is over the byte limit, or the image declares more pixels than the pixel limit.

    The pixel limit protects against decompression bombs: a few kilobytes of PNG can declare gigapixels.
    """

    status = 413
    code = "too_large"
    default_message = "The image is too large."
