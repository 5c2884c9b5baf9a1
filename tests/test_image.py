"""Image loading: paths, bytes and PIL images become RGB; missing, non-image, corrupt and huge images are refused."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from lyra_sdk.errors import MediaError
from lyra_sdk.media.image import MAX_IMAGE_PIXELS, load_image
from lyra_sdk.media.load import load_media
from lyra_sdk.interfaces import Modality


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` RGB pixels (its pixel data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _encoded(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _noise(w: int = 40, h: int = 30, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (h, w, channels) if channels else (h, w)
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), mode=mode)


def test_path_bytes_and_pil_give_the_same_rgb_image(tmp_path):
    img = _noise()
    (tmp_path / "a.png").write_bytes(_encoded(img))
    from_path = load_image(tmp_path / "a.png")
    from_str = load_image(str(tmp_path / "a.png"))
    from_bytes = load_image(_encoded(img))
    for out in (from_path, from_str, from_bytes, load_image(img)):
        assert out.mode == "RGB" and out.size == (40, 30)
        assert np.array_equal(np.asarray(out), np.asarray(img))
    assert load_media(Modality.IMAGE, tmp_path / "a.png").size == (40, 30)


def test_modes_are_converted_to_rgb():
    gray = load_image(_noise(mode="L"))
    assert gray.mode == "RGB"
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red -> white
    assert np.asarray(load_image(_encoded(rgba)))[0, 0].tolist() == [255, 255, 255]
    opaque = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    assert np.asarray(load_image(opaque))[0, 0].tolist() == [10, 20, 30]


def test_exif_orientation_is_applied():
    img = _noise(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = load_image(_encoded(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (30, 40)


def test_missing_directory_and_empty(tmp_path):
    with pytest.raises(MediaError, match="image file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(MediaError, match="got a directory"):
        load_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(MediaError, match="empty"):
        load_image(b"")
    with pytest.raises(MediaError, match="expected a path, bytes or a PIL image"):
        load_image(3.5)  # type: ignore[arg-type]


def test_not_an_image(tmp_path):
    (tmp_path / "x.png").write_bytes(b"this is text, not pixels" * 10)
    with pytest.raises(MediaError, match="not an image"):
        load_image(tmp_path / "x.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(tmp_path, fmt):
    data = _encoded(_noise(200, 150), fmt)
    (tmp_path / "t.img").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="corrupt or truncated"):
        load_image(tmp_path / "t.img")


def test_huge_declared_png_fails_fast_without_decoding(tmp_path):
    data = _png_header(100_000, 100_000)
    assert len(data) < 100
    (tmp_path / "bomb.png").write_bytes(data)
    t0 = time.perf_counter()
    with pytest.raises(MediaError, match="too large"):
        load_image(tmp_path / "bomb.png")
    with pytest.raises(MediaError, match="too large"):
        load_image(data)
    assert time.perf_counter() - t0 < 1.0


def test_our_pixel_limit_applies_from_the_header():
    side = int(MAX_IMAGE_PIXELS**0.5) + 10  # above our limit, below PIL's own warning threshold
    with pytest.raises(MediaError, match=r"too large: \d+x\d+"):
        load_image(_png_header(side, side))
    with pytest.raises(MediaError, match="too large"):
        load_image(_noise(40, 30), max_pixels=100)
