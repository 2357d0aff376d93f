"""Pictures of error analysis that read on their own (for the page, the report and the CLI): the confusion matrix
with counts, class names on both axes, axis titles and its colour bar; the separating channels' effects as
labelled bars; the "Why?" maps with their colour bars."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..render import ColourMap, Scale, colourise, fit_text, heat_figure, load_font, with_colorbar

if TYPE_CHECKING:
    from .explain import MistakeMaps

CELL = 56


def confusion_figure(confusion: np.ndarray, names: Sequence[str], *, cell: int = CELL) -> np.ndarray:
    """uint8 (H, W, 3): ``confusion`` (K, K) counts, rows = true class, columns = predicted class, as a heat map
    on the sequential colour map (dark 0 to bright the largest count) with each count written in its cell, the
    class names on both axes and a colour bar in images."""
    counts = np.asarray(confusion, dtype=np.int64)
    k = len(names)
    font = load_font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = int(min(160, max(probe.textlength(n, font=font) for n in names) + 40)) if k else 40
    top = 40
    top_count = int(counts.max()) if counts.size else 0
    values = counts / max(1, top_count)
    heat = colourise(np.kron(values, np.ones((cell, cell))), ColourMap.HEAT) if k else \
        np.full((cell, cell, 3), 255, np.uint8)
    canvas = Image.new("RGB", (left + heat.shape[1] + 4, top + heat.shape[0] + 4), "white")
    canvas.paste(Image.fromarray(heat), (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((left, 2), "predicted", fill=(20, 20, 20), font=font)
    draw.text((2, 2), "true", fill=(20, 20, 20), font=font)
    for i, name in enumerate(names):
        draw.text((18, top + i * cell + cell // 2 - 7), fit_text(draw, name, left - 22, font), fill=(20, 20, 20),
                  font=font)
        draw.text((left + i * cell + 2, top - 16), fit_text(draw, name, cell - 4, font), fill=(20, 20, 20), font=font)
        for j in range(k):
            text = str(int(counts[i, j]))
            colour = (255, 255, 255) if values[i, j] < 0.5 else (0, 0, 0)
            w = draw.textlength(text, font=font)
            draw.text((left + j * cell + (cell - w) / 2, top + i * cell + cell // 2 - 7), text, fill=colour, font=font)
        draw.rectangle([left + i * cell, top + i * cell, left + (i + 1) * cell - 1, top + (i + 1) * cell - 1],
                       outline=(120, 120, 120))  # the diagonal: right answers
    return with_colorbar(np.asarray(canvas), Scale(False, 0.0, float(top_count), 100, "images"), title="images")


def separation_figure(channels, *, width: int = 360, row: int = 26) -> np.ndarray:
    """uint8: one horizontal bar per separating channel (a :class:`~core.errors.explain.SeparatingChannel`), its
    Cohen's d from a zero line in the middle: red to the right (stronger on the mistakes), blue to the left
    (weaker on the mistakes), each labelled with the channel, d and AUC; the scale is the largest |d|."""
    font = load_font(12)
    label_w, top = 150, 22
    canvas = Image.new("RGB", (label_w + width + 8, top + row * max(1, len(channels)) + 6), "white")
    draw = ImageDraw.Draw(canvas)
    largest = max([abs(c.effect) for c in channels] + [1e-12])
    zero = label_w + width // 2
    draw.text((label_w, 2), f"Cohen's d (bars end at ±{largest:.3g})", fill=(20, 20, 20), font=font)
    red, blue = (tuple(int(v) for v in rgb) for rgb in colourise(np.array([1.0, -1.0]), ColourMap.DIVERGING))
    for i, c in enumerate(channels):
        y = top + i * row
        draw.text((4, y + 5), f"ch {c.channel}  d {c.effect:+.2f}  AUC {c.auc:.2f}", fill=(20, 20, 20), font=font)
        end = zero + int(round(c.effect / largest * (width // 2 - 4)))
        draw.rectangle([min(zero, end), y + 4, max(zero, end), y + row - 4],
                       fill=red if c.effect > 0 else blue)
    draw.line([zero, top - 2, zero, canvas.height - 4], fill=(60, 60, 60))
    return np.asarray(canvas)


def mistake_figure(maps: "MistakeMaps", method: str, role: str, image) -> tuple[np.ndarray, Scale]:
    """One "Why?" map over the image with its colour bar, as the Error analysis page and ``python -m core
    contrast`` draw it.

    Args:
        maps: the image's maps; ``role`` is "predicted", "true" or "contrast".
        image: (3, H, W) in [0, 1], the model input the maps are aligned with.

    Returns:
        uint8 (H, W + bar, 3) and the :class:`~core.render.Scale` for a caption (blue-white-red when the
        method's result is signed).
    """
    return heat_figure(maps.maps[(method, role)], image, signed=maps.results[(method, role)].signed,
                       units="attribution", alpha=0.6)
