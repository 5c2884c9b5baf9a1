"""Image input: a path, the file's bytes or a PIL image -> an RGB PIL image.

The header is read first (PIL opens lazily) and an image that declares more than :data:`MAX_IMAGE_PIXELS`
pixels is refused before any pixel is decoded, so a tiny file that claims 100,000 x 100,000 pixels costs
nothing. EXIF orientation is applied; transparency is composited onto white (as transformers' image
processors do). Every failure is a :class:`~lyra_sdk.errors.MediaError` naming the image and the problem.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import MediaError

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 80_000_000
"""The largest image (width * height) that is decoded: 80 megapixels (about 240 MB as RGB). It sits below
PIL's own decompression-bomb threshold (``PIL.Image.MAX_IMAGE_PIXELS``, 89.5 MP), which still applies to a
larger ``max_pixels``."""

ImageSource = str | os.PathLike | bytes | Image.Image


def _describe(source: ImageSource) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of image>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.width}x{source.height} {source.mode}>"
    return str(source)


def _check_size(width: int, height: int, name: str, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise MediaError(f"image {name} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise MediaError(f"image {name} is too large: {width}x{height} = {width * height:,} pixels, the limit is "
                         f"{max_pixels:,} (downscale it first)")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparent pixels are composited onto a white background."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _decode(handle: str | io.BytesIO, name: str, max_pixels: int) -> Image.Image:
    with warnings.catch_warnings():
        # PIL only warns between its own limit and twice that; make every bomb an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(handle) as im:  # lazy: reads the header only
                _check_size(im.width, im.height, name, max_pixels)
                im.load()  # the pixels; a truncated or corrupt file fails here
                out = ImageOps.exif_transpose(im) or im
                return to_rgb(out)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise MediaError(f"image {name} is too large to decode safely: {exc}") from None
        except UnidentifiedImageError:
            raise MediaError(f"{name} is not an image (or not a format PIL reads)") from None
        except MediaError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise MediaError(f"could not decode image {name}: the file is corrupt or truncated ({exc})") from None


def load_image(source: ImageSource, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Read an image (a path, the file's bytes, or a PIL image) as an RGB PIL image.

    Raises :class:`MediaError` for a missing path, a directory, an empty file, something that is not an
    image, a corrupt or truncated image, or one above ``max_pixels`` pixels (checked from the header,
    before decoding).
    """
    name = _describe(source)
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, name, max_pixels)
        try:
            return to_rgb(source)
        except (OSError, ValueError) as exc:
            raise MediaError(f"could not convert image {name} to RGB: {exc}") from None
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    if isinstance(source, bytes):
        if not source:
            raise MediaError("image bytes are empty (0 bytes)")
        return _decode(io.BytesIO(source), name, max_pixels)
    if not isinstance(source, (str, os.PathLike)):
        raise MediaError(f"expected a path, bytes or a PIL image for an image, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise MediaError(f"image file not found: {path}")
    if path.is_dir():
        raise MediaError(f"expected an image file, got a directory: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"image file is empty (0 bytes): {path}")
    image = _decode(str(path), name, max_pixels)
    log.debug("loaded image %s: %dx%d", name, image.width, image.height)
    return image
