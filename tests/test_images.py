"""Tests for l2g.images: every odd or broken input is generated on the fly in tmp_path."""
from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from l2g.config import ImageConfig
from l2g.images import ImageError, LoadedImage, bytes_sha1, file_sha1, load_image, thumbnail


def _noise_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


# ----------------------------------------------------------------------------- plain and colour modes


def test_rgb_jpeg_path_and_str(tmp_path):
    p = _save(Image.fromarray(_noise_rgb(60, 80)), tmp_path / "a.jpg", quality=95)
    for src in (p, str(p)):
        out = load_image(src)
        assert isinstance(out, LoadedImage)
        assert out.rgb.shape == (60, 80, 3) and out.rgb.dtype == np.uint8
        assert out.scale == 1.0 and out.orig_size == (80, 60)
        assert out.source_mode == "RGB" and out.name == "a.jpg"


def test_cmyk_jpeg(tmp_path):
    p = _save(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    out = load_image(p)
    assert out.source_mode == "CMYK"
    assert out.rgb.shape == (30, 40, 3)
    r, g, b = out.rgb[15, 20].astype(int)
    assert r > 200 and g < 60 and b < 60          # cyan-free, magenta+yellow = red


def test_16bit_png_full_range(tmp_path):
    ramp = np.linspace(0, 65535, 256).astype(np.uint16)
    arr = np.tile(ramp, (10, 1))
    p = _save(Image.fromarray(arr), tmp_path / "full16.png")
    out = load_image(p)
    assert out.source_mode.startswith("I")
    row = out.rgb[5, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0)
    assert np.array_equal(out.rgb[..., 0], out.rgb[..., 2])


def test_16bit_png_narrow_range_is_stretched(tmp_path):
    # 1000..1200: a blind >>8 would give only the values 3 and 4.
    arr = np.tile(np.linspace(1000, 1200, 201).astype(np.uint16), (8, 1))
    out = load_image(_save(Image.fromarray(arr), tmp_path / "narrow16.png"))
    g = out.rgb[..., 0]
    assert g.min() == 0 and g.max() == 255
    assert len(np.unique(g)) > 150


def test_float_tiff_and_constant_16bit(tmp_path):
    f = np.tile(np.linspace(-1.0, 3.0, 50, dtype=np.float32), (5, 1))
    out = load_image(_save(Image.fromarray(f, mode="F"), tmp_path / "f.tif"))
    assert out.source_mode == "F" and out.rgb.min() == 0 and out.rgb.max() == 255
    const = np.full((6, 6), 40000, np.uint16)
    out = load_image(_save(Image.fromarray(const), tmp_path / "const16.png"))
    assert out.rgb.shape == (6, 6, 3) and np.unique(out.rgb).size == 1


def test_grayscale_and_bilevel(tmp_path):
    g = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    out = load_image(_save(Image.fromarray(g), tmp_path / "g.png"))
    assert out.source_mode == "L"
    assert np.array_equal(out.rgb[..., 0], g) and np.array_equal(out.rgb[..., 1], g)
    bits = Image.fromarray(np.eye(8, dtype=np.uint8) * 255).convert("1")
    out = load_image(_save(bits, tmp_path / "b.png"))
    assert out.source_mode == "1"
    assert set(np.unique(out.rgb)) <= {0, 255} and out.rgb[3, 3, 0] == 255 and out.rgb[3, 4, 0] == 0


def test_rgba_png_composited_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:, :5] = (255, 0, 0, 255)          # opaque red
    rgba[:, 5:] = (0, 0, 255, 0)            # fully transparent blue
    rgba[0, 0] = (0, 0, 0, 128)             # half-transparent black
    out = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    assert out.source_mode == "RGBA"
    assert tuple(out.rgb[5, 2]) == (255, 0, 0)
    assert tuple(out.rgb[5, 7]) == (255, 255, 255)
    assert 120 <= out.rgb[0, 0, 0] <= 130
    la = Image.fromarray(rgba, "RGBA").convert("LA")
    out = load_image(_save(la, tmp_path / "la.png"))
    assert out.source_mode == "LA" and tuple(out.rgb[5, 7]) == (255, 255, 255)


def test_palette_gif_with_transparency_and_animation(tmp_path):
    pal = Image.new("P", (12, 12), 0)
    pal.putpalette([0, 255, 0] + [255, 0, 0] + [0, 0, 0] * 254)
    pal.paste(1, (0, 0, 6, 12))
    p = tmp_path / "p.gif"
    pal.save(p, transparency=0)
    out = load_image(p)
    assert out.source_mode == "P"
    assert tuple(out.rgb[6, 2]) == (255, 0, 0)
    assert tuple(out.rgb[6, 9]) == (255, 255, 255)        # transparent index -> white
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    anim = tmp_path / "anim.gif"
    frames[0].save(anim, save_all=True, append_images=frames[1:], duration=50, loop=0)
    first = load_image(anim).rgb
    assert first[4, 4, 0] > 200 and first[4, 4, 2] < 50


def test_exif_orientation_6(tmp_path):
    # Stored 200 wide x 100 high, marker in the stored top-left corner.
    arr = np.full((100, 200, 3), 128, np.uint8)
    arr[:20, :20] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6                      # "rotate 90 degrees clockwise to display"
    p = tmp_path / "rot6.jpg"
    img.save(p, exif=exif.tobytes(), quality=95)
    out = load_image(p)
    assert out.rgb.shape == (200, 100, 3)
    assert out.orig_size == (100, 200)
    # After a clockwise quarter turn the stored top-left lands at the top-right.
    assert out.rgb[5, 94, 0] > 200 and out.rgb[5, 94, 1] < 60
    assert out.rgb[5, 5, 0] < 160 and out.rgb[194, 5, 0] < 160
    small = load_image(p, max_side=100)
    assert small.rgb.shape == (100, 50, 3) and small.scale == pytest.approx(0.5)


# ----------------------------------------------------------------------------- size limits


def test_big_jpeg_downscaled_to_max_side(tmp_path):
    arr = np.zeros((4000, 5000, 3), np.uint8)
    arr[:, :, 1] = np.linspace(0, 255, 5000, dtype=np.uint8)[None, :]
    arr[:2000, :2500] = (200, 30, 30)
    p = _save(Image.fromarray(arr), tmp_path / "big.jpg", quality=85)
    out = load_image(p, max_side=1024)
    assert out.rgb.shape == (819, 1024, 3)
    assert out.orig_size == (5000, 4000)
    assert out.scale == pytest.approx(1024 / 5000)
    assert out.rgb[200, 200, 0] > 150                    # the quadrant is where it should be
    assert out.rgb[600, 900, 0] < 60


def test_png_downscaled_never_upscaled(tmp_path):
    p = _save(Image.fromarray(_noise_rgb(300, 500)), tmp_path / "n.png")
    out = load_image(p, max_side=100)
    assert out.rgb.shape == (60, 100, 3) and out.scale == pytest.approx(0.2)
    assert load_image(p, max_side=4000).rgb.shape == (300, 500, 3)
    assert load_image(p, max_side=None).scale == 1.0


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")   # pytest re-enables warnings
def test_decompression_bomb_header(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(100_000, 100_000))     # claims 10 gigapixels in ~100 bytes
    with pytest.raises(ImageError, match="too large"):
        load_image(p)
    # Between Pillow's warning threshold and its hard limit: our cfg.max_pixels decides.
    p.write_bytes(_png_header_only(10_000, 10_000))
    with pytest.raises(ImageError, match=r"too large: 100\.0 megapixels \(limit 50\.0\)"):
        load_image(p, cfg=ImageConfig(max_pixels=50_000_000))


def test_max_pixels_from_config(tmp_path):
    p = _save(Image.fromarray(_noise_rgb(100, 100)), tmp_path / "ok.png")
    with pytest.raises(ImageError, match=r"too large: 0\.0 megapixels"):
        load_image(p, cfg=ImageConfig(max_pixels=5000))
    with pytest.raises(ImageError, match="file too large"):
        load_image(p, cfg=ImageConfig(max_bytes=100))


# ----------------------------------------------------------------------------- broken inputs


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty file \(0 bytes\)") as err:
        load_image(p)
    assert "empty.jpg" in str(err.value)


def test_truncated_jpeg_and_png(tmp_path):
    for ext in ("jpg", "png"):
        buf = io.BytesIO()
        Image.fromarray(_noise_rgb(200, 200)).save(buf, format="JPEG" if ext == "jpg" else "PNG")
        data = buf.getvalue()
        p = tmp_path / f"trunc.{ext}"
        p.write_bytes(data[: len(data) // 2])
        with pytest.raises(ImageError, match="truncated or corrupt") as err:
            load_image(p)
        assert f"trunc.{ext}" in str(err.value)


def test_text_named_jpg_directory_and_missing(tmp_path):
    t = tmp_path / "x.jpg"
    t.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match="not an image"):
        load_image(t)
    d = tmp_path / "folder.jpg"
    d.mkdir()
    with pytest.raises(ImageError, match="directory"):
        load_image(d)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    assert issubclass(ImageError, ValueError)


def test_bytes_and_file_like_inputs(tmp_path):
    arr = _noise_rgb(30, 40, seed=3)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    data = buf.getvalue()
    for src in (data, bytearray(data), memoryview(data)):
        out = load_image(src)
        assert np.array_equal(out.rgb, arr) and out.name == "<bytes>"
    up = io.BytesIO(data)
    up.name = "upload/photo.png"
    up.read()                                             # already consumed, like a re-run upload
    out = load_image(up)
    assert np.array_equal(out.rgb, arr) and out.name == "photo.png"
    p = tmp_path / "f.png"
    p.write_bytes(data)
    with open(p, "rb") as f:
        assert np.array_equal(load_image(f).rgb, arr)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"GIF? no, plain text")
    with pytest.raises(TypeError):
        load_image(12345)
    with pytest.raises(ValueError):
        load_image(data, max_side=-1)


# ----------------------------------------------------------------------------- helpers


def test_thumbnail():
    rgb = _noise_rgb(300, 600)
    t = thumbnail(rgb, 256)
    assert t.shape == (128, 256, 3) and t.dtype == np.uint8
    small = _noise_rgb(20, 30)
    assert np.array_equal(thumbnail(small, 256), small)
    with pytest.raises(ValueError, match="uint8"):
        thumbnail(rgb.astype(np.float32))
    with pytest.raises(ValueError):
        thumbnail(rgb[..., 0])


def test_hashes(tmp_path):
    data = bytes(range(256)) * 5000
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    expected = hashlib.sha1(data).hexdigest()
    assert file_sha1(p) == expected == bytes_sha1(data)
    assert file_sha1(p, chunk=1000) == expected


# ----------------------------------------------------------------------------- reduced decoding (issue 9)


def test_downscaled_16bit_palette_and_keyed_images_keep_their_values(tmp_path):
    """Images reduced before conversion (16-bit strip by strip, palette, colour key) look as
    their full-size conversion would: range stretched over the whole image, transparency white."""
    ramp = np.linspace(1000, 3000, 2400).astype(np.uint16)
    arr = np.tile(ramp, (1600, 1))
    arr[:400, :600] = 1000
    out = load_image(_save(Image.fromarray(arr), tmp_path / "ramp16.png"), max_side=600)
    assert out.source_mode.startswith("I;16") and out.rgb.shape == (400, 600, 3)
    row = out.rgb[300, :, 0].astype(int)
    assert row[0] <= 1 and row[-1] >= 254 and np.all(np.diff(row[5:-5]) >= 0)
    assert out.rgb[:90, :140].max() <= 1                    # the dark block stays where it was
    pal = Image.new("P", (1500, 900), 0)
    pal.putpalette([0, 255, 0] + [255, 0, 0] + [0, 0, 0] * 254)
    pal.paste(1, (0, 0, 750, 900))
    out = load_image(_save(pal, tmp_path / "p.png", transparency=0), max_side=300)
    assert out.rgb.shape == (180, 300, 3)
    assert tuple(out.rgb[90, 40]) == (255, 0, 0) and tuple(out.rgb[90, 260]) == (255, 255, 255)
    keyed = np.zeros((900, 1500, 3), np.uint8)
    keyed[:, :750] = (0, 0, 255)
    out = load_image(_save(Image.fromarray(keyed), tmp_path / "key.png", transparency=(0, 0, 0)), max_side=300)
    assert tuple(out.rgb[90, 40]) == (0, 0, 255) and tuple(out.rgb[90, 260]) == (255, 255, 255)


def test_exif_rotation_of_a_reduced_png(tmp_path):
    arr = np.full((1000, 2000, 3), 128, np.uint8)
    arr[:200, :200] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    out = load_image(_save(img, tmp_path / "rot6.png", exif=exif.tobytes()), max_side=200)
    assert out.rgb.shape == (200, 100, 3) and out.orig_size == (1000, 2000)
    assert out.rgb[5, 94, 0] > 200 and out.rgb[5, 94, 1] < 60       # stored top-left -> top-right


def test_bytes_are_named_by_the_name_given(tmp_path):
    with pytest.raises(ImageError, match="holiday.jpg") as err:
        load_image(b"not an image", name="holiday.jpg")
    assert "<bytes>" not in str(err.value)
    ok = (tmp_path / "a.png")
    Image.fromarray(_noise_rgb(20, 20)).save(ok)
    assert load_image(ok.read_bytes(), name="upload.png").name == "upload.png"
    assert load_image(ok, name="ignored").name == "a.png"             # a path names itself


def test_modes_are_named_in_plain_words(tmp_path):
    """A converted file is described by what it is ('16-bit greyscale'), not by PIL's mode name."""
    from l2g.app.core import preview
    from l2g.images import mode_words

    arr = np.tile(np.linspace(0, 60000, 64).astype(np.uint16), (48, 1))
    p = _save(Image.fromarray(arr), tmp_path / "depth16.png")
    img, notes = preview(p, max_side=640)
    assert img.source_mode.startswith("I;16")
    assert notes == ["depth16.png: 16-bit greyscale image converted to 8-bit RGB"]
    assert mode_words("CMYK") == "CMYK (print colour) image" and mode_words("I;16B") == "16-bit greyscale image"
    for m in ("1", "LA", "CMYK", "YCbCr", "I", "F", "I;16", "PA"):
        assert "I;16" not in mode_words(m) and mode_words(m) != m
    la = Image.fromarray(np.dstack([np.full((20, 30), 90, np.uint8), np.full((20, 30), 0, np.uint8)]), "LA")
    _, notes = preview(_save(la, tmp_path / "la.png"), max_side=640)
    assert notes == ["la.png: greyscale image with transparency converted to 8-bit RGB, transparent areas on white"]
