"""Image uploads decoded into RGB images, within the service's limits."""

from __future__ import annotations

from fastapi import HTTPException, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from interest.apps.service.schemas import Limits
from interest.core.errors import InterestError
from interest.imaging.images import BadImage, decode_image


class ImageRejected(Exception):
    """An upload over a limit: the whole request is refused with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def decode_uploads(files: list[UploadFile], limits: Limits) -> tuple[list[Image.Image], list[str | None]]:
    """Decode uploads into RGB images; a bad image gives an error string, an over-limit one refuses the request."""
    images, errors = [], []
    for upload in files:
        if upload.size is not None and upload.size > limits.max_upload_bytes:
            raise ImageRejected(413, f"{upload.filename}: {upload.size} bytes, over the limit of {limits.max_upload_bytes} per image")
        data = await upload.read()
        if len(data) > limits.max_upload_bytes:
            raise ImageRejected(413, f"{upload.filename}: over the limit of {limits.max_upload_bytes} bytes per image")
        try:
            images.append(await run_in_threadpool(decode_upload, data, limits.max_pixels, upload.filename or "upload"))
            errors.append(None)
        except InterestError as exc:
            errors.append(str(exc))
    return images, errors


def decode_upload(data: bytes, max_pixels: int, name: str = "upload") -> Image.Image:
    """Decode an upload as :func:`interest.imaging.images.decode_image` does for files.

    A decompression bomb (more than ``max_pixels`` pixels, known from the
    header before any decoding) refuses the whole request with 413; any other
    unreadable image raises BadImage, which becomes that image's error.
    """
    try:
        return decode_image(data, max_pixels=max_pixels, name=name)
    except BadImage as exc:
        if exc.reason == "too_many_pixels":
            raise ImageRejected(413, f"{name}: {exc.detail or 'too many pixels'}; downscale it first") from None
        raise


def check_batch(files: list[UploadFile], limits: Limits) -> None:
    """Refuse (413) a request with more images than ``limits.max_batch``."""
    if len(files) > limits.max_batch:
        raise HTTPException(413, f"{len(files)} images in one request, over the limit of {limits.max_batch}; split the batch")
