"""Image intake and preprocessing.

:func:`load_image` turns a path, bytes or a file object into an RGB PIL image, or raises :class:`ImageError`
with a one-line reason. :func:`preprocess` applies the model's resize and crop and remembers which region of
the original image the model input covers (``box``), so maps can be placed back on the original.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Mapping

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .files import hosted

MAX_PIXELS = int(os.environ.get("LENS_MAX_PIXELS", 40_000_000))
MAX_BYTES = int(os.environ.get("LENS_MAX_BYTES", 25 * 1024 * 1024))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")  # lower case, with the dot
ASSETS = Path(__file__).resolve().parent.parent / "assets"
SAMPLES = ASSETS / "samples"

# We check the pixel count ourselves before decoding; PIL's own bomb guard stays as a second line.
Image.MAX_IMAGE_PIXELS = max(MAX_PIXELS, Image.MAX_IMAGE_PIXELS or 0)
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An input that is not a usable image; the message is one line, fit to show a user."""


def load_image(source: str | os.PathLike | bytes | BinaryIO, *, name: str | None = None,
               max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> Image.Image:
    """Decode an image to 8-bit RGB.

    EXIF orientation is applied; palette, CMYK, greyscale, 16-bit and float images are converted; alpha is
    composited on white; animated formats give their first frame.

    Args:
        source: file path, raw bytes, or a binary file object (e.g. a Streamlit upload).
        name: what to call the input in messages (defaults to the path).
        max_pixels: larger images are refused from their header, before any decoding.
        max_bytes: larger files are refused before reading.

    Raises:
        ImageError: not an image, empty, truncated or corrupt, too large.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "upload")
    data = _read_bytes(source, label, max_bytes)
    if not data:
        raise ImageError(f"{label}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"{label}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the "
                                 f"{max_pixels / 1e6:.0f} MP limit")
            if w == 0 or h == 0:
                raise ImageError(f"{label}: image has no pixels")
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{label}: too many pixels, over the {max_pixels / 1e6:.0f} MP limit "
                         "(refused before decoding)") from None
    except UnidentifiedImageError:
        kind = _signature(data)
        if kind:
            raise ImageError(f"{label}: truncated or corrupt image ({kind} header, unreadable data)") from None
        raise ImageError(f"{label}: not an image (format not recognised)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"{label}: truncated or corrupt image ({reason})") from None


_SIGNATURES = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP",
               b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def _signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES.items() if data.startswith(magic)), None)


def _read_bytes(source, label: str, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{label}: no such file")
        if path.is_dir():
            raise ImageError(f"{label}: is a folder, not an image")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(f"{label}: file is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(f"{label}: cannot read ({e.strerror or e})") from None
    else:
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageError(f"{label}: file is over the {max_bytes / 2**20:.0f} MB limit")
    return data


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode; transparency composited on white."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        if mode == "F":
            top = max(float(a.max(initial=1.0)), 1e-12) if a.max(initial=0) > 1 else 1.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
    elif mode == "RGBa":
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return img


@dataclass(frozen=True)
class ModelInput:
    """One image as the model sees it.

    Attributes:
        tensor: float32 (3, H, W) in [0, 1], after the model's resize and crop.
        box: (left, top, right, bottom) of the region of the original image the tensor covers, in original
            pixels (floats).
        original_size: (width, height) of the original image.
    """

    tensor: torch.Tensor
    box: tuple[float, float, float, float]
    original_size: tuple[int, int]

    @property
    def batch(self) -> torch.Tensor:
        return self.tensor.unsqueeze(0)

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """Map a point in model-input pixels to original-image pixels."""
        left, top, right, bottom = self.box
        h, w = self.tensor.shape[-2:]
        return left + x * (right - left) / w, top + y * (bottom - top) / h


_INTERP = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
           "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}


def preprocess(img: Image.Image, data_config: Mapping) -> ModelInput:
    """Resize and crop as timm's eval transform does for ``data_config``, to a [0, 1] tensor.

    ``center`` mode: the shorter side to ``floor(size / crop_pct)``, then a centred ``size`` crop.
    ``squash`` mode: both sides to that scale, then the crop. ``border`` mode: the longer side to ``size``,
    padded with the mean colour.
    """
    crop, box = _model_crop(img, data_config)
    return ModelInput(_to_tensor(crop), box, img.size)


def model_pixels(img: Image.Image, data_config: Mapping) -> np.ndarray:
    """:func:`preprocess`'s pixels as (H, W, 3) uint8, without PyTorch (for decoding threads beside a forward);
    :func:`pixels_batch` turns them into the same tensors."""
    return np.array(_model_crop(img, data_config)[0], dtype=np.uint8)


def pixels_batch(pixels: list[np.ndarray]) -> torch.Tensor:
    """(N, 3, H, W) float32 in [0, 1] of :func:`model_pixels` arrays: equal to stacking :func:`preprocess`'s."""
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous().float().div_(255.0)


def _model_crop(img: Image.Image, data_config: Mapping) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """The model's view of ``img`` (see :func:`preprocess`) and the box it covers in original pixels."""
    _, out_h, out_w = data_config["input_size"]
    crop_pct = float(data_config.get("crop_pct") or 1.0)
    mode = data_config.get("crop_mode") or "center"
    interp = _INTERP.get(str(data_config.get("interpolation", "bilinear")), Image.BILINEAR)
    w, h = img.size
    if mode == "border":
        scale = min(out_w / w, out_h / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = img.resize((nw, nh), interp)
        fill = tuple(int(round(m * 255)) for m in data_config.get("mean", (0.5, 0.5, 0.5)))
        canvas = Image.new("RGB", (out_w, out_h), fill)
        left, top = (out_w - nw) // 2, (out_h - nh) // 2
        canvas.paste(resized, (left, top))
        return canvas, (-left / scale, -top / scale, (out_w - left) / scale, (out_h - top) / scale)
    scale_h, scale_w = int(out_h / crop_pct), int(out_w / crop_pct)
    if mode == "squash":
        nw, nh = scale_w, scale_h
    elif w <= h:  # torchvision Resize(int): the shorter side gets the size, the longer keeps the aspect
        nw, nh = scale_w, int(scale_w * h / w)
    else:
        nw, nh = int(scale_h * w / h), scale_h
    resized = img.resize((nw, nh), interp) if (nw, nh) != (w, h) else img
    left, top = int(round((nw - out_w) / 2.0)), int(round((nh - out_h) / 2.0))
    crop = resized.crop((left, top, left + out_w, top + out_h))
    sx, sy = w / nw, h / nh
    return crop, (left * sx, top * sy, (left + out_w) * sx, (top + out_h) * sy)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    a = np.asarray(img, dtype=np.uint8).copy()
    return torch.from_numpy(a).permute(2, 0, 1).float().div_(255.0)


def is_image_name(path: str | os.PathLike) -> bool:
    """Whether ``path``'s suffix (any case) is one of :data:`IMAGE_SUFFIXES` (the file is not opened)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | os.PathLike, *, recursive: bool = True, hidden: bool = True,
                any_file: bool = False, within: str | os.PathLike | None = None) -> list[Path]:
    """The one folder lister: image files in ``folder`` (and below when ``recursive``), sorted by path.

    Args:
        folder: the folder to list.
        recursive: also list sub-folders, at any depth.
        hidden: keep files whose name starts with ``.``.
        any_file: list every file, not only those with an image suffix (a caller that reports the others).
        within: hosted (``LENS_HOSTED``), a file that resolves outside this folder (default ``folder``) is not
            listed: a link out of a visitor's data folder is not followed.

    Raises:
        ImageError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a folder")
    found = folder.rglob("*") if recursive else folder.iterdir()
    listed = sorted(p for p in found if (any_file or is_image_name(p)) and (hidden or not p.name.startswith("."))
                    and p.is_file())
    if hosted():
        boundary = Path(folder if within is None else within).resolve()
        if not folder.resolve().is_relative_to(boundary):
            return []
        # rglob does not descend into linked folders: only a listed file itself can be a link out
        listed = [p for p in listed if not p.is_symlink() or p.resolve().is_relative_to(boundary)]
    return listed


def sample_images() -> list[Path]:
    """The licence-clean sample photos shipped in ``assets/samples``."""
    return list_images(SAMPLES) if SAMPLES.is_dir() else []
