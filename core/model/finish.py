"""The last step of every model load: a timm network becomes a :class:`LensModel` with its card.

Shared by :mod:`.loading` (hub, file, random, embedded) and :mod:`.heads` (a head on the embedded backbone), so
neither imports the other for it.
"""
from __future__ import annotations

from torch import nn

from .wrapper import LensModel, ModelCard, ModelLoadError, WeightsSource, imagenet_labels, net_num_classes


def finish_model(net: nn.Module, name: str, source: WeightsSource, detail: str, fingerprint: str,
                 notice: str | None) -> LensModel:
    """Wrap ``net`` with the card its timm data config describes (input size, crop, mean/std).

    Raises:
        ModelLoadError: ``net`` has no classifier head (``num_classes == 0``).
    """
    from timm.data import resolve_data_config

    if getattr(net, "num_classes", None) == 0:
        raise ModelLoadError(f"{name} has no classifier head (a feature backbone): pick weights trained for "
                             "classification, e.g. an ImageNet-1k tag")
    cfg = resolve_data_config({}, model=net)
    num_classes = net_num_classes(net)
    card = ModelCard(
        name=name, arch=getattr(net, "default_cfg", {}).get("architecture") or type(net).__name__,
        weights=source, weights_detail=detail, fingerprint=fingerprint,
        num_params=sum(p.numel() for p in net.parameters()), num_classes=num_classes,
        input_size=tuple(cfg["input_size"]), interpolation=cfg["interpolation"], crop_pct=float(cfg["crop_pct"]),
        crop_mode=cfg.get("crop_mode", "center"), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), notice=notice)
    return LensModel(net, card, imagenet_labels(net, num_classes))
