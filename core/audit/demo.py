"""A shortcut to find: two classes of the same sample photos that differ only by a watermark.

:func:`build_shortcut_set` writes, from the first :data:`PHOTOS` sample photos (sorted by name, squashed to
160 × 160), class ``plain`` (the first :data:`MARKED` photos as they are) and class ``stamped`` (the same photos
with a white watermark box in the lower-left corner, and the other photos unmarked). A head fitted on this set
can only tell the paired photos apart by the mark, so it learns the mark; the audit of ``stamped`` should find
the marked images as one tight cluster with its evidence in the lower-left corner. The shipped head is
``assets/demo/shortcut-head.safetensors``; ``python -m core shortcut-demo`` rebuilds both.
"""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageDraw

from ..images import ASSETS

SAMPLES = ASSETS / "samples"
SHORTCUT_HEAD = ASSETS / "demo" / "shortcut-head.safetensors"
PHOTOS = 20
MARKED = 10
SIDE = 160


def watermark(img: Image.Image) -> Image.Image:
    """``img`` (160 × 160) with a white box and a red ring in its lower-left corner (inside the model's crop)."""
    d = ImageDraw.Draw(img)
    d.rectangle([14, 112, 44, 146], fill=(255, 255, 255), outline=(0, 0, 0), width=3)
    d.ellipse([20, 118, 38, 140], outline=(200, 0, 0), width=3)
    return img


def build_shortcut_set(root: str | os.PathLike) -> list[str]:
    """Write the set under ``root`` (``plain/``, ``stamped/``); returns the marked images' names (``stamped/NN.png``)."""
    root = Path(root)
    photos = sorted(SAMPLES.glob("*.jpg"))[:PHOTOS]
    for folder in ("plain", "stamped"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    marked = []
    for i, path in enumerate(photos):
        img = Image.open(path).convert("RGB").resize((SIDE, SIDE), Image.BICUBIC)
        if i < MARKED:
            img.save(root / "plain" / f"{i:02d}.png")
            watermark(img.copy()).save(root / "stamped" / f"{i:02d}.png")
            marked.append(f"stamped/{i:02d}.png")
        else:
            img.save(root / "stamped" / f"{i:02d}.png")
    return marked


def default_set_dir() -> Path:
    """Where the page and the command build the demo set: ``shortcut-demo`` under the cache root."""
    from ..files import cache_root

    base = cache_root()
    return (base if base is not None else Path.cwd() / ".lens-cache") / "shortcut-demo"
