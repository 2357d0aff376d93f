"""Pictures of an attribution: heat map, overlay, masked image (NumPy/PIL only, shared by the page and CLI)."""
from __future__ import annotations

import enum
import io

import numpy as np
import torch

from .base import Attribution, Sign
from ..render import (CLIP_PERCENTILE, ColourMap, Scale, colourise, display_map, image_uint8, normalise_map, overlay,
                      with_colorbar)
from ..settings import Setting

# What one unit of each method's map is (for colour bars); the target's logit is what every method explains.
UNITS = {
    "saliency": "d logit / d pixel", "smoothgrad": "d logit / d pixel (noise-averaged)",
    "input-x-gradient": "logit per pixel", "integrated-gradients": "logit per pixel",
    "guided-backprop": "guided gradient", "deconvolution": "deconvolution signal",
    "gradcam": "Grad-CAM (weighted activation)", "guided-gradcam": "guided gradient x Grad-CAM",
    "occlusion": "logit drop when covered", "cam": "logit per position", "lrp": "relevance (logit share)",
}


class View(str, enum.Enum):
    HEAT = "heat map"
    OVERLAY = "overlay"
    MASKED = "masked image"


# How the Attribution page draws a map (context ``signed``: whether the map has both signs); the views, not the
# computation, so they are not part of a result's key.
VIEW = Setting("view", View, "heat map, the map over the image, or the image masked by the map", label="View",
               default=View.OVERLAY, widget="radio")
SIGN = Setting("sign", Sign, "which sign of a signed map to show", label="Sign", widget="radio",
               default=lambda c: Sign.ALL if c.get("signed") else Sign.POSITIVE)
CLIP = Setting("clip", float, "values above this percentile of the magnitude share the top colour",
               label="Clip outliers at percentile", low=90.0, high=100.0, step=0.1, default=CLIP_PERCENTILE)


def display_values(attr: Attribution, index: int = 0, *, sign: Sign | str = Sign.ALL,
                   clip_percentile: float = CLIP_PERCENTILE) -> tuple[np.ndarray, bool]:
    """(H, W) values scaled for display and whether they are signed ([-1, 1]) or not ([0, 1]).

    ``sign`` picks the part of a signed map; outliers above ``clip_percentile`` of the magnitude saturate.
    """
    sign = Sign(sign)
    signed = attr.signed and sign is Sign.ALL
    values = attr.view(sign)[index] if attr.signed else attr.map[index]
    return normalise_map(values, signed=signed, clip_percentile=clip_percentile), signed


def picture(attr: Attribution, image: torch.Tensor, index: int = 0, *, view: View | str = View.OVERLAY,
            sign: Sign | str = Sign.ALL, clip_percentile: float = CLIP_PERCENTILE, alpha: float = 0.55) -> np.ndarray:
    """uint8 (H, W, 3) picture of image ``index`` of ``attr`` over ``image`` (3, H, W) in [0, 1]."""
    values, signed = display_values(attr, index, sign=sign, clip_percentile=clip_percentile)
    cmap = ColourMap.DIVERGING if signed else ColourMap.HEAT
    view = View(view)
    if view is View.HEAT:
        return colourise(values, cmap)
    if view is View.OVERLAY:
        return overlay(image, values, cmap=cmap, alpha=alpha)
    weight = np.abs(values)[..., None]
    return (image_uint8(image).astype(np.float64) * weight).round().astype(np.uint8)


def figure(attr: Attribution, image: torch.Tensor, index: int = 0, *, view: View | str = View.OVERLAY,
           sign: Sign | str = Sign.ALL, clip_percentile: float = CLIP_PERCENTILE, alpha: float = 0.55) -> tuple[np.ndarray, Scale]:
    """:func:`picture` with its colour bar to the right, and the :class:`~core.render.Scale` for a caption.

    The masked view's bar shows the weight each pixel keeps (|display value|, 0 to 1).
    """
    sign = Sign(sign)
    values = attr.view(sign)[index] if attr.signed else attr.map[index]
    _, scale = display_map(values, signed=attr.signed and sign is Sign.ALL, clip_percentile=clip_percentile,
                           units=UNITS.get(attr.method, attr.method))
    pic = picture(attr, image, index, view=view, sign=sign, clip_percentile=clip_percentile, alpha=alpha)
    if View(view) is View.MASKED:
        scale = Scale(False, 0.0, 1.0, clip_percentile, "weight kept")
    return with_colorbar(pic, scale), scale


def npy_bytes(attr: Attribution, index: int = 0) -> bytes:
    """The raw float32 (H, W) map of image ``index`` as ``.npy`` file bytes."""
    buf = io.BytesIO()
    np.save(buf, attr.map[index].numpy().astype(np.float32))
    return buf.getvalue()


CONSERVATION_TOLERANCE = 0.1  # relevance within this fraction of the logit reads as conserved; further off, said


def conservation(relevance_sum: float, logit: float) -> tuple[float | None, bool]:
    """LRP's relevance at the pixels as a share of the explained logit (None without a logit), and whether it is
    weakly conserved (off by more than :data:`CONSERVATION_TOLERANCE`)."""
    share = relevance_sum / logit if logit else None
    return share, share is None or abs(share - 1) > CONSERVATION_TOLERANCE


def metric_lines(attr: Attribution, index: int = 0) -> list[str]:
    """Sentences (Markdown) that explain a result's per-image numbers: LRP's conservation (and when it is weak),
    CAM's decomposition."""
    m = {name: values[index] for name, values in attr.metrics.items()}
    lines = []
    if "relevance_sum" in m and "logit" in m:
        share, weak = conservation(m["relevance_sum"], m["logit"])
        attn = any("AttnLRP" in note for note in attr.notes)
        absorbers = ("AttnLRP's softmax rule, biases and epsilon" if attn
                     else "biases, LayerNorm shifts and epsilon")
        line = (f"Relevance sum **{m['relevance_sum']:.4g}** for a logit of **{m['logit']:.4g}** "
                f"({f'{share:.0%}' if share is not None else 'n/a'} conserved; {absorbers} absorb the rest).")
        if weak:
            line += (" **Weakly conserved**: read the map's shape (where the evidence is), not its values in logit "
                     "units" + ("; the cp rule (CP-LRP) takes the softmax's share out." if attn else "."))
        lines.append(line)
    if "constant" in m and "logit" in m:
        lines.append(f"Logit **{m['logit']:.4g}** = mean of the map + constant ({m['constant']:.4g}).")
    return lines
