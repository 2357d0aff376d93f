"""Pointing game (Zhang et al. 2016, with TorchRay's 15-pixel tolerance) and energy-in-mask, given an object mask.

The mask comes from the image's alpha channel (a PNG cut-out) or from a separate mask image; either is resized
and cropped exactly as the image is (the model's preprocessing), then thresholded at one half.

* **Pointing game**: the map's maximum (the first in pixel order when several pixels tie) is a *hit* when it
  lies within 15 pixels (Euclidean, model-input pixels) of a mask pixel: TorchRay's test against the mask
  dilated by a disc of radius 15.
* **Energy-in-mask** (the energy-based pointing game of Score-CAM): the share of the map's positive part that
  falls inside the mask, in [0, 1]; the share of the image the mask covers is the chance level.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import BinaryIO, Mapping

import numpy as np
import torch
from PIL import Image

from ..images import ImageError, load_image, preprocess, _read_bytes, MAX_BYTES

TOLERANCE = 15


@dataclass(frozen=True)
class Pointing:
    """Pointing game and energy of one map.

    Attributes:
        hit: the map's maximum lies within ``tolerance`` pixels of the object.
        energy: positive map mass inside the mask / positive mass in total (0 when the map has no positive part).
        point: (row, column) of the maximum.
        mask_fraction: share of the image the mask covers (the chance level of ``energy``).
        tolerance: pixels.
    """

    hit: bool
    energy: float
    point: tuple[int, int]
    mask_fraction: float
    tolerance: int


def pointing(values: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray, *,
             tolerance: int = TOLERANCE) -> Pointing:
    """Pointing game and energy-in-mask of an (H, W) map against a bool (H, W) mask of the same size."""
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    if v.shape != m.shape:
        raise ValueError(f"the mask is {m.shape[1]}x{m.shape[0]}, the map {v.shape[1]}x{v.shape[0]}")
    if not m.any():
        raise ValueError("the object mask is empty")
    flat = int(np.argmax(v))  # the first maximum in pixel order
    r, c = divmod(flat, v.shape[1])
    rows, cols = np.nonzero(m)
    hit = bool(((rows - r) ** 2 + (cols - c) ** 2).min() <= tolerance ** 2)
    pos = np.clip(v, 0, None)
    total = pos.sum()
    energy = float(pos[m].sum() / total) if total > 0 else 0.0
    return Pointing(hit=hit, energy=energy, point=(r, c), mask_fraction=float(m.mean()), tolerance=int(tolerance))


def _to_model_grid(mask_img: Image.Image, data_config: Mapping) -> np.ndarray:
    """A greyscale mask image resized and cropped as the image is, thresholded at 0.5: bool (H, W)."""
    t = preprocess(mask_img.convert("L").convert("RGB"), data_config).tensor
    return (t[0] >= 0.5).numpy()


def _alpha(data: bytes) -> np.ndarray | None:
    """The alpha channel (H, W) uint8 of encoded image bytes, or None when it has none or is fully opaque."""
    with Image.open(io.BytesIO(data)) as img:
        if "A" not in img.getbands() and not (img.mode == "P" and "transparency" in img.info):
            return None
        alpha = np.asarray(img.convert("RGBA"))[..., 3]
    return None if alpha.min() >= 255 else alpha


def alpha_mask(source: str | os.PathLike | bytes | BinaryIO, data_config: Mapping, *,
               name: str | None = None) -> np.ndarray | None:
    """The object mask from the image's alpha channel at the model input size (bool (H, W)), or None when the
    image has no transparency. Raises ImageError for a file that is not a usable image."""
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "upload")
    data = source if isinstance(source, bytes) else _read_bytes(source, label, MAX_BYTES)
    load_image(data, name=label)  # the same checks (size, format, corruption) as the image itself
    alpha = _alpha(data)
    return None if alpha is None else _to_model_grid(Image.fromarray(alpha), data_config)


def mask_file(source: str | os.PathLike | bytes | BinaryIO, data_config: Mapping,
              original_size: tuple[int, int], *, name: str | None = None) -> np.ndarray:
    """An object mask image (white = object, or its alpha channel when it has transparency) as bool (H, W) at
    the model input size.

    It must have the original image's size (then it is resized and cropped as the image), or already the model
    input size. Raises ImageError with a one-line reason.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "mask upload")
    data = source if isinstance(source, bytes) else _read_bytes(source, label, MAX_BYTES)
    img = load_image(data, name=label)
    alpha = _alpha(data)
    grey = Image.fromarray(alpha) if alpha is not None else img.convert("L")
    size = tuple(data_config["input_size"][1:])
    if img.size == tuple(original_size):
        m = _to_model_grid(grey, data_config)
    elif img.size == (size[1], size[0]):
        m = np.asarray(grey, dtype=np.float32) / 255.0 >= 0.5
    else:
        raise ImageError(f"{label}: the mask is {img.size[0]}x{img.size[1]}; it must match the image "
                         f"({original_size[0]}x{original_size[1]}) or the model input ({size[1]}x{size[0]})")
    if not m.any():
        raise ImageError(f"{label}: the mask is empty (no pixel at or above half brightness)")
    return m
