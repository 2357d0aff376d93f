"""Model-parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency maps"), cascading.

The network is cut into groups from the head down: the classifier head, then each stage (or block container)
of the backbone from the last to the first, then the stem. Step i recomputes the map on a copy of the model
whose groups 0..i have fresh weights, and reports Spearman's rank correlation of |map| with the original |map|.
A method that explains the model must lose that correlation: the test passes when it is below 0.5 once the top
half of the groups (ceil(G/2) steps) is randomised.

Fresh weights: every parameter tensor of a randomised group is redrawn from a normal distribution with the
**same per-tensor mean and standard deviation** as the trained tensor (seeded). Keeping the mean matters for
scales: LayerNorm/BatchNorm weights stay near their trained level, and ConvNeXt's layer scale γ keeps its
trained magnitude. Re-running timm's initialiser instead would set γ to 1e-6, switching every residual block
off, so the randomised network would be nearly the identity and every method would "pass" for the wrong reason.
Buffers (BatchNorm running statistics) are kept. Copies share every tensor they do not randomise with the
original model (no extra memory for those), and a group's fresh tensors are drawn once and reused by the later
steps of the cascade.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..model.device import model_device
from ..progress import Cancel, Cancelled, Progress, is_cancelled, report
from ..stats import spearman

PASS_BELOW = 0.5
Explain = Callable[[nn.Module, torch.Tensor, int], torch.Tensor]  # (model, x (1,3,H,W), target) -> (H, W) map


@dataclass(frozen=True)
class Randomisation:
    """Cascading randomisation of one map.

    Attributes:
        groups: names of the randomised groups, one per step, head first (e.g. "head", "stages.3", ...).
        spearman: rank correlation of |map| with the original after each step (0 when a map is constant).
        maps: float32 (G, H, W) map after each step (thumbnails).
        half: the step (0-based) after which the top half is randomised.
        passed: spearman[half] < 0.5.
        seconds: compute time.
    """

    groups: tuple[str, ...]
    spearman: tuple[float, ...]
    maps: torch.Tensor
    half: int
    passed: bool
    seconds: float

    @property
    def at_half(self) -> float:
        return self.spearman[self.half]


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def cascade_groups(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted name under ``model.net``, module) groups, head first, for the cascade.

    The top-level children of the network are taken in reverse order of definition; a container
    (Sequential/ModuleList) holding several parameterised children (ConvNeXt ``stages``, ResNet ``layerN`` are
    already single children; EfficientNet ``blocks``) is split into them.
    """
    net = getattr(model, "net", model)
    groups: list[tuple[str, nn.Module]] = []
    for name, child in net.named_children():
        if not _has_params(child):
            continue
        parts = [(f"{name}.{n}", c) for n, c in child.named_children() if _has_params(c)]
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(parts) >= 2:
            groups.extend(parts)
        else:
            groups.append((name, child))
    groups.reverse()
    if len(groups) < 2:
        raise ValueError("the model has fewer than two parameterised parts, so a cascade does not apply")
    return groups


def _fresh(t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A tensor like ``t`` drawn from N(mean(t), std(t)²) on ``t``'s device (a constant tensor stays constant);
    ``gen`` is a generator on that device."""
    mean = t.float().mean()
    std = t.float().std() if t.numel() > 1 else torch.zeros((), device=t.device)
    return (torch.randn(t.shape, generator=gen, device=t.device) * std + mean).to(t.dtype)


def randomised_copy(model: nn.Module, fresh: dict[int, torch.Tensor], modules: list[nn.Module]) -> nn.Module:
    """A copy of ``model`` whose parameters in ``modules`` are replaced by ``fresh[id(param)]``; it shares every
    other parameter and buffer with ``model``."""
    twin = model.replica() if hasattr(model, "replica") else _share_copy(model)
    names = {id(p): n for n, p in model.named_parameters()}
    targets = {names[id(p)] for m in modules for p in m.parameters()}
    by_name = {n: p for n, p in model.named_parameters()}
    for name in targets:
        owner, _, leaf = name.rpartition(".")
        mod = twin.get_submodule(owner) if owner else twin
        setattr(mod, leaf, nn.Parameter(fresh[id(by_name[name])], requires_grad=False))
    return twin


def _share_copy(model: nn.Module) -> nn.Module:
    import copy
    import itertools

    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def randomisation(model: nn.Module, x: torch.Tensor, target: int, explain: Explain, *,
                  original: torch.Tensor | None = None, seed: int = 0, progress: Progress | None = None,
                  cancel: Cancel | None = None) -> Randomisation:
    """The cascading randomisation test of ``explain`` on one image.

    Args:
        x: the model input (1, 3, H, W) in [0, 1].
        explain: ``explain(model, x, target) -> (H, W)`` map; it is called on each randomised copy.
        original: the map on the trained model (computed when None).
        seed: seed of the fresh weights.
    """
    start = time.perf_counter()
    groups = cascade_groups(model)
    if original is None:
        original = explain(model, x, target)
    base = original.detach().abs().float()
    gen = torch.Generator(device=model_device(model)).manual_seed(int(seed))  # fresh weights drawn where they live
    fresh: dict[int, torch.Tensor] = {}
    rhos, maps = [], []
    for i, (name, module) in enumerate(groups):
        if is_cancelled(cancel):
            raise Cancelled("randomisation cancelled")
        for p in module.parameters():
            fresh[id(p)] = _fresh(p.detach(), gen)
        twin = randomised_copy(model, fresh, [m for _, m in groups[:i + 1]])
        m = explain(twin, x, target).detach().float()
        del twin
        maps.append(m)
        rhos.append(spearman(base, m.abs()))
        report(progress, (i + 1) / len(groups), f"randomisation: {name} ({i + 1}/{len(groups)})")
    half = math.ceil(len(groups) / 2) - 1
    return Randomisation(groups=tuple(n for n, _ in groups), spearman=tuple(rhos), maps=torch.stack(maps),
                         half=half, passed=rhos[half] < PASS_BELOW, seconds=time.perf_counter() - start)
