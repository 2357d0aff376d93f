"""Class activation maps (Zhou et al., "Learning deep features for discriminative localization", CVPR 2016).

CAM needs a head that is global average pooling followed by a linear layer: then the logit is exactly the
spatial mean of ``sum_c w_kc A_c(x, y)`` plus the bias, and that sum is the map. Checked numerically on the
image, not by name: the head's pre-logit features must equal the pooled features.

ConvNeXt's head is pool -> LayerNorm -> linear. LayerNorm is linear in the pooled vector once its statistics
(mean and standard deviation over channels) are fixed, so we fix them at *this image's* pooled values:
``LN(p) = gamma * (p - mean(p)) / sigma_0 + beta``. The map is then exact for this image (its mean plus the
constant equals the logit) but is a linearisation: another image has other statistics. Results say so
(``linearised`` and ``note``). Heads with anything else between pooling and the classifier (a hidden MLP,
MobileNetV3's conv head, max pooling) are refused with the reason.

Transformers: an average-pooling head (EVA-02, BEiT, Swin; ``fc_norm`` is the LayerNorm) gets CAM over its patch
tokens (:mod:`core.tokens`); a head that reads the class token is refused (no average over positions).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import Progress, report
from .base import Attribution, NotApplicable
from .spec import MethodSpec
from .. import tokens
from ..inputs import Target, resolve_target
from ..model.wrapper import LensModel


def _head_parts(net: nn.Module) -> tuple[nn.Linear, nn.Module | None]:
    """(classifier, LayerNorm between pooling and classifier or None); refuses other heads by name."""
    fc = net.get_classifier() if hasattr(net, "get_classifier") else None
    if not isinstance(fc, nn.Linear):
        raise NotApplicable(f"CAM needs a linear classifier; {type(net).__name__} has {type(fc).__name__}")
    head = getattr(net, "head", None)
    norm = getattr(head, "norm", None) if head is not None and getattr(head, "fc", None) is fc else None
    if norm is not None and not isinstance(norm, nn.Identity):
        if not isinstance(norm, nn.LayerNorm):
            raise NotApplicable(f"CAM cannot linearise the {type(norm).__name__} in the head")
        if not isinstance(getattr(head, "pre_logits", nn.Identity()), nn.Identity):
            raise NotApplicable("the head has a hidden layer between pooling and the classifier, so CAM is not exact")
        return fc, norm
    fc_norm = getattr(net, "fc_norm", None)  # the ViT family's norm between pooling and the classifier
    if isinstance(fc_norm, nn.LayerNorm):
        return fc, fc_norm
    if fc_norm is not None and not isinstance(fc_norm, nn.Identity):
        raise NotApplicable(f"CAM cannot linearise the {type(fc_norm).__name__} in the head")
    return fc, None


def _feature_map(net: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """The features as (N, C, h, w): transformer tokens over the patch grid, Swin's NHWC permuted."""
    if not tokens.is_token_model(net):
        return feats
    if feats.dim() == 3:
        grid = tuple(getattr(net.patch_embed, "grid_size", (0, 0)))
        return tokens.split_tokens(feats, grid, tokens.prefix_count(net))[0]
    return feats.permute(0, 3, 1, 2) if getattr(net, "output_fmt", "NCHW") == "NHWC" else feats


def cam(model: LensModel, x: torch.Tensor, target: Target = None, *, progress: Progress | None = None) -> Attribution:
    """Class activation map for ``target`` (None: the top class).

    Args:
        x: float (N, 3, H, W) in [0, 1] (not modified).
        target: class index, one per image, or None.

    Returns:
        ``map`` float32 (N, H, W) at the input size and ``grid`` (N, h, w) on the feature grid (signed, logit
        units per position); ``metrics``: ``logit`` (N,) the model's logit for ``target`` and ``constant`` (N,)
        the part of the logit no position gets (bias, LayerNorm shift): ``grid.mean((1, 2)) + constant == logit``.
        ``notes[0]`` says whether the map is exact or linearised at this image.

    Raises:
        NotApplicable: the head is not (LayerNorm-)linear after global average pooling.
    """
    started = time.perf_counter()
    net = model.net
    if not (hasattr(net, "forward_features") and hasattr(net, "forward_head")):
        raise NotApplicable(f"{type(net).__name__} does not separate features from the head")
    if tokens.pools_class_token(net):
        raise NotApplicable(f"{type(net).__name__}'s head reads the class token, not an average over the patches, "
                            "so CAM does not apply: use Grad-CAM or grad-rollout")
    fc, norm = _head_parts(net)
    with torch.no_grad():  # no hooks, no state: the lock is not needed
        out = net.forward_features(model.normalise(x))
        feats = _feature_map(net, out)
        if feats.dim() != 4:
            raise NotApplicable("the model's features are not a spatial map")
        pre = net.forward_head(out, pre_logits=True).flatten(1)
        logits = fc(pre)
    pooled = feats.mean(dim=(2, 3))
    t = resolve_target(model, x, target, logits=logits)
    w = fc.weight[t]                                    # (N, C)
    bias = fc.bias[t] if fc.bias is not None else torch.zeros(len(t))
    if norm is None:
        expected, weights, constant = pooled, w, bias
        note = "exact: the head is global average pooling followed by a linear layer"
    else:
        sigma = torch.sqrt(pooled.var(dim=1, unbiased=False, keepdim=True) + norm.eps)
        gamma = norm.weight if norm.weight is not None else torch.ones(pooled.shape[1])
        beta = norm.bias if norm.bias is not None else torch.zeros(pooled.shape[1])
        expected = gamma * (pooled - pooled.mean(1, keepdim=True)) / sigma + beta
        v = w * gamma / sigma                           # (N, C): weights on the centred features
        weights = v - v.mean(1, keepdim=True)           # centring folded into the weights
        constant = (w * beta).sum(1) + bias
        note = ("linearised: the head's LayerNorm is fixed at this image's pooled mean and standard deviation, "
                "so the map is exact for this image only")
    scale = max(1.0, float(expected.abs().max()))
    if expected.shape != pre.shape or float((expected - pre).abs().max()) > 1e-3 * scale:
        raise NotApplicable("the head is not global average pooling followed by a linear layer "
                            f"({type(net).__name__}'s head transforms the pooled features), so CAM is not exact")
    raw = torch.einsum("nc,nchw->nhw", weights, feats).float()
    full = F.interpolate(raw[:, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    logit = logits.gather(1, t[:, None])[:, 0]
    report(progress, 1.0, "CAM: done")
    return Attribution(map=full.contiguous(), raw=None, grid=raw, method="cam", target=[int(v) for v in t],
                       seconds=time.perf_counter() - started, notes=(note,),
                       metrics={"logit": tuple(float(v) for v in logit),
                                "constant": tuple(float(v) for v in constant)})


CAM = MethodSpec("cam", cam, "CAM",
                 "class activation map of the last features (LayerNorm head linearised at the image)")
