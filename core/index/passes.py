"""One batch of the activation index, shared by both engines (:mod:`.build`'s local threads, :mod:`.ray_engine`).

:func:`read_image` is the folder's image intake (the project's refusals and preprocessing) and
:func:`forward_partials` the forward pass that reduces a batch to each channel's top-k partial
(:func:`core.index.topk.batch_partial`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch

from ..catalogue import LayerInfo, layer_outputs
from ..images import ImageError, ModelInput, load_image, preprocess
from ..model.device import model_device
from .topk import batch_partial, channel_maxima


def relative(root: Path, path: Path) -> str:
    """``path`` relative to the indexed folder ``root`` (the key of an image in the manifest)."""
    return str(path.relative_to(root))


def read_image(root: Path, path: Path, data_config: dict) -> tuple[dict, ModelInput | None]:
    """Read, check and preprocess one image of the folder (the project's own intake, same refusals).

    Returns:
        The manifest record (``path`` relative to ``root``, ``bytes``, ``mtime_ns``, and for a readable image
        ``size``, ``sha256``, ``box``; ``error`` is None or a one-line reason) and the model input (None when
        the image was refused).
    """
    rel = relative(root, path)
    try:
        st = path.stat()
        data = path.read_bytes()
        inp = preprocess(load_image(data, name=str(path)), data_config)
    except OSError as e:  # vanished or unreadable since the folder was listed
        return {"path": rel, "bytes": 0, "mtime_ns": 0, "error": f"{path}: cannot read ({e.strerror or e})"}, None
    except ImageError as e:
        return {"path": rel, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "error": str(e)}, None
    return {"path": rel, "size": list(inp.original_size), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": hashlib.sha256(data).hexdigest(), "box": list(inp.box), "error": None}, inp


def forward_partials(model, infos: Sequence[LayerInfo], x: torch.Tensor, top_k: int) -> dict[str, dict]:
    """Forward ``x`` (N, 3, H, W) in [0, 1] and reduce each layer to its :func:`batch_partial` (N >= 1)."""
    outs = layer_outputs(model, x.to(model_device(model)), infos)
    partials = {}
    for info in infos:  # only the (N, C) maxima leave the device: the top-k is host-side bookkeeping
        values, pos = channel_maxima(outs[info.name])
        partials[info.name] = batch_partial(values.cpu(), pos.cpu(), top_k)
    return partials
