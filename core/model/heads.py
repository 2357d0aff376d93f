"""Head-only weights files: a new linear classifier on the embedded EfficientNet-Lite0's pooled features.

A fine-tuned head is a few KB where the whole network is 18 MB, so it can ship in ``assets/``. The file is a
safetensors file holding ``classifier.weight`` (C, 1280) and ``classifier.bias`` (C,), with metadata
``lens_head_base = "embedded"`` and ``label_names`` (a JSON list). ``load_model(weights=FILE)`` (with no model
name, or ``embedded``) builds the embedded backbone and puts this head on it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..hashing import file_sha256
from .checkpoints import read_state_dict
from .embedded import EMBEDDED_NAME, load_embedded_net
from .finish import finish_model
from .labels import apply_weights_labels
from .wrapper import ModelLoadError, WeightsSource

HEAD_BASE_KEY = "lens_head_base"
HEAD_KEYS = ("classifier.weight", "classifier.bias")


def is_head_file(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` is a head-only safetensors file made for the embedded model."""
    if not path or Path(path).suffix.lower() != ".safetensors" or not Path(path).is_file():
        return False
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get(HEAD_BASE_KEY) == "embedded"
    except Exception:  # not a readable safetensors file: the ordinary loader says why
        return False


def save_head(path: str | os.PathLike, linear: nn.Linear, labels: Sequence[str], extra: dict | None = None) -> Path:
    """Write ``linear`` (in_features 1280) and its class names as a head-only file; returns the path."""
    from safetensors.torch import save_file

    if len(labels) != linear.out_features:
        raise ValueError(f"{len(labels)} class names for a head with {linear.out_features} outputs")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {HEAD_BASE_KEY: "embedded", "label_names": json.dumps(list(labels))}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    save_file({"classifier.weight": linear.weight.detach().float().contiguous(),
               "classifier.bias": linear.bias.detach().float().contiguous()}, str(path), metadata=meta)
    return path


def load_head_model(path: str | os.PathLike, progress=None):
    """The embedded EfficientNet-Lite0 with the head in ``path`` and the class names it carries.

    Raises:
        ModelLoadError: the file does not hold a (C, 1280) weight and (C,) bias.
    """
    if progress:
        progress(f"loading the embedded EfficientNet-Lite0 with the head in {Path(path).name}")
    sd = read_state_dict(path)
    net, base_fp = load_embedded_net()
    w, b = sd.get(HEAD_KEYS[0]), sd.get(HEAD_KEYS[1])
    features = net.classifier.in_features
    if w is None or b is None or w.ndim != 2 or w.shape[1] != features or b.shape != (w.shape[0],):
        raise ModelLoadError(f"{Path(path).name} is not a head for the embedded model: it needs "
                             f"classifier.weight (C, {features}) and classifier.bias (C,)")
    head = nn.Linear(features, w.shape[0])
    head.load_state_dict({"weight": w, "bias": b})
    net.reset_classifier(0)
    net.classifier = head
    net.num_classes = w.shape[0]
    model = finish_model(net, EMBEDDED_NAME, WeightsSource.FILE, f"{path} (head on the embedded EfficientNet-Lite0)",
                    f"{base_fp}+head:sha256:{file_sha256(path)}", None)
    return apply_weights_labels(model, path)


def pooled_features(model, x: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
    """The embedded model's pooled features (N, 1280) of images ``x`` (N, 3, H, W) in [0, 1], in batches of
    ``batch_size`` (None: :func:`core.batching.forward_batch`)."""
    from ..batching import forward_batch

    outs = []
    batch_size = batch_size or forward_batch(model, x.shape[1:])
    with torch.inference_mode():
        for chunk in x.split(batch_size):
            net = model.net
            outs.append(net.forward_head(net.forward_features(model.normalise(chunk)), pre_logits=True).float())
    return torch.cat(outs)
