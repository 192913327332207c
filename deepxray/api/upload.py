"""Reading the radiograph of a request: the body itself (image/png, image/jpeg, application/dicom,
application/octet-stream) or the multipart field `xray`, never more bytes than the limit allows."""

from __future__ import annotations

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from deepxray.api.errors import UPLOAD_FIELD, MalformedRequestError, MissingUploadError, UploadTooLargeError

# Room for the multipart boundaries and part headers around the file, on top of the file size limit.
MULTIPART_OVERHEAD = 64 * 2**10


class _InMemoryMultiPartParser(MultiPartParser):
    """Starlette's multipart parser, keeping the (size-capped) file in memory instead of spooling it to disk."""

    def __init__(self, headers: Headers, stream, spool_max_size: int):
        super().__init__(headers, stream, max_files=1, max_fields=16, max_part_size=64 * 2**10)
        self.spool_max_size = spool_max_size


# Media types `POST /score` takes as the whole request body (beside multipart): the client skips multipart
# encoding and the ingress skips its parsing. The type is only where to look: the bytes decide the format.
RAW_MEDIA_TYPES = ("image/png", "image/jpeg", "application/dicom", "application/octet-stream")


async def read_upload(request: Request, max_bytes: int) -> bytes:
    """The radiograph's bytes: the whole body for a raw upload (`RAW_MEDIA_TYPES`), else the multipart field
    `xray`; never more bytes than the limit allows.

    A declared Content-Length over the limit is refused before the body is read; a body that grows past it
    (chunked uploads) is refused as soon as it does.
    """
    content_type = request.headers.get("content-type", "").lower()
    media_type = content_type.split(";", 1)[0].strip()
    raw = media_type in RAW_MEDIA_TYPES
    if not raw and media_type != "multipart/form-data":
        raise MissingUploadError()
    body_cap = max_bytes if raw else max_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_cap:
        raise too_large(int(declared), max_bytes)

    async def capped_body():
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_cap:
                raise too_large(None, max_bytes)
            yield chunk

    if raw:
        return await _read_raw(capped_body())
    try:
        form = await _InMemoryMultiPartParser(request.headers, capped_body(), spool_max_size=body_cap).parse()
    except MultiPartException as exc:
        raise MalformedRequestError(f"The multipart body could not be parsed: {exc.message}") from None
    except ClientDisconnect:
        raise MalformedRequestError("The upload ended before it was complete.") from None
    try:
        upload = form.get(UPLOAD_FIELD)
        if not isinstance(upload, UploadFile):
            raise MissingUploadError()
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise too_large(len(data), max_bytes)
    return data


async def _read_raw(chunks) -> bytes:
    """A raw upload's body, whole (an empty one is the decoder's `empty_file`, as an empty multipart file is)."""
    parts = []
    try:
        async for chunk in chunks:
            parts.append(chunk)
    except ClientDisconnect:
        raise MalformedRequestError("The upload ended before it was complete.") from None
    return b"".join(parts)


def too_large(size: int | None, max_bytes: int) -> UploadTooLargeError:
    limit = f"the limit is {_readable(max_bytes)}"
    if size is None:
        return UploadTooLargeError(f"The upload is larger than allowed; {limit}.")
    return UploadTooLargeError(f"The upload has {_readable(size)}; {limit}.")


def _readable(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"
