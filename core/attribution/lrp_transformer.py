"""What LRP needs to know about a vision transformer (timm's ViT, DeiT, EVA-02, BEiT, Swin): which attention
modules and gated MLPs the AttnLRP and CP-LRP rules of :mod:`.lrp` apply to, checked once on the prepared copy.

The rules themselves (:func:`core.attribution.lrp.lrp`, module docstring) work on the attention through the
projections that make Q, K and V, so an attention module must make them with ``nn.Linear`` modules (one fused
``qkv``, or ``q_proj``/``k_proj``/``v_proj``) whose forward runs. BEiT and EVA-02 add their q/v biases with
``F.linear`` on the fused weight, which no module hook sees: :func:`own_qkv_bias` moves that bias into the copy's
``qkv`` layer, so the same rules run there. Anything else is refused with its reason: an attention whose scores
go through a non-linearity of their own (Swin V2's cosine attention), an output gate, attention pooling heads,
and families whose blocks were not checked.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import NotApplicable
from ..tokens import attention_modules, is_token_model

# network classes whose blocks were checked: every non-linearity is a module with a rule, or the attention's
# softmax and products, or a GLU product (the rules of core.attribution.lrp)
FAMILIES = {"VisionTransformer": "ViT", "VisionTransformerDistilled": "DeiT", "Eva": "EVA-02", "Beit": "BEiT",
            "SwinTransformer": "Swin"}
_ATTENTIONS = {"Attention", "EvaAttention", "WindowAttention"}
_GLUS = {"GluMlp", "SwiGLU"}


@dataclass(frozen=True)
class TransformerParts:
    """The modules of a prepared transformer the attention rules hook.

    Attributes:
        family: the family's name (ViT, DeiT, EVA-02, BEiT, Swin).
        projections: per attention module, ``(linear, part)`` for each projection that makes Q, K or V:
            ``part`` is ``"qkv"`` for a fused layer (output channels q | k | v) or ``"q"``, ``"k"``, ``"v"``.
        glus: the gated MLPs: ``act(gate) * x`` then ``drop1`` (timm's GluMlp and SwiGLU).
        softmaxes: softmax modules of the attention (Swin's explicit path): their own gradient is AttnLRP's
            softmax rule, so they need no hook.
    """

    family: str
    projections: tuple[tuple[nn.Linear, str], ...]
    glus: tuple[nn.Module, ...]
    softmaxes: tuple[nn.Module, ...] = ()


def transformer_parts(net: nn.Module, arch: str) -> TransformerParts | None:
    """The attention projections and gated MLPs of ``net`` (None for a net without patch tokens: a CNN).

    Raises:
        NotApplicable: a token model these rules were not checked on, or an attention they cannot follow.
    """
    if not is_token_model(net):
        return None
    kind = type(net).__name__
    family = FAMILIES.get(kind)
    if family is None:
        raise NotApplicable(f"LRP has attention rules for timm's {', '.join(FAMILIES.values())}; {arch} is a {kind} "
                            "whose blocks were not checked")
    if getattr(net, "attn_pool", None) is not None:
        raise NotApplicable(f"LRP has no rule for the attention-pooling head of {arch} (global_pool='map')")
    projections: list[tuple[nn.Linear, str]] = []
    for name, attn in attention_modules(net):
        if type(attn).__name__ not in _ATTENTIONS:
            raise NotApplicable(f"LRP has no rule for {type(attn).__name__} ({name}) in {arch}")
        if getattr(attn, "gate", None) is not None:
            raise NotApplicable(f"LRP has no rule for the gated attention output of {name} in {arch}")
        qkv = getattr(attn, "qkv", None)
        if isinstance(qkv, nn.Linear):
            projections.append((qkv, "qkv"))
        elif all(isinstance(getattr(attn, f"{p}_proj", None), nn.Linear) for p in "qkv"):
            projections.extend((getattr(attn, f"{p}_proj"), p) for p in "qkv")
        else:
            raise NotApplicable(f"LRP needs the Q, K, V projections of {name} in {arch} as Linear layers")
    if not projections:
        raise NotApplicable(f"{arch} has no attention layers these LRP rules can follow")
    glus = tuple(m for m in net.modules() if type(m).__name__ in _GLUS)
    softmaxes = tuple(m for _n, attn in attention_modules(net) for m in attn.children() if isinstance(m, nn.Softmax))
    return TransformerParts(family, tuple(projections), glus, softmaxes)


def own_qkv_bias(net: nn.Module) -> int:
    """On a private copy: every attention that adds ``q_bias``/``k_bias``/``v_bias`` with ``F.linear`` on its
    ``qkv`` weight gets that bias as its ``qkv`` layer's own (a new tensor; the weight stays shared) and runs
    ``self.qkv(x)``, the same function. Returns how many were moved."""
    moved = 0
    for m in net.modules():
        qkv, q_bias = getattr(m, "qkv", None), getattr(m, "q_bias", None)
        if not isinstance(qkv, nn.Linear) or q_bias is None or qkv.bias is not None:
            continue
        k_bias = getattr(m, "k_bias", None)
        with torch.no_grad():
            bias = torch.cat((q_bias, torch.zeros_like(q_bias) if k_bias is None else k_bias, m.v_bias))
        qkv.bias = nn.Parameter(bias, requires_grad=False)
        m.q_bias = m.k_bias = m.v_bias = None
        moved += 1
    return moved
