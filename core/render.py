"""Turning maps into pictures (used by the CLI's PNG outputs and by the pages). NumPy and PIL only.

Maps are float arrays (H, W); images are uint8 (H, W, 3) or PIL. Colour maps are small anchor tables
interpolated linearly: ``heat`` (sequential, for magnitudes) and ``diverging`` (blue-white-red, for signed
values, with 0 at white).
"""
from __future__ import annotations

import enum
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

CLIP_PERCENTILE = 99.5  # maps are clipped at this percentile of their magnitude unless the user says otherwise

# anchors sampled from matplotlib's "inferno" and "RdBu_r" (BSD-compatible colour data)
_HEAT = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                  [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=np.float64)
_DIVERGING = np.array([[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240],
                       [247, 247, 247], [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43],
                       [103, 0, 31]], dtype=np.float64)


class ColourMap(str, enum.Enum):
    HEAT = "heat"
    DIVERGING = "diverging"


def _lut(cmap: ColourMap) -> np.ndarray:
    return _DIVERGING if ColourMap(cmap) is ColourMap.DIVERGING else _HEAT


def to_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def colourise(values, cmap: ColourMap = ColourMap.HEAT) -> np.ndarray:
    """uint8 (H, W, 3) from values in [0, 1] (heat) or [-1, 1] (diverging); NaN shows as black."""
    v = to_numpy(values)
    if ColourMap(cmap) is ColourMap.DIVERGING:
        v = (v + 1.0) / 2.0
    v = np.nan_to_num(np.clip(v, 0.0, 1.0))
    lut = _lut(cmap)
    pos = v * (len(lut) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(lut) - 2)
    frac = (pos - lo)[..., None]
    rgb = lut[lo] * (1 - frac) + lut[lo + 1] * frac
    return rgb.round().astype(np.uint8)


def normalise_map(m, *, signed: bool = False, clip_percentile: float = CLIP_PERCENTILE) -> np.ndarray:
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


def overlay(image, values, *, cmap: ColourMap = ColourMap.HEAT, alpha: float = 0.5) -> np.ndarray:
    """The colour-mapped ``values`` (display range, see :func:`colourise`) blended over ``image`` in grey: the
    photo's own colours would mix with the map's (a red map on an orange cat reads as the photo)."""
    rgb = image_uint8(image).astype(np.float64)
    base = np.repeat(rgb @ np.array([0.299, 0.587, 0.114])[:, None], 3, axis=2)  # luma (ITU-R BT.601)
    v = resize_map(values, base.shape[:2])
    heat = colourise(v, cmap).astype(np.float64)
    return (base * (1 - alpha) + heat * alpha).round().astype(np.uint8)


# ------------------------------------------------------------------ colour bars: one convention for every heat map

@dataclass(frozen=True)
class Scale:
    """What the colours of a heat map mean: the raw values at both ends of its colour map.

    Signed maps use the diverging map centred at zero (``lo == -hi``); unsigned maps the sequential one from
    ``lo`` (usually the map's minimum) to ``hi``. Values beyond the ends saturate: ``clip_percentile`` is the
    percentile of the magnitude where the ends were put (100: the extreme value).
    """

    signed: bool
    lo: float
    hi: float
    clip_percentile: float = CLIP_PERCENTILE
    units: str = ""

    @property
    def cmap(self) -> ColourMap:
        return ColourMap.DIVERGING if self.signed else ColourMap.HEAT

    def describe(self) -> str:
        """One sentence for a caption: colours, ends, units and clipping."""
        units = f" {self.units}" if self.units else ""
        clip = ("the extreme value" if self.clip_percentile >= 100
                else f"the {self.clip_percentile:g}th percentile of " + ("|value|" if self.signed
                                                                          else "value above the minimum"))
        if self.signed:
            return (f"blue negative, white 0, red positive; the ends are \u00b1{self.hi:.3g}{units} "
                    f"({clip}; larger values saturate)")
        return (f"dark {self.lo:.3g} to bright {self.hi:.3g}{units} "
                f"({clip}; larger values saturate)")


def display_map(m, *, signed: bool, clip_percentile: float = CLIP_PERCENTILE, units: str = "") -> tuple[np.ndarray, Scale]:
    """(values for :func:`colourise`, their :class:`Scale`) under the app's one convention.

    Args:
        m: raw map (H, W), any units.
        signed: True for maps whose sign carries meaning (diverging map, 0 at white), False for magnitudes.
        clip_percentile: the ends sit at this percentile of the magnitude (see :func:`normalise_map`).
        units: what one unit of ``m`` is, for the colour bar.
    Returns:
        values in [-1, 1] (signed) or [0, 1], and the scale in raw units.
    """
    a = to_numpy(m)
    values = normalise_map(a, signed=signed, clip_percentile=clip_percentile)
    if a.size == 0:
        return values, Scale(signed, 0.0, 1.0, clip_percentile, units)
    if signed:
        mag = np.abs(a)
        hi = float(np.percentile(mag, clip_percentile))
        if not np.isfinite(hi) or hi <= 0:
            hi = float(mag.max()) if mag.max() > 0 else 1.0
        return values, Scale(True, -hi, hi, clip_percentile, units)
    lo = float(a.min())
    span = float(np.percentile(a - lo, clip_percentile))
    if not np.isfinite(span) or span <= 0:
        span = float((a - lo).max()) if (a - lo).max() > 0 else 1.0
    return values, Scale(False, lo, lo + span, clip_percentile, units)


def load_font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def colorbar(scale: Scale, height: int, *, width: int = 78, title: str | None = None) -> np.ndarray:
    """uint8 (height, width, 3): a vertical colour bar (high end at the top) with its end and middle values."""
    from PIL import ImageDraw

    height = max(int(height), 60)
    size = max(10, min(14, height // 18))
    font = load_font(size)
    canvas = Image.new("RGB", (width, height), "white")
    # with a title, the bar starts below it, and so does the label of its top value (drawn 6 px above the end)
    top, bottom, strip = size + 12 if title else 6, height - 6, 14
    ramp = np.linspace(1.0, -1.0 if scale.signed else 0.0, max(2, bottom - top))
    bar = colourise(np.repeat(ramp[:, None], strip, axis=1), scale.cmap)
    canvas.paste(Image.fromarray(bar), (4, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([4, top, 4 + strip - 1, top + len(ramp) - 1], outline=(120, 120, 120))
    mid = (scale.lo + scale.hi) / 2 if not scale.signed else 0.0
    for value, y in ((scale.hi, top), (mid, top + len(ramp) // 2), (scale.lo, top + len(ramp) - 1)):
        label = "0" if scale.signed and value == 0 else f"{value:+.3g}" if scale.signed else f"{value:.3g}"
        draw.line([4 + strip, y, 4 + strip + 3, y], fill=(60, 60, 60))
        ty = min(max(y - 6, 0), height - 14)
        draw.text((4 + strip + 5, ty), label, fill=(20, 20, 20), font=font)
    if title:
        draw.text((2, 1), title[:14], fill=(20, 20, 20), font=font)
    return np.asarray(canvas)


def with_colorbar(picture: np.ndarray, scale: Scale, *, title: str | None = None) -> np.ndarray:
    """``picture`` (H, W, 3) uint8 with its colour bar to the right (same height)."""
    bar = colorbar(scale, picture.shape[0], width=max(78, picture.shape[1] // 4), title=title)
    if bar.shape[0] != picture.shape[0]:  # pictures shorter than a legible bar get white space below
        pad = np.full((bar.shape[0] - picture.shape[0], picture.shape[1], 3), 255, np.uint8)
        picture = np.concatenate([picture, pad], axis=0)
    return np.concatenate([picture, bar], axis=1)


def heat_figure(m, image=None, *, signed: bool, clip_percentile: float = CLIP_PERCENTILE, units: str = "",
                alpha: float = 0.55, title: str | None = None) -> tuple[np.ndarray, Scale]:
    """A heat map (or its overlay on ``image``) with its colour bar, under the one convention.

    Args:
        m: raw map (h, w); resized to the image when one is given.
        image: None for the bare heat map, or the picture underneath (PIL, (3, H, W) in [0, 1], or uint8).
    Returns:
        (uint8 (H, W + bar, 3), the :class:`Scale` for a caption: ``scale.describe()``).
    """
    values, scale = display_map(m, signed=signed, clip_percentile=clip_percentile, units=units)
    pic = colourise(values, scale.cmap) if image is None else overlay(image, values, cmap=scale.cmap, alpha=alpha)
    return with_colorbar(pic, scale, title=title), scale


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


def padded(image: Image.Image, side: int, *, nearest: bool = False) -> Image.Image:
    """``image`` scaled to fit a ``side`` x ``side`` square (aspect kept), centred on white; ``nearest`` keeps
    every source pixel a sharp block (kernels, small crops) instead of smoothing it."""
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC
    return ImageOps.pad(image, (side, side), method=method, color=(255, 255, 255))


def fit_text(draw: ImageDraw.ImageDraw, text: str, width: float, font) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels in ``font``."""
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…"
    return text


def labelled_tile(image, side: int, label: str, *, nearest: bool = False, label_height: int = 20) -> np.ndarray:
    """uint8 (side + label_height, side, 3): ``image`` (PIL or uint8 (h, w, 3)) scaled to fit a ``side`` x
    ``side`` square (aspect kept, centred on white), with ``label`` written on a white band under it.

    Every tile of a grid made with the same ``side`` has the same size whatever its source, so rows line up;
    ``nearest`` keeps every source pixel a sharp block (kernels, small crops) instead of blurring it.
    """
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image.convert("RGB")
    canvas = Image.new("RGB", (side, side + label_height), "white")
    canvas.paste(padded(img, side, nearest=nearest), (0, 0))
    draw, font = ImageDraw.Draw(canvas), load_font(max(10, min(14, label_height - 6)))
    draw.text((2, side + (label_height - 14) // 2), fit_text(draw, label, side - 4, font), fill=(20, 20, 20), font=font)
    return np.asarray(canvas)


def tile_grid(tiles: list[np.ndarray], columns: int, *, gap: int = 4) -> np.ndarray:
    """uint8: equal-size uint8 (h, w, 3) tiles laid out ``columns`` to a row on white, ``gap`` pixels apart."""
    if not tiles:
        return np.full((1, 1, 3), 255, np.uint8)
    h, w = tiles[0].shape[:2]
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return out
