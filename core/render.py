"""Turning maps into pictures (used by the CLI's PNG outputs and by the pages). NumPy and PIL only.

Maps are float arrays (H, W); images are uint8 (H, W, 3) or PIL. Colour maps are small anchor tables
interpolated linearly: ``heat`` (sequential, for magnitudes) and ``diverging`` (blue-white-red, for signed
values, with 0 at white).
"""
from __future__ import annotations

import enum
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

# anchors sampled from matplotlib's "inferno" and "RdBu_r" (BSD-compatible colour data)
_HEAT = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                  [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=np.float64)
_DIVERGING = np.array([[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240],
                       [247, 247, 247], [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43],
                       [103, 0, 31]], dtype=np.float64)


class Colormap(str, enum.Enum):
    HEAT = "heat"
    DIVERGING = "diverging"


def _lut(cmap: Colormap) -> np.ndarray:
    return _DIVERGING if Colormap(cmap) is Colormap.DIVERGING else _HEAT


def to_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def colorize(values, cmap: Colormap = Colormap.HEAT) -> np.ndarray:
    """uint8 (H, W, 3) from values in [0, 1] (heat) or [-1, 1] (diverging); NaN shows as black."""
    v = to_numpy(values)
    if Colormap(cmap) is Colormap.DIVERGING:
        v = (v + 1.0) / 2.0
    v = np.nan_to_num(np.clip(v, 0.0, 1.0))
    lut = _lut(cmap)
    pos = v * (len(lut) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(lut) - 2)
    frac = (pos - lo)[..., None]
    rgb = lut[lo] * (1 - frac) + lut[lo + 1] * frac
    return rgb.round().astype(np.uint8)


def normalize_map(m, *, signed: bool = False, clip_percentile: float = 99.5) -> np.ndarray:
    """Scale a map for display, clipping outliers at ``clip_percentile`` of its magnitude.

    Returns values in [0, 1], or [-1, 1] when ``signed`` (0 stays 0).
    """
    a = to_numpy(m)
    mag = np.abs(a) if signed else a - a.min()
    scale = np.percentile(mag, clip_percentile) if mag.size else 0.0
    if not np.isfinite(scale) or scale <= 0:
        scale = float(mag.max()) if mag.size and mag.max() > 0 else 1.0
    return np.clip(a / scale, -1, 1) if signed else np.clip(mag / scale, 0, 1)


def unit_uint8(a: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) to 8-bit levels, nearest level with halves up: what every PNG here stores."""
    return np.clip(np.asarray(a) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def image_uint8(img) -> np.ndarray:
    """uint8 (H, W, 3) from a PIL image, a (3, H, W) tensor in [0, 1], or an (H, W, 3) array."""
    if isinstance(img, Image.Image):
        return np.asarray(img.convert("RGB"))
    a = to_numpy(img)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.max(initial=0) <= 1.0:
        return unit_uint8(a)
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def resize_map(m, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to (H, W)."""
    a = to_numpy(m)
    if a.shape == tuple(size):
        return a
    t = torch.from_numpy(a.astype(np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay(image, values, *, cmap: Colormap = Colormap.HEAT, alpha: float = 0.5) -> np.ndarray:
    """The colour-mapped ``values`` (display range, see :func:`colorize`) blended over ``image``."""
    base = image_uint8(image).astype(np.float64)
    v = resize_map(values, base.shape[:2])
    heat = colorize(v, cmap).astype(np.float64)
    return (base * (1 - alpha) + heat * alpha).round().astype(np.uint8)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def png_bytes(array: np.ndarray) -> bytes:
    """PNG file bytes of a uint8 (H, W, 3) picture (or (H, W) grey): the one encoder of page downloads."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def npz_bytes(**arrays) -> bytes:
    """Compressed ``.npz`` file bytes holding ``arrays`` (tensors become NumPy arrays, dtype kept)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{name: a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
                                for name, a in arrays.items()})
    return buf.getvalue()


def captioned_strip(panels: list[tuple[np.ndarray, str]], caption_height: int = 22) -> np.ndarray:
    """uint8 (H + caption_height, sum of widths, 3): the uint8 (h, w, 3) pictures side by side on white, each
    with its caption written above it."""
    h = max(p.shape[0] for p, _ in panels)
    canvas = Image.new("RGB", (sum(p.shape[1] for p, _ in panels), h + caption_height), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    for picture, caption in panels:
        canvas.paste(Image.fromarray(picture), (x, caption_height))
        draw.text((x + 4, 4), caption, fill="black")
        x += picture.shape[1]
    return np.asarray(canvas)


def boxed(image, box: tuple[int, int, int, int], width: int = 3,
          color: tuple[int, int, int] = (59, 91, 219)) -> Image.Image:
    """A copy of ``image`` (PIL or uint8 (H, W, 3)) with the rectangle ``box`` = (left, top, right, bottom),
    right and bottom exclusive, drawn ``width`` pixels wide inside it."""
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image.copy()
    ImageDraw.Draw(img).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=color, width=width)
    return img


def padded(image: Image.Image, side: int) -> Image.Image:
    """``image`` scaled to fit a ``side`` x ``side`` square (aspect kept), centred on white."""
    return ImageOps.pad(image, (side, side), color=(255, 255, 255))
