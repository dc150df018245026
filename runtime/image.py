"""Image loading and preprocessing for the runtime, as the checkpoints' processors do it (numpy + PIL, no torch).

    pixels = preprocess("cat.png", manifest["image"])  # (1, 3, S, S) float32

`spec` is the manifest's image section: {"size", "resize_mode", "pad_color", "mean", "std", "channel_order",
"resample"}. "pad" pads to a centred square in pad_color (LLaVA's expand2square), then resizes to S x S;
"crop" resizes the shortest edge to S and centre-crops S x S (CLIPImageProcessor). Then /255,
(x - mean) / std with mean/std in RGB order, HWC -> CHW, and BGR last if channel_order says so.

Any PIL mode is converted to 8-bit RGB first: alpha (RGBA, LA, P with transparency) is composited over
pad_color, so transparent areas look like the pad bars (the reference processors' `convert("RGB")` drops
alpha, exposing whatever colour hides under it); 16-bit and 32-bit integer images (I;16, I) are scaled
from 0..65535 to 0..255 (x / 257, rounded); EXIF orientation is applied, as a phone gallery shows the photo.
Anything that cannot be read raises `ImageError` with a one-line message. Images over `max_pixels` are
refused from their header size, before any pixel is decoded (PIL opens lazily). Truncated files are caught
by forcing a full decode, relying on Pillow's default `ImageFile.LOAD_TRUNCATED_IMAGES = False`.
"""

from __future__ import annotations

import io
import os
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000  # default limit on width * height (64 megapixels)
RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError)


class ImageError(ValueError):
    """An image that cannot be used: missing, not an image, corrupt, too large or empty."""


def preprocess(image, spec: dict, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A path, bytes or PIL.Image -> pixels (1, 3, S, S) float32, ready for the vision encoder."""
    size, mode, pad, mean, std, order, resample = _check_spec(spec)
    rgb = to_rgb(load_image(image, max_pixels), pad)
    if mode == "pad":
        rgb = _expand_to_square(rgb, pad).resize((size, size), resample)
    else:
        rgb = _resize_and_crop(rgb, size, resample)
    x = np.asarray(rgb, dtype=np.float32) / 255.0  # (S, S, 3)
    x = (x - mean) / std
    if order == "BGR":
        x = x[:, :, ::-1]
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)  # (1, 3, S, S)


def load_image(image, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode `image` (path, bytes or PIL.Image), checking its size before decoding."""
    if isinstance(image, Image.Image):
        return _decode(image, "image", max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        name, source = "image bytes", io.BytesIO(bytes(image))
    elif isinstance(image, (str, os.PathLike)):
        name = source = os.fspath(image)
        if not os.path.exists(name):
            raise ImageError(f"{name}: no such file")
        if not os.path.isfile(name):
            raise ImageError(f"{name}: not a file")
    else:
        raise ImageError(f"expected a path, bytes or PIL.Image, got {type(image).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked instead
        try:
            im = Image.open(source)  # reads the header only
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not an image (unrecognised format)") from None
        except Image.DecompressionBombError as e:  # over 2x PIL's MAX_IMAGE_PIXELS, whatever max_pixels says
            found = re.search(r"\((\d+) pixels\)", str(e))
            pixels = found.group(1) if found else "too many"
            raise ImageError(f"{name}: image too large ({pixels} pixels; limit {max_pixels})") from None
        except _DECODE_ERRORS as e:
            raise ImageError(f"{name}: corrupt or truncated image ({_first_sentence(e)})") from None
        with im:
            return _decode(im, name, max_pixels)


def _decode(im: Image.Image, name: str, max_pixels: int) -> Image.Image:
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: image has zero size ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(f"{name}: image too large ({w}x{h} = {w * h} pixels; limit {max_pixels})")
    try:
        im.load()  # full decode here, so truncation and corruption surface now
        return ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as e:  # a format whose decoded size differs from its header
        raise ImageError(f"{name}: image too large ({_first_sentence(e)})") from None
    except _DECODE_ERRORS as e:
        raise ImageError(f"{name}: corrupt or truncated image ({_first_sentence(e)})") from None


def to_rgb(im: Image.Image, background=(0, 0, 0)) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; alpha composited over `background`, 16/32-bit integers scaled to 8 bits."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im).astype(np.float64) / 257.0  # 0..65535 -> 0..255
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if (im.mode == "P" and "transparency" in im.info) or im.mode in ("LA", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        base = Image.new("RGBA", im.size, tuple(background) + (255,))
        return Image.alpha_composite(base, im).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _expand_to_square(im: Image.Image, color) -> Image.Image:
    w, h = im.size
    if w == h:
        return im
    side = max(w, h)
    out = Image.new("RGB", (side, side), tuple(color))
    out.paste(im, ((side - w) // 2, (side - h) // 2))
    return out


def _resize_and_crop(im: Image.Image, size: int, resample) -> Image.Image:
    w, h = im.size
    short, long = min(w, h), max(w, h)
    new_long = max(size, int(size * long / short))  # CLIPImageProcessor's rounding (truncation)
    new = (size, new_long) if w <= h else (new_long, size)
    if new != (w, h):
        im = im.resize(new, resample)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return im.crop((left, top, left + size, top + size))


def _check_spec(spec: dict):
    try:
        size, mode = int(spec["size"]), spec.get("resize_mode", "crop")
        pad = tuple(int(c) for c in spec.get("pad_color", (0, 0, 0)))
        mean = np.asarray(spec.get("mean", (0.0, 0.0, 0.0)), dtype=np.float32)
        std = np.asarray(spec.get("std", (1.0, 1.0, 1.0)), dtype=np.float32)
        order, resample = spec.get("channel_order", "RGB"), spec.get("resample", "bicubic")
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"image spec: missing or malformed field ({e!r})") from None
    if size <= 0 or mode not in ("pad", "crop") or order not in ("RGB", "BGR"):
        raise ValueError(f"image spec: need size > 0, resize_mode pad|crop, channel_order RGB|BGR; got "
                         f"size={size}, resize_mode={mode!r}, channel_order={order!r}")
    if len(pad) != 3 or mean.shape != (3,) or std.shape != (3,) or not np.all(std != 0):
        raise ValueError("image spec: pad_color, mean and std need 3 values each, std non-zero")
    if resample not in RESAMPLE:
        raise ValueError(f"image spec: unknown resample {resample!r}; valid: {', '.join(RESAMPLE)}")
    return size, mode, pad, mean, std, order, RESAMPLE[resample]


def _first_sentence(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
