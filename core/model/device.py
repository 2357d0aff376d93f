"""Which device the model runs on: ``auto`` picks CUDA, then Apple's MPS, then the CPU.

The CLI's ``--device`` and the app's ``LENS_DEVICE`` environment variable both go through :func:`resolve_device`.
Techniques create their inputs, noise and masks on the model's device (:func:`model_device`) and return results
on the CPU for display.
"""
from __future__ import annotations

import enum
import os

import torch
from torch import nn

ENV = "LENS_DEVICE"


class Device(str, enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: Device | str | None = None) -> torch.device:
    """``name`` (None: ``$LENS_DEVICE``, else auto) as a torch device.

    Raises:
        ValueError: an unknown name, or a device this machine does not have (one line).
    """
    raw = name.value if isinstance(name, Device) else (name or os.environ.get(ENV) or Device.AUTO.value)
    try:
        kind = Device(str(raw).strip().lower())
    except ValueError:
        raise ValueError(f"unknown device {raw!r}: use {', '.join(d.value for d in Device)}") from None
    if kind is Device.AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if kind is Device.CUDA and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but this machine has no CUDA GPU (use --device auto or cpu)")
    if kind is Device.MPS and not _mps_available():
        raise ValueError("device mps asked for, but MPS is not available here (use --device auto or cpu)")
    return torch.device(kind.value)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")
