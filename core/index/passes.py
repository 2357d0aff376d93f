"""One batch of the activation index, shared by both engines (:mod:`.build`'s local threads, :mod:`.ray_engine`).

:func:`read_image` is the folder's image intake (the project's refusals and preprocessing) and
:func:`forward_partials` the pass that reduces a batch to each channel's top-k partial
(:func:`core.index.topk.batch_partial`): by activation, and with ``relevance`` also by LRP relevance for each
image's predicted class (:func:`core.attribution.lrp_layers.relevance_at`, whose forward pass gives the activations too).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Sequence

import torch

from ..attribution.lrp import LrpRule
from ..attribution.lrp_layers import relevance_at
from ..batching import forward_batch
from ..catalogue import LayerInfo, layer_outputs, to_nchw
from ..images import ImageError, ModelInput, load_image, preprocess
from ..model.device import model_device
from .topk import batch_partial, channel_maxima

RANKINGS = ("activation", "relevance")
# the relevance ranking's LRP: the Concepts page's default rules (core.concepts), recorded in the manifest
# "revision" counts changes of the rules' arithmetic: an index ranked by an older one is rebuilt (2: z+ no longer
# divides by the float rounding of cancelling terms)
RELEVANCE = {"rule": LrpRule.ZPLUS.value, "epsilon": 0.25, "target": "predicted", "revision": 2}
RELEVANCE_BATCH = 4  # images per LRP pass: bounds the memory autograd keeps (a pass's whole graph)

Partials = dict[str, dict[str, dict]]
"""ranking (:data:`RANKINGS`) -> layer name -> :func:`~core.index.topk.batch_partial`."""


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


def forward_partials(model, infos: Sequence[LayerInfo], x: torch.Tensor, top_k: int, *,
                     relevance: bool = False) -> Partials:
    """Forward ``x`` (N, 3, H, W) in [0, 1] and reduce each layer to its :func:`batch_partial` (N >= 1); the
    forward passes run in the measured batch (:func:`core.batching.forward_batch`).

    Returns:
        ``{"activation": {layer: partial}}`` of the channels' spatial maxima; with ``relevance`` also
        ``"relevance"``: each channel's LRP relevance for the image's predicted class summed over positions
        (:data:`RELEVANCE`'s rules), at the position where that channel's relevance is highest.
    """
    x = x.to(model_device(model))
    if not relevance:
        step = forward_batch(model, x.shape[1:])
        maxima: dict[str, list[list[torch.Tensor]]] = {info.name: [[], []] for info in infos}
        for lo in range(0, x.shape[0], step):
            outs = layer_outputs(model, x[lo:lo + step], infos)
            for info in infos:
                # only the (N, C) maxima leave the device: the top-k is host-side bookkeeping
                for kept, t in zip(maxima[info.name], channel_maxima(outs[info.name])):
                    kept.append(t.cpu())
        return {"activation": {name: _partial(torch.cat(v), torch.cat(p), top_k) for name, (v, p) in maxima.items()}}
    found: dict[str, list[list[torch.Tensor]]] = {info.name: [[], [], [], []] for info in infos}
    for lo in range(0, x.shape[0], RELEVANCE_BATCH):
        lr = relevance_at(model, x[lo:lo + RELEVANCE_BATCH], layers=[info.name for info in infos],
                          rule=RELEVANCE["rule"], epsilon=RELEVANCE["epsilon"])
        for info in infos:
            values, pos = channel_maxima(to_nchw(lr.outputs[info.name], info))
            r = to_nchw(lr.relevance[info.name], info)
            _, where = channel_maxima(r)
            # summed in double as core.concepts sums it; a NaN relevance ranks last
            total = torch.nan_to_num(r.double().sum((2, 3)), nan=-math.inf).float()
            for kept, t in zip(found[info.name], (values, pos, total, where)):
                kept.append(t.cpu())
    cat = {name: [torch.cat(parts) for parts in lists] for name, lists in found.items()}
    return {"activation": {name: _partial(v, p, top_k) for name, (v, p, _, _) in cat.items()},
            "relevance": {name: _partial(r, w, top_k) for name, (_, _, r, w) in cat.items()}}


def _partial(values: torch.Tensor, pos: torch.Tensor, top_k: int) -> dict:
    """``values`` and ``pos`` (N, C), already on the CPU (:func:`forward_partials` moves them)."""
    return batch_partial(values, pos, top_k)
