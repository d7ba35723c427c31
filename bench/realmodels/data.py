"""Calibration and held-out inputs for the sweep: seeded random ones (the same samples edgec's
`--calib random:N` draws) and real ones cut from offline images.

None of the corpus packages ships sample images or audio in its wheel, so the real data comes from
scikit-image's bundled pictures (`skimage.data`: document pages and text for the OCR, layout and
table models; photographs for the detectors, face and segmentation models), cropped at seeded
random positions and scales, resized to the model's input, and normalized as the package's own
preprocessing does (mean/std, scale, channel order, layout). Audio models have no real data here
(no speech recordings are available offline) and use random calibration only.

Every function returns {input name: array stacked along a new leading axis}, written with
np.savez in the model's input order (arr_0, arr_1, ...), which `--calib FILE.npz` reads as a stack
of samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
TEXT = ("page", "text")  # scanned text: the only printed lines skimage has
DOCUMENTS = ("page", "text", "page", "text", "clock")  # pages for the layout/table/detector models
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "cat")


@dataclass(frozen=True)
class Recipe:
    sources: tuple[str, ...]
    height: int
    width: int
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1 / 255  # applied before mean/std
    layout: str = "nchw"  # or "nhwc"
    gray: bool = False
    bgr: bool = False
    min_crop: float = 0.3  # smallest crop side, as a fraction of the image side
    strips: bool = False  # text-line crops: wide, short strips (recognizers)


RECIPES: dict[str, Recipe] = {
    "ocr_det": Recipe(DOCUMENTS, 640, 640, *IMAGENET, min_crop=0.6),
    "ocr_rec": Recipe(TEXT, 48, 320, *HALF, strips=True),
    "ocr_cls": Recipe(TEXT, 48, 192, *HALF, strips=True),
    "imagenet224": Recipe(DOCUMENTS, 224, 224, *IMAGENET, min_crop=0.6),
    "layout": Recipe(DOCUMENTS, 800, 608, *IMAGENET, min_crop=0.8),
    "table": Recipe(DOCUMENTS, 488, 488, *IMAGENET, min_crop=0.6),
    "yolo320": Recipe(PHOTOS, 320, 320),
    "yolox416": Recipe(PHOTOS + DOCUMENTS[:2], 416, 416, scale=1.0, bgr=True),
    "captcha": Recipe(TEXT, 64, 160, (0.5,), (0.5,), gray=True, strips=True),
    "mtcnn_pnet": Recipe(PHOTOS, 120, 160, (0.5, 0.5, 0.5), (128 / 255,) * 3, layout="nhwc"),
    "mtcnn_onet": Recipe(PHOTOS, 48, 48, (0.5, 0.5, 0.5), (128 / 255,) * 3, layout="nhwc", min_crop=0.15),
    "face128": Recipe(PHOTOS, 128, 128, *HALF, layout="nhwc"),
    "palm192": Recipe(PHOTOS, 192, 192, layout="nhwc"),
    "selfie256": Recipe(PHOTOS, 256, 256, layout="nhwc"),
    "iris64": Recipe(PHOTOS, 64, 64, layout="nhwc", min_crop=0.1),
}


def _image(name: str, gray: bool) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3].astype(np.float32)
    if gray:
        img = img @ np.array([0.299, 0.587, 0.114], np.float32)
        img = img[..., None]
    return img


def _crop(img: np.ndarray, recipe: Recipe, rng: np.random.Generator) -> np.ndarray:
    from skimage.transform import resize

    h, w = img.shape[:2]
    if recipe.strips:  # a text line: full-width-ish strip with the model's aspect ratio
        ch = int(rng.uniform(0.08, 0.25) * h) or 1
        cw = min(w, int(ch * recipe.width / recipe.height * rng.uniform(0.7, 1.3)))
    else:
        side = rng.uniform(recipe.min_crop, 1.0)
        aspect = recipe.width / recipe.height * rng.uniform(0.8, 1.25)
        ch = int(min(h, side * h))
        cw = int(min(w, ch * aspect))
    y = int(rng.integers(0, max(1, h - ch + 1)))
    x = int(rng.integers(0, max(1, w - cw + 1)))
    crop = img[y : y + ch, x : x + cw]
    return resize(crop, (recipe.height, recipe.width), preserve_range=True, anti_aliasing=True).astype(np.float32)


def image_samples(recipe_name: str, count: int, seed: int) -> np.ndarray:
    """count samples, each with a batch axis of 1: shape (count, 1, C, H, W) or (count, 1, H, W, C)."""
    recipe = RECIPES[recipe_name]
    rng = np.random.default_rng(seed)
    images = [_image(n, recipe.gray) for n in recipe.sources]
    mean = np.array(recipe.mean, np.float32)
    std = np.array(recipe.std, np.float32)
    out = []
    for i in range(count):
        x = _crop(images[(i + seed) % len(images)], recipe, rng)
        if recipe.bgr:
            x = x[..., ::-1]
        x = (x * recipe.scale - mean) / std
        if recipe.layout == "nchw":
            x = x.transpose(2, 0, 1)
        out.append(x[None].astype(np.float32))
    return np.stack(out)


def real_samples(recipe_name: str, input_name: str, count: int, seed: int) -> dict[str, np.ndarray]:
    return {input_name: image_samples(recipe_name, count, seed)}


def random_samples(inputs: list[tuple[str, tuple[int, ...], np.dtype]], count: int, seed: int) -> dict[str, np.ndarray]:
    """The samples of edgec's `--calib random:N` (edgec.samples.random_samples, seed 0): N(0,1)
    floats, integers in [0, 8), drawn input by input, sample by sample, from one generator."""
    rng = np.random.default_rng(seed)
    stacks: dict[str, list[np.ndarray]] = {name: [] for name, _, _ in inputs}
    for _ in range(count):
        for name, shape, dtype in inputs:
            dtype = np.dtype(dtype)
            if np.issubdtype(dtype, np.floating):
                stacks[name].append(rng.standard_normal(shape).astype(dtype))
            elif dtype == np.bool_:
                stacks[name].append(rng.integers(0, 2, shape).astype(np.bool_))
            else:
                stacks[name].append(rng.integers(0, 8, shape).astype(dtype))
    return {name: np.stack(s) for name, s in stacks.items()}


def save_npz(path: Path, stacks: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    np.savez(partial, *stacks.values())  # arr_0, arr_1 ... in input order
    partial.replace(path)  # atomic: two sweeps never read each other's half-written file
    return path
