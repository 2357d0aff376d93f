"""Local weights files: reading a state dict safely (safetensors, or ``torch.load(weights_only=True)``) and a strict
load into a timm net, with the architecture's own converter as the fallback."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .wrapper import ModelLoadError, first_line, net_num_classes


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file, or from ``.pth/.pt/.bin`` with ``torch.load(weights_only=True)``.

    A pickle payload that is anything but tensors and plain containers is refused, never run.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"weights file is empty: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            sd = load_file(str(path), device="cpu")
        except Exception as e:
            raise ModelLoadError(f"not a valid safetensors file: {path} ({first_line(e)})") from None
    elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            text = str(e)
            if "Weights only load failed" in text:
                detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
                detail = detail[0].strip() if detail and "WeightsUnpickler" in text else "not plain tensors"
                raise ModelLoadError(
                    f"refused {path.name}: not a plain tensor checkpoint ({detail}); it was read with "
                    "weights_only=True, so nothing in it ran") from None
            raise ModelLoadError(f"not a readable PyTorch weights file: {path} ({first_line(e)})") from None
    else:
        raise ModelLoadError(f"unsupported weights file type {suffix!r}: use .safetensors, .pth, .pt or .bin")
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelLoadError(f"{path.name} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_file_into(net: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strict load; falls back to the architecture's own checkpoint converter (e.g. original ConvNeXt keys)."""
    try:
        net.load_state_dict(sd, strict=True)
        return
    except RuntimeError as first:
        err = first
    filt = getattr(__import__(type(net).__module__, fromlist=["_"]), "checkpoint_filter_fn", None)
    if filt is not None:
        try:
            net.load_state_dict(filt(dict(sd), net), strict=True)
            return
        except Exception:
            pass
    ours = net.state_dict()
    missing = [k for k in ours if k not in sd]
    unexpected = [k for k in sd if k not in ours]
    shapes = [k for k in ours if k in sd and tuple(sd[k].shape) != tuple(ours[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of other shape (e.g. {k}: file {tuple(sd[k].shape)} vs model {tuple(ours[k].shape)})")
    raise ModelLoadError(f"{source} does not fit {type(net).__name__}: " + ("; ".join(parts) or first_line(err)))


def head_classes(sd: Mapping[str, torch.Tensor], net: nn.Module) -> int | None:
    """Number of classes of the classifier in ``sd``, if it differs from ``net``'s."""
    head = getattr(getattr(net, "pretrained_cfg", {}), "get", lambda *_: None)("classifier")
    if head and f"{head}.weight" in sd:
        n = int(sd[f"{head}.weight"].shape[0])
        return n if n != net_num_classes(net) else None
    return None
