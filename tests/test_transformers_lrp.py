"""LRP on vision transformers (AttnLRP and CP-LRP) and ConvNeXt V2's GRN rule: agreement with the rules written out
as explicit relevance messages, conservation on every family, refusals, and the shared model left alone."""
from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from core.attribution import NotApplicable
from core.attribution.lrp import FirstRule, LrpRule, lrp, prepare
from core.model import wrap
from core.tokens import attention_modules


def _x(n=1, size=64, seed=0, dtype=torch.float32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ------------------------------------------------------------------ the rules as explicit relevance messages

def _lrp0(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, rel: torch.Tensor) -> torch.Tensor:
    """LRP-0 through ``z = a w^T + b`` (the bias in the denominator absorbs its share): R_i = sum_j a_i w_ji R_j / z_j."""
    z = a @ w.T + (0 if b is None else b)
    return a * ((rel / z) @ w)


def _layernorm(x: torch.Tensor, ln: nn.LayerNorm, rel: torch.Tensor) -> torch.Tensor:
    """LRP-0 through LayerNorm with sigma constant: y - beta = M x, M = gamma / sigma (I - 1/C)."""
    c = x.shape[-1]
    sigma = (x.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt()
    y = (x - x.mean(-1, keepdim=True)) / sigma * ln.weight + ln.bias
    s = rel / y * ln.weight / sigma                           # R_j / z_j times dz_j / d(centred x_j)
    return x * (s - s.sum(-1, keepdim=True) / c)


def _sum(parts: list[torch.Tensor], rel: torch.Tensor) -> list[torch.Tensor]:
    """Relevance of ``sum(parts)`` split in proportion to the parts."""
    total = sum(parts)
    return [p / total * rel for p in parts]


def reference_vit_lrp(net: VisionTransformer, xn: torch.Tensor, target: int, *, cp: bool) -> torch.Tensor:
    """AttnLRP (or CP-LRP) of a one-image ViT written out message by message, LRP-0 on every linear layer and the
    patch embedding, from the equations of Achtibat et al. (2024): softmax ``R_S = S (R_A - A sum_k R_A)``,
    uniform rule (halves) on ``A V`` and ``Q K^T``. Returns the relevance of the normalised pixels (3, H, W)."""
    pe = net.patch_embed.proj
    p = pe.kernel_size[0]
    cols = F.unfold(xn, p, stride=p)[0].T                                        # (L0, 3 p p)
    emb = cols @ pe.weight.flatten(1).T + pe.bias                                # (L0, C)
    tokens = torch.cat([net.cls_token[0], emb]) + net.pos_embed[0]               # (L, C)
    trace = []
    t = tokens
    for blk in net.blocks:
        attn = blk.attn
        h = F.layer_norm(t, (t.shape[-1],), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        qkv = h @ attn.qkv.weight.T + attn.qkv.bias
        heads, d = attn.num_heads, attn.head_dim
        q, k, v = qkv.view(-1, 3, heads, d).permute(1, 2, 0, 3)                  # each (heads, L, d)
        s = q @ k.transpose(-1, -2) * attn.scale
        a = s.softmax(-1)
        o = (a @ v).transpose(0, 1).reshape(-1, heads * d)
        proj = o @ attn.proj.weight.T + attn.proj.bias
        t1 = t + proj
        h2 = F.layer_norm(t1, (t1.shape[-1],), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        f = h2 @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias
        g = F.gelu(f)
        m = g @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
        trace.append((t, h, q, k, v, s, a, o, t1, h2, f, g, m))
        t = t1 + m
    normed = F.layer_norm(t, (t.shape[-1],), net.norm.weight, net.norm.bias, net.norm.eps)
    logit = normed[0] @ net.head.weight[target] + net.head.bias[target]

    rel_normed = torch.zeros_like(normed)
    rel_normed[0] = _lrp0(normed[0], net.head.weight[target:target + 1], net.head.bias[target:target + 1],
                          logit.view(1))
    rel = _layernorm(t, net.norm, rel_normed)
    for blk, (t0, h, q, k, v, s, a, o, t1, h2, f, g, m) in reversed(list(zip(net.blocks, trace))):
        attn = blk.attn
        rel_t1, rel_m = _sum([t1, m], rel)
        rel_g = _lrp0(g, blk.mlp.fc2.weight, blk.mlp.fc2.bias, rel_m)
        rel_f = rel_g                                                             # identity rule on GELU
        rel_h2 = _lrp0(h2, blk.mlp.fc1.weight, blk.mlp.fc1.bias, rel_f)
        rel_t1 = rel_t1 + _layernorm(t1, blk.norm2, rel_h2)
        rel_t0, rel_proj = _sum([t0, t1 - t0], rel_t1)
        rel_o = _lrp0(o, attn.proj.weight, attn.proj.bias, rel_proj)
        heads, d = attn.num_heads, attn.head_dim
        rel_o = rel_o.view(-1, heads, d).transpose(0, 1)                          # (heads, L, d)
        o_h = a @ v
        # A V: message of a_ij v_jd to o_id is a_ij v_jd / o_id R_id; uniform rule: each factor gets half
        msg = a[..., :, :, None] * v[..., None, :, :] / o_h[..., :, None, :] * rel_o[..., :, None, :]
        rel_v = msg.sum(1) * (1.0 if cp else 0.5)
        if cp:
            rel_q = rel_k = torch.zeros_like(q)
        else:
            rel_a = msg.sum(-1) * 0.5
            rel_s = s * (rel_a - a * rel_a.sum(-1, keepdim=True))                 # the softmax rule
            # Q K^T (scaled, no bias): message q_ie k_je scale / s_ij R_ij, halves to each factor
            qk = q[..., :, None, :] * k[..., None, :, :] * attn.scale / s[..., None] * rel_s[..., None]
            rel_q, rel_k = qk.sum(2) * 0.5, qk.sum(1) * 0.5
        rel_qkv = torch.stack([rel_q, rel_k, rel_v]).permute(2, 0, 1, 3).reshape(h.shape[0], -1)
        rel_h = _lrp0(h, attn.qkv.weight, attn.qkv.bias, rel_qkv)
        rel = rel_t0 + _layernorm(t0, blk.norm1, rel_h)
    rel_emb = _sum([torch.cat([net.cls_token[0], emb]), net.pos_embed[0].expand_as(tokens)], rel)[0][1:]
    rel_cols = _lrp0(cols, pe.weight.flatten(1), pe.bias, rel_emb)
    return F.fold(rel_cols.T[None], xn.shape[-2:], p, stride=p)[0]


def _tiny_vit(seed: int = 0, **kwargs) -> VisionTransformer:
    """Two blocks with live branches: weights at std 1/sqrt(fan-in), biases and embeddings random (nonzero),
    query/key weights scaled so attention is far from uniform."""
    torch.manual_seed(seed)
    net = VisionTransformer(img_size=16, patch_size=8, embed_dim=8, depth=2, num_heads=2, mlp_ratio=2.0,
                            num_classes=3, **kwargs).double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.normal_(0, m.weight[0].numel() ** -0.5)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1)
            elif isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        net.cls_token.normal_(0, 0.5)
        net.pos_embed.normal_(0, 0.1)
        for _n, attn in attention_modules(net):
            attn.qkv.weight[: 2 * attn.qkv.in_features].mul_(3.0)
    return net


@pytest.mark.parametrize("rule", [LrpRule.EPSILON, LrpRule.CP])
def test_attnlrp_and_cp_agree_with_the_rules_written_as_messages(rule):
    """Our gradient x input implementation (relevance = tensor x modified gradient) against the explicit message
    form of the same rules, in float64 on a two-block ViT with biases: equal up to LRP-epsilon's stabiliser
    (1e-9 x a layer's std)."""
    net = _tiny_vit()
    model = wrap(net, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25), input_size=16)
    x = _x(size=16, dtype=torch.float64)
    ours = lrp(model, x, target=1, rule=rule, first=FirstRule.EPSILON, epsilon=1e-9)
    with torch.no_grad():
        expected = reference_vit_lrp(net, model.normalise(x), 1, cp=rule is LrpRule.CP)
    assert float(expected.abs().max()) > 0
    torch.testing.assert_close(ours.raw[0].double(), expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert ours.metrics["relevance_sum"][0] == pytest.approx(float(expected.sum()), rel=1e-4, abs=1e-6)


def test_attnlrp_and_cp_lrp_give_different_maps():
    """The attention rule reaches the map: AttnLRP and CP-LRP differ on the same ViT."""
    net = _tiny_vit(seed=1)
    model = wrap(net, input_size=16)
    x = _x(size=16, dtype=torch.float64)
    attn_lrp = lrp(model, x, target=0, rule=LrpRule.EPSILON, first=FirstRule.EPSILON, epsilon=1e-9).raw
    cp = lrp(model, x, target=0, rule=LrpRule.CP, first=FirstRule.EPSILON, epsilon=1e-9).raw
    assert not torch.allclose(attn_lrp, cp, rtol=1e-3)
    assert (attn_lrp - cp).abs().max() > 1e-3 * cp.abs().max()


# --------------------------------------------------------------------------------------- every family

def _live(arch: str, **kwargs):
    """A random timm model at 64 px with 5 classes, seeded, Linear weights at std 1/sqrt(fan-in) so every
    residual branch is live (timm's init for these families is std 0.02: the class token then hardly depends on
    the image) and attention far from uniform."""
    torch.manual_seed(0)
    net = timm.create_model(arch, pretrained=False, img_size=64, num_classes=5, **kwargs).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, m.in_features ** -0.5)
    return wrap(net, name=arch, input_size=64)


FAMILIES = {
    "vit": ("vit_tiny_patch16_224", dict(depth=3)),
    "deit": ("deit_tiny_distilled_patch16_224", dict(depth=2)),
    "eva02": ("eva02_tiny_patch14_224", dict(depth=2)),
    "beit": ("beit_base_patch16_224", dict(depth=2, embed_dim=96, num_heads=3)),
    "swin": ("swin_tiny_patch4_window7_224", dict(window_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2))),
}


@pytest.fixture(scope="module")
def families():
    return {name: _live(arch, **kw) for name, (arch, kw) in FAMILIES.items()}


def _without_biases(model):
    """A copy with every bias, position embedding and class/distillation token at zero (the relative position
    tables and Swin's shift mask stay: they only shape the attention weights, which CP-LRP holds constant)."""
    net = copy.deepcopy(model.net)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("bias", "pos_embed", "cls_token", "dist_token")):
                p.zero_()
    return wrap(net, name=model.card.name, input_size=64)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cp_lrp_conserves_exactly_without_biases(families, family):
    """CP-LRP's rules are all conservative (LRP-0 on linear layers, constant attention, LayerNorm and gate rules,
    the box rule on the pixels): with every bias, embedding and class token at zero the relevance sums to the
    logit."""
    model = _without_biases(families[family])
    r = lrp(model, _x(1), target=2, rule=LrpRule.CP, first=FirstRule.ZB, epsilon=1e-9)
    (s,), (logit,) = r.metrics["relevance_sum"], r.metrics["logit"]
    assert abs(s - logit) <= 1e-3 * abs(logit) + 1e-6


@pytest.mark.parametrize("family", ["vit", "deit", "eva02", "beit"])
def test_attnlrp_loses_exactly_what_its_softmax_rule_absorbs(families, family):
    """AttnLRP is not conservative at the softmax: with the attention weights ``A = softmax(S)`` and the rule's
    gradient ``c`` at ``A``, a row's relevance is ``sum(A c)`` above the softmax and ``sum(S c_S)`` below it, with
    ``c_S = A (c - sum(A c))``; as ``sum(c_S) = 0`` and ``S = log A + const`` per row, ``sum(S c_S) =
    sum(log(A) c_S)``. The uniform rule halves both (A is one factor of ``A V``). On a model without biases (and
    without relative position bias, a bias on S) the relevance at the pixels is the logit minus these losses, read
    on the explicit attention path of LRP's own copy."""
    from core.hooks import hooks_on

    model = _without_biases(families[family])
    prep = prepare(model)
    attns = [m for _n, m in attention_modules(prep.net)]
    losses: list[torch.Tensor] = []

    def watch(_m, _i, a):
        def lost(c):
            c_s_over_a = c - (a * c).sum(-1, keepdim=True)  # log(A) c_S = A log(A) (c - sum(A c))
            losses.append(0.5 * ((a * c).sum() - (torch.special.xlogy(a, a) * c_s_over_a).sum()))
        a.register_hook(lost)
    try:
        for m in attns:
            m.fused_attn = False  # the probabilities exist on the explicit path (this test's copy only)
        with hooks_on(prep.net) as hooks:
            for m in attns:
                hooks.forward(m.attn_drop, watch)
            r = lrp(model, _x(1), target=3, rule=LrpRule.EPSILON, first=FirstRule.ZB, epsilon=1e-9)
    finally:
        for m in attns:
            m.fused_attn = True
    assert len(losses) == len(attns)
    (s,), (logit,) = r.metrics["relevance_sum"], r.metrics["logit"]
    lost = float(sum(losses))
    assert abs(lost) > 0.05 * abs(logit)  # the softmax's loss is not small: the check can fail
    assert s == pytest.approx(logit - lost, rel=1e-3, abs=1e-5)


def test_cp_on_a_cnn_and_an_unchecked_transformer_family_are_refused(convnext_atto):
    with pytest.raises(NotApplicable, match="no attention"):
        lrp(convnext_atto, _x(1), rule="cp")
    v2 = wrap(timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=64, window_size=4,
                                embed_dim=16, depths=(1, 1), num_heads=(1, 2), num_classes=5), input_size=64)
    with pytest.raises(NotApplicable, match="SwinTransformerV2"):
        lrp(v2, _x(1))


def test_lrp_on_a_transformer_leaves_the_shared_model_and_its_fused_attention_alone(families):
    model = families["eva02"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = [m.fused_attn for _n, m in attention_modules(model.net)]
    lrp(model, _x(1))
    lrp(model, _x(1), rule="cp")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(v, after[k]) for k, v in before.items())
    assert [m.fused_attn for _n, m in attention_modules(model.net)] == fused
    assert all(getattr(m, "q_bias", None) is not None for _n, m in attention_modules(model.net))  # moved on the copy only


# ------------------------------------------------------------------------------------- ConvNeXt V2's GRN

def _convnextv2():
    """convnextv2_atto with live blocks (layer scale 1.0) and a live GRN (timm initialises gamma = beta = 0, the
    identity): gamma random; beta and every other bias at zero, as timm starts them."""
    torch.manual_seed(0)
    net = timm.create_model("convnextv2_atto", pretrained=False, num_classes=10, ls_init_value=1.0).eval()
    with torch.no_grad():
        for m in net.modules():
            if type(m).__name__ == "GlobalResponseNorm":
                m.weight.normal_(0, 0.5)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    return wrap(net, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), input_size=64)


def test_grn_rule_conserves_on_convnext_v2_without_biases():
    """GRN with its normaliser held constant is a per-channel scaling: with every bias (beta included) at zero,
    LRP-0 conserves exactly, as on ConvNeXt. (z+ is left out: it drops the relevance of an output with no positive
    contribution, which on a 2x2 last stage under a 7x7 depthwise convolution is a few percent on ConvNeXt V1 too.)"""
    r = lrp(_convnextv2(), _x(1), target=1, rule=LrpRule.EPSILON, epsilon=1e-9)
    (s,), (logit,) = r.metrics["relevance_sum"], r.metrics["logit"]
    assert abs(s - logit) <= 1e-3 * abs(logit) + 1e-6


def test_grn_rule_is_the_scaling_by_one_plus_gamma_n():
    """The rule's gradient at a GRN input is the output gradient times 1 + gamma N(x), N from the input."""
    from timm.layers.grn import GlobalResponseNorm

    from core.attribution.lrp import _grn_grad

    torch.manual_seed(0)
    grn = GlobalResponseNorm(6, channels_last=False)
    with torch.no_grad():
        grn.weight.normal_()
    a, grad = torch.randn(2, 6, 5, 5), torch.randn(2, 6, 5, 5)
    norms = a.pow(2).sum((2, 3), keepdim=True).sqrt()
    n = norms / (norms.mean(1, keepdim=True) + grn.eps)
    expected = grad * (1 + grn.weight.view(1, -1, 1, 1) * n)
    torch.testing.assert_close(_grn_grad(grn)(grad, a), expected)
    out = grn(a)  # and the value: x (1 + gamma N) + beta, so relevance (x c) sums to (y - beta) c
    torch.testing.assert_close(out, a * (1 + grn.weight.view(1, -1, 1, 1) * n) + grn.bias.view(1, -1, 1, 1))


def test_convnext_v2_random_weights_within_five_percent_under_zplus():
    """The default rule on the same live ConvNeXt V2: within 5 % (z+ drops what an output with no positive
    contribution carries; see the test above)."""
    r = lrp(_convnextv2(), _x(2), rule=LrpRule.ZPLUS, epsilon=1e-9)
    for s, logit in zip(r.metrics["relevance_sum"], r.metrics["logit"]):
        assert abs(s - logit) <= 0.05 * abs(logit), (s, logit)
