"""runtime/image.py: every PIL mode converted as documented, pad/crop geometry, and one clear error per bad input."""

import io
import resource
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from runtime.image import ImageError, load_image, preprocess

RNG = np.random.default_rng(0)


def spec(size, mode="crop", **kw):
    return {"size": size, "resize_mode": mode, "pad_color": [0, 0, 0], "mean": [0, 0, 0], "std": [1, 1, 1],
            "channel_order": "RGB", "resample": "bicubic", **kw}


def chw(rgb: np.ndarray) -> np.ndarray:
    """Reference: uint8 (H, W, 3) -> (1, 3, H, W) in [0, 1]."""
    return (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def bilevel_png(w: int, h: int) -> bytes:
    """A valid all-black 1-bit PNG of any size, written row by row so it never exists decoded."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(9)
    row = bytes(1 + (w + 7) // 8)  # filter byte + packed bits
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------- modes and values

def test_rgb_normalised_and_bgr():
    a = RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    out = preprocess(Image.fromarray(a), spec(6))
    assert out.shape == (1, 3, 6, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out, chw(a), atol=1e-7)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    norm = preprocess(Image.fromarray(a), spec(6, mean=mean, std=std, channel_order="BGR"))
    ref = (chw(a) - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    np.testing.assert_allclose(norm, ref[:, ::-1], rtol=1e-6, atol=1e-6)


def test_grayscale_and_bilevel_equal_rgb_with_equal_channels():
    g = RNG.integers(0, 256, (5, 5), dtype=np.uint8)
    ref = chw(np.stack([g] * 3, -1))
    np.testing.assert_array_equal(preprocess(Image.fromarray(g, "L"), spec(5)), ref)
    bits = g > 127
    np.testing.assert_array_equal(preprocess(Image.fromarray(bits), spec(5)),
                                  chw(np.stack([bits.astype(np.uint8) * 255] * 3, -1)))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_on_pad_colour(mode):
    pad = [10, 200, 30]
    a = RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    if mode == "LA":
        a[..., 1] = a[..., 2] = a[..., 0]
    alpha = np.zeros((4, 4), np.uint8)
    alpha[:, 2:] = 255
    im = Image.fromarray(np.dstack([a, alpha]), "RGBA").convert(mode)
    ref = np.where(alpha[..., None] == 255, a, np.array(pad, np.uint8))
    np.testing.assert_array_equal(preprocess(png_bytes(im), spec(4, pad_color=pad)), chw(ref))


def test_half_transparent_blends_with_pad_colour():
    im = Image.new("RGBA", (2, 2), (200, 100, 0, 128))
    out = preprocess(im, spec(2, pad_color=[0, 0, 250]))
    ref = (np.array([200, 100, 0]) * 128 + np.array([0, 0, 250]) * 127) / 255 / 255
    np.testing.assert_allclose(out[0, :, 0, 0], ref, atol=1.5 / 255)


def test_palette_with_and_without_transparency(tmp_path):
    idx = np.array([[0, 1], [2, 1]], np.uint8)
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255]
    im = Image.fromarray(idx, "P")
    im.putpalette(palette)
    colours = np.array(palette, np.uint8).reshape(3, 3)
    np.testing.assert_array_equal(preprocess(im, spec(2)), chw(colours[idx]))
    path = tmp_path / "p.png"
    im.save(path, transparency=1)  # index 1 (green) transparent
    ref = np.where((idx == 1)[..., None], np.array([7, 8, 9], np.uint8), colours[idx])
    np.testing.assert_array_equal(preprocess(path, spec(2, pad_color=[7, 8, 9])), chw(ref))


def test_cmyk_converted():
    c = RNG.integers(0, 256, (3, 3, 3), dtype=np.uint8)
    im = Image.fromarray(np.dstack([c, np.zeros((3, 3), np.uint8)]), "CMYK")  # K = 0: RGB = 255 - CMY
    np.testing.assert_array_equal(preprocess(im, spec(3)), chw(255 - c))


def test_16_bit_png_scaled_not_clipped(tmp_path):
    a = np.array([[0, 65535], [257 * 100, 257 * 200]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode.startswith("I")
    out = preprocess(path, spec(2))
    np.testing.assert_allclose(out[0, 0], [[0.0, 1.0], [100 / 255, 200 / 255]], atol=1e-6)
    np.testing.assert_array_equal(out[0, 0], out[0, 2])
    i32 = preprocess(Image.fromarray(a.astype(np.int32)), spec(2))  # mode "I": the same 16-bit range
    np.testing.assert_array_equal(i32, out)


def test_exif_orientation_applied():
    im = Image.new("RGB", (4, 2))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    assert load_image(png_bytes(im, exif=exif.tobytes())).size == (2, 4)


# ------------------------------------------------------------------------------------- geometry

def test_pad_keeps_bars_of_pad_colour_top_and_bottom():
    im = Image.new("RGB", (8, 4), (255, 0, 0))
    out = preprocess(im, spec(8, "pad", pad_color=[0, 0, 255]))
    blue, red = np.array([0, 0, 1.0]), np.array([1.0, 0, 0])
    for row in (0, 1, 6, 7):
        np.testing.assert_array_equal(out[0, :, row].T, np.tile(blue, (8, 1)))
    for row in (2, 3, 4, 5):
        np.testing.assert_array_equal(out[0, :, row].T, np.tile(red, (8, 1)))
    tall = preprocess(Image.new("RGB", (20, 40), (255, 0, 0)), spec(10, "pad", pad_color=[0, 0, 255]))
    np.testing.assert_allclose(tall[0, :, 5, 0], blue, atol=1e-6)  # left bar survives the resize
    np.testing.assert_allclose(tall[0, :, 5, 5], red, atol=1e-6)


def test_crop_keeps_the_centre():
    a = np.repeat(np.arange(12, dtype=np.uint8)[None, :, None] * 20, 4, 0).repeat(3, 2)  # (4, 12, 3) columns
    out = preprocess(Image.fromarray(a), spec(4))
    np.testing.assert_array_equal(out, chw(a[:, 4:8]))
    big = Image.fromarray(RNG.integers(0, 256, (100, 200, 3), dtype=np.uint8))
    ref = np.asarray(big.resize((100, 50), Image.Resampling.BICUBIC).crop((25, 0, 75, 50)))
    np.testing.assert_array_equal(preprocess(big, spec(50)), chw(ref))


@settings(max_examples=25, deadline=None)
@given(w=st.integers(1, 40), h=st.integers(1, 40), size=st.integers(1, 16), mode=st.sampled_from(["pad", "crop"]))
def test_any_size_gives_the_static_shape(w, h, size, mode):
    out = preprocess(Image.new("RGB", (w, h), (255, 255, 255)), spec(size, mode))
    assert out.shape == (1, 3, size, size) and out.dtype == np.float32 and np.isfinite(out).all()


# --------------------------------------------------------------------------------------- errors

def test_missing_directory_and_wrong_type(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        preprocess(tmp_path / "absent.png", spec(4))
    with pytest.raises(ImageError, match="not a file"):
        preprocess(tmp_path, spec(4))
    with pytest.raises(ImageError, match="expected a path, bytes or PIL.Image"):
        preprocess(42, spec(4))


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello, not a picture\n")
    with pytest.raises(ImageError, match="not an image"):
        preprocess(path, spec(4))
    with pytest.raises(ImageError, match="not an image"):
        preprocess(b"", spec(4))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_truncated_image_refused(tmp_path, fmt):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # Pillow's default, which truncation detection relies on
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated") as e:
        preprocess(path, spec(4))
    assert "\n" not in str(e.value)


def test_zero_sized_image():
    with pytest.raises(ImageError, match="zero size"):
        preprocess(Image.new("RGB", (0, 5)), spec(4))
    with pytest.raises(ImageError):
        preprocess(bilevel_png(0, 5), spec(4))


def test_pixel_limit_is_a_parameter():
    im = png_bytes(Image.new("RGB", (20, 10)))
    with pytest.raises(ImageError, match=r"image too large \(20x10 = 200 pixels; limit 199\)"):
        preprocess(im, spec(4), max_pixels=199)
    assert preprocess(im, spec(4), max_pixels=200).shape == (1, 3, 4, 4)


@pytest.mark.parametrize("side", [10_000, 20_000])  # over PIL's warning limit; over its error limit
def test_decompression_bomb_refused_from_the_header(side):
    data = bilevel_png(side, side)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning escapes
        with pytest.raises(ImageError, match=f"image too large .*{side * side} pixels"):
            preprocess(data, spec(4))
    assert time.perf_counter() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 50_000  # KiB: nothing decoded


def test_bad_spec_is_a_plain_value_error():
    im = Image.new("RGB", (4, 4))
    with pytest.raises(ValueError, match="resize_mode"):
        preprocess(im, spec(4, "stretch"))
    with pytest.raises(ValueError, match="unknown resample"):
        preprocess(im, spec(4, resample="box"))


def test_image_and_tokenizer_modules_do_not_import_torch():
    code = "import sys, runtime.image, runtime.tokenizer; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2]).returncode == 0
