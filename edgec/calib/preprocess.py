"""Image preprocessing specs: `resize=256,crop=224,color=rgb,mean=0.485/0.456/0.406,std=...,layout=nchw`.

The same text configures calibration from a directory of images, is stored in the model
registry for zoo models, and is written into the bundle manifest so a device applies exactly
the preprocessing the model was calibrated with.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from edgec.errors import EdgecError

COLORS = ("rgb", "bgr", "gray")
LAYOUTS = ("nchw", "nhwc")
# An image dimension no edge model reads (8K is 7680): resize=60000 would allocate 43 GB.
MAX_SIDE = 16384
# Pixels PIL decodes before refusing a file as a decompression bomb (PIL warns at 89M, errors at
# twice that; edgec refuses at its warning threshold instead of spending gigabytes on a bomb).
MAX_PIXELS = 89_478_485
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class Preprocess:
    """Applied in this order: color conversion, resize (shorter side, or WxH), center crop,
    pixel * scale, (x - mean) / std per channel, layout, batch axis."""

    resize: tuple[int, ...] = ()  # (short_side,) or (width, height); () keeps the size
    crop: tuple[int, ...] = ()  # (size,) or (width, height)
    color: str = "rgb"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "nchw"
    resample: str = "bilinear"  # or lanczos, nearest, bicubic

    def __str__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                if not value:
                    continue
                text = ("x" if f.name in ("resize", "crop") else "/").join(_num(v) for v in value)
            else:
                text = _num(value) if isinstance(value, float) else str(value)
            parts.append(f"{f.name}={text}")
        return ",".join(parts)

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def apply(self, path: Path) -> np.ndarray:
        """One image file as a float32 batch of one, [1, C, H, W] or [1, H, W, C]."""
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked just below
                image = Image.open(path)
            with image:
                if image.width * image.height > MAX_PIXELS:  # the header alone says so: never decode it
                    raise EdgecError(
                        f"{path}: {image.width}x{image.height} pixels, over the {MAX_PIXELS:,} edgec reads "
                        "(a decompression bomb, or an image to shrink first)"
                    )
                image.load()
                image = image.convert("L" if self.color == "gray" else "RGB")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
            raise EdgecError(f"{path}: unreadable image ({str(exc).splitlines()[0][:160]})") from exc
        image = self._resize(image)
        image = self._crop(image, path)
        pixels = np.asarray(image, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if self.color == "bgr":
            pixels = pixels[:, :, ::-1]
        pixels = pixels * np.float32(self.scale)
        mean = np.asarray(self.mean, np.float32).reshape(1, 1, -1)
        std = np.asarray(self.std, np.float32).reshape(1, 1, -1)
        pixels = (pixels - mean) / std
        if self.layout == "nchw":
            pixels = pixels.transpose(2, 0, 1)
        return np.ascontiguousarray(pixels[None], dtype=np.float32)

    def _resize(self, image):
        from PIL import Image

        if not self.resize:
            return image
        method = {
            "bilinear": Image.BILINEAR,
            "lanczos": Image.LANCZOS,
            "nearest": Image.NEAREST,
            "bicubic": Image.BICUBIC,
        }[self.resample]
        if len(self.resize) == 2:
            return image.resize(self.resize, method)
        width, height = image.size
        ratio = self.resize[0] / min(width, height)
        size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
        if max(size) > MAX_SIDE:
            raise EdgecError(
                f"--preprocess resize={self.resize[0]}: a {width}x{height} image would become "
                f"{size[0]}x{size[1]}, over {MAX_SIDE} pixels a side"
            )
        return image.resize(size, method)

    def _crop(self, image, path: Path):
        if not self.crop:
            return image
        want_w, want_h = (self.crop * 2)[:2] if len(self.crop) == 1 else self.crop
        width, height = image.size
        if want_w > width or want_h > height:
            raise EdgecError(f"{path}: image is {width}x{height}, smaller than the crop {want_w}x{want_h}")
        left, top = (width - want_w) // 2, (height - want_h) // 2
        return image.crop((left, top, left + want_w, top + want_h))


def _num(value: float) -> str:
    return f"{value:.10g}"


def parse(text: str) -> Preprocess:
    """Parse a spec; errors name the key and what it accepts."""
    values: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise EdgecError(f"--preprocess: '{item}' is not key=value")
        try:
            values[key] = _parse_value(key, raw.strip())
        except ValueError:
            raise EdgecError(f"--preprocess: bad value for {key}: '{raw}'") from None
    spec = Preprocess(**values)
    if spec.color not in COLORS:
        raise EdgecError(f"--preprocess: color must be one of {', '.join(COLORS)}")
    if spec.layout not in LAYOUTS:
        raise EdgecError(f"--preprocess: layout must be one of {', '.join(LAYOUTS)}")
    for name in ("mean", "std"):
        if len(getattr(spec, name)) not in (1, spec.channels):
            raise EdgecError(f"--preprocess: {name} needs 1 or {spec.channels} values for color={spec.color}")
    if any(s == 0 for s in spec.std):
        raise EdgecError("--preprocess: std must not be 0")
    return spec


def _parse_value(key: str, raw: str):
    if key in ("resize", "crop"):
        dims = tuple(int(v) for v in raw.lower().split("x"))
        if not 1 <= len(dims) <= 2 or any(d <= 0 for d in dims):
            raise ValueError
        if any(d > MAX_SIDE for d in dims):
            raise EdgecError(f"--preprocess: {key}={raw} is over {MAX_SIDE} pixels a side")
        return dims
    if key in ("mean", "std"):
        values = tuple(float(v) for v in raw.split("/"))
        if not all(np.isfinite(values)):
            raise ValueError
        return values
    if key == "scale":
        numerator, _, denominator = raw.partition("/")
        bottom = float(denominator) if denominator else 1.0
        value = float(numerator) / bottom if bottom != 0 else None
        if value is None or not np.isfinite(value) or value == 0:
            raise EdgecError(f"--preprocess: scale={raw} must be a finite, non-zero number (e.g. 1/255)")
        return value
    if key in ("color", "layout"):
        return raw.lower()
    if key == "resample":
        if raw not in ("bilinear", "lanczos", "nearest", "bicubic"):
            raise ValueError
        return raw
    raise EdgecError(
        f"--preprocess: unknown key '{key}' (keys: resize, crop, color, scale, mean, std, layout, resample)"
    )
