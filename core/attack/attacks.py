"""Adversarial perturbations: FGSM and PGD under an L∞ or L2 budget, untargeted or targeted (the smallest budget
that changes the model's mind is searched in :mod:`core.attack.search`).

Everything happens in pixel space: ``x`` is RGB float (N, 3, H, W) in [0, 1] and the model normalises inside its
wrapper, so ε means the same thing for every model. Every iterate is replaced by the nearest point of the
intersection of the ε-ball around the clean image and the [0, 1] box (exact for both norms: for L∞ the two boxes
intersect coordinate by coordinate; for L2 see :func:`_project`). Here ε and step sizes are fractions of the pixel range; the CLI and the page show L∞ values in
1/255 units (:data:`PIXEL`). Loss: cross-entropy on the logits, ascended away from the source class (untargeted)
or descended toward the target class (targeted). L∞ steps follow the gradient's sign, L2 steps the unit-norm
gradient (each norm's steepest-ascent direction; captum's PGD takes sign steps under both norms).
"""
from __future__ import annotations

import dataclasses
import enum
import math
import time
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F

from ..inputs import check_input, class_indices, num_classes_of
from ..model.device import model_device
from ..model.wrapper import LensModel
from ..progress import Progress, report
from ..render import unit_uint8

PIXEL = 1.0 / 255.0
DEFAULT_EPS_255 = 4.0           # L∞ budget in 1/255 (one 8-bit grey level)
DEFAULT_STEP_255 = 1.0
DEFAULT_EPS = DEFAULT_EPS_255 * PIXEL
DEFAULT_STEP = DEFAULT_STEP_255 * PIXEL
DEFAULT_STEPS = 10
DEFAULT_L2_EPS = 0.5
DEFAULT_L2_STEP = 0.125
# Projections use a radius this much (relatively) smaller than ε, so float32 rounding of ε and of x + δ never
# reports a ‖δ‖ above the ε the user asked for (4/255 in float32 is already 1e-9 above 4/255).
_SAFETY = 1.0 - 1e-5
_BISECTIONS = 30  # the L2 projection's scale to 2^-30, below float32 resolution


class AttackMethod(str, enum.Enum):
    """FGSM (one step of size ε) or PGD (projected gradient steps)."""

    FGSM = "fgsm"
    PGD = "pgd"


class Norm(str, enum.Enum):
    LINF = "linf"
    L2 = "l2"


@dataclass(frozen=True)
class Trajectory:
    """What happened at each step; every field is float32 (N, T + 1).

    Column 0 is the starting point (the clean image, or the random start), column t the iterate after t steps.
    Columns after an image stopped early are NaN.
    """

    loss: torch.Tensor         # cross-entropy w.r.t. the source class (untargeted) or the target class (targeted)
    source_prob: torch.Tensor  # probability of the class the attack moves away from
    goal_prob: torch.Tensor    # probability of the target (targeted) or of the most probable other class
    linf: torch.Tensor         # ‖δ‖∞ of the iterate, in [0, 1] pixel units
    l2: torch.Tensor           # ‖δ‖₂ of the iterate


@dataclass(frozen=True)
class AttackResult:
    """One attack on a batch of N images.

    ``clean``/``adversarial`` are float32 (N, 3, H, W) in [0, 1]; ``clean_probs``/``adv_probs`` are (N, C)
    softmax probabilities; ``source`` (N,) is the class moved away from (the clean prediction unless given),
    ``target`` (N,) the class moved toward (None when untargeted); ``eps`` and ``step`` are (N,) in pixel units.
    """

    method: AttackMethod
    norm: Norm
    eps: torch.Tensor
    step: torch.Tensor
    steps: int
    random_start: bool
    clean: torch.Tensor
    adversarial: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor | None
    clean_probs: torch.Tensor
    adv_probs: torch.Tensor
    trajectory: Trajectory
    steps_taken: torch.Tensor  # (N,) int64, steps applied before the goal was met or the budget ran out
    success: torch.Tensor      # (N,) bool: prediction changed (untargeted) or equals the target (targeted)
    seconds: float
    # The adversarial image rounded to 8 bits per channel, as a PNG stores it: its (N, C) probabilities and
    # whether the goal still holds (rounding can undo an attack that only just succeeded).
    adv8_probs: torch.Tensor | None = None
    success_8bit: torch.Tensor | None = None

    @property
    def targeted(self) -> bool:
        return self.target is not None

    @property
    def perturbation(self) -> torch.Tensor:
        """δ = adversarial − clean, (N, 3, H, W), each value in [−ε, ε]."""
        return self.adversarial - self.clean

    @property
    def clean_index(self) -> torch.Tensor:
        return self.clean_probs.argmax(-1)

    @property
    def adv_index(self) -> torch.Tensor:
        return self.adv_probs.argmax(-1)

    @property
    def linf(self) -> torch.Tensor:
        """(N,) ‖δ‖∞ in [0, 1] pixel units."""
        return self.perturbation.flatten(1).abs().amax(1)

    @property
    def l2(self) -> torch.Tensor:
        """(N,) ‖δ‖₂ in [0, 1] pixel units."""
        return self.perturbation.flatten(1).norm(dim=1)


def attack(model: LensModel, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None, *,
           method: AttackMethod | str = AttackMethod.PGD, norm: Norm | str = Norm.LINF,
           eps: float | torch.Tensor = DEFAULT_EPS, step: float | torch.Tensor = DEFAULT_STEP,
           steps: int = DEFAULT_STEPS, random_start: bool = False, early_stop: bool = True,
           source: int | Sequence[int] | torch.Tensor | None = None, seed: int = 0,
           progress: Progress | None = None) -> AttackResult:
    """FGSM or PGD on ``x``.

    Args:
        x: float (N, 3, H, W) in [0, 1]; never modified.
        target: class index (or one per image) to move toward; None for an untargeted attack.
        method: FGSM takes one step of size ε (``step``/``steps`` are ignored); PGD takes ``steps`` steps.
        norm: L∞ (sign steps, per-pixel bound) or L2 (unit-gradient steps, whole-image bound).
        eps: budget, in [0, 1] pixel units (4/255 = :data:`PIXEL` * 4), a float or (N,) tensor.
        step: PGD step size in the same units.
        random_start: begin at a uniform random point of the ε-ball (seeded by ``seed``).
        early_stop: stop an image at the first iterate that meets the goal.
        source: the class to move away from when untargeted (default: the clean prediction).
        progress: called with (fraction done, message).

    Returns:
        :class:`AttackResult`.
    """
    method, norm = AttackMethod(method), Norm(norm)
    device = model_device(model)  # the attack runs where the model lives; the result comes back to the CPU
    x = check_input(x, pixels_for="attacks").to(device)
    n = x.shape[0]
    eps_t = _per_image(eps, n, "eps")
    step_t = eps_t.clone() if method is AttackMethod.FGSM else _per_image(step, n, "step")
    if method is AttackMethod.FGSM:
        steps = 1
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if norm is Norm.LINF and bool((eps_t > 1).any()):
        raise ValueError("an L∞ eps above 1 (255/255) is no bound at all")
    eps_t, step_t = eps_t.to(device), step_t.to(device)
    say = partial(report, progress)
    started = time.perf_counter()
    # No lock: another session's temporary hooks never fire in our passes (core.hooks).
    with torch.inference_mode(False), torch.enable_grad():
        clean = x.detach().clone()
        targeted = target is not None
        adv = clean.clone()
        clean_logits = None
        if random_start:
            adv = _start(clean, eps_t * _SAFETY, norm, seed)
            clean_logits = _logits(model, clean)
        num_classes = num_classes_of(model)
        goal = (class_indices(target, n, num_classes, name="target").to(device) if targeted else None)
        src = class_indices(source, n, num_classes, name="source").to(device) if source is not None else None

        t_cols = steps + 1
        traj = {k: torch.full((n, t_cols), math.nan, device=device)
                for k in ("loss", "source_prob", "goal_prob", "linf", "l2")}
        final_logits = torch.empty(n, num_classes, device=device)
        steps_taken = torch.zeros(n, dtype=torch.long, device=device)
        met = torch.zeros(n, dtype=torch.bool, device=device)
        # ``rows`` selects the images still being attacked: a slice (views, no copies) until one stops early.
        rows: slice | torch.Tensor = slice(None)
        eps_col, step_col = eps_t.view(-1, 1, 1, 1) * _SAFETY, step_t.view(-1, 1, 1, 1)
        for t in range(t_cols):
            xa = adv[rows].detach().requires_grad_(t < steps)
            logits = model(xa)
            detached = logits.detach().float()
            if t == 0:
                if clean_logits is None:
                    clean_logits = detached
                if src is None:
                    src = clean_logits.argmax(-1)
            aim = goal[rows] if targeted else src[rows]
            loss = F.cross_entropy(logits.float(), aim, reduction="none")
            probs = detached.softmax(-1)
            pred = probs.argmax(-1)
            now_met = pred == aim if targeted else pred != aim
            delta = xa.detach() - clean[rows]
            flat = delta.flatten(1)
            traj["loss"][rows, t] = loss.detach()
            traj["source_prob"][rows, t] = probs.gather(1, src[rows][:, None])[:, 0]
            traj["goal_prob"][rows, t] = (probs.gather(1, aim[:, None])[:, 0] if targeted
                                          else probs.scatter(1, aim[:, None], -1.0).amax(1))
            traj["linf"][rows, t] = torch.linalg.vector_norm(flat, math.inf, dim=1)
            traj["l2"][rows, t] = torch.linalg.vector_norm(flat, 2, dim=1)
            final_logits[rows] = detached
            steps_taken[rows] = t
            met[rows] = now_met
            say(min(1.0, (t + 1) / t_cols), f"step {t}/{steps}" if t else "start")
            keep = ~now_met if early_stop else torch.ones_like(now_met)
            if t == steps or not bool(keep.any()):
                break
            # Summed per-image losses: each image's gradient is independent of the batch it is in.
            grad, = torch.autograd.grad(loss.sum(), xa)
            if not bool(keep.all()):
                rows = torch.arange(n, device=device)[rows][keep]
                grad, delta = grad[keep], delta[keep]
            direction = _direction(grad, norm)
            delta.addcmul_(step_col[rows], direction, value=-1.0 if targeted else 1.0)
            adv[rows] = _project(delta, clean[rows], eps_col[rows], norm)
        with torch.no_grad():
            adv8_probs = model(quantize_8bit(adv)).float().softmax(-1)
    pred8 = adv8_probs.argmax(-1)
    return _to_cpu(AttackResult(
        method=method, norm=norm, eps=eps_t, step=step_t, steps=steps, random_start=random_start,
        clean=clean, adversarial=adv.detach(), source=src, target=goal, clean_probs=clean_logits.softmax(-1),
        adv_probs=final_logits.softmax(-1), trajectory=Trajectory(**traj), steps_taken=steps_taken, success=met,
        seconds=time.perf_counter() - started, adv8_probs=adv8_probs,
        success_8bit=pred8 == goal if targeted else pred8 != src))


def _to_cpu(r: AttackResult) -> AttackResult:
    """The result with its tensors on the CPU, for display (the attack ran on the model's device)."""
    cpu = torch.device("cpu")
    moved, path = {}, {}
    for f in dataclasses.fields(r.trajectory):  # loops, not comprehensions: the device test names this function
        path[f.name] = getattr(r.trajectory, f.name).to(cpu)
    for f in dataclasses.fields(r):
        value = getattr(r, f.name)
        if isinstance(value, torch.Tensor):
            moved[f.name] = value.to(cpu)
    return dataclasses.replace(r, **moved, trajectory=dataclasses.replace(r.trajectory, **path))


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """``x`` in [0, 1] rounded to 8-bit levels exactly as the page's PNG stores it (:func:`core.render.unit_uint8`),
    back in [0, 1], same shape and dtype."""
    levels = torch.from_numpy(unit_uint8(x.detach().cpu().double().numpy()))  # float64 as image_uint8
    return levels.to(device=x.device, dtype=x.dtype) / 255.0


# ------------------------------------------------------------------------------------------------ helpers

def _per_image(value: float | torch.Tensor, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} needs one value or one per image ({n})")
    if bool((t < 0).any()) or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be a finite non-negative number")
    return t.clone()


def _logits(model: LensModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).float()


def _direction(g: torch.Tensor, norm: Norm) -> torch.Tensor:
    if norm is Norm.LINF:
        return g.sign_()
    size = torch.linalg.vector_norm(g.flatten(1), 2, dim=1).clamp_min(1e-12)
    return g.div_(size.view(-1, 1, 1, 1))


def _project(delta: torch.Tensor, clean: torch.Tensor, eps: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The nearest point to ``clean + delta`` with ‖z − clean‖ ≤ ε and z in [0, 1] (all (N, 3, H, W); eps (N, 1, 1, 1)).

    L2: the optimality conditions give z = clip(clean + t·δ, 0, 1) for one t in (0, 1] per image
    (t = 1 / (1 + λ), λ the ball's multiplier); ‖z − clean‖ grows with t, so t is found by bisection, keeping the
    feasible end. Scaling δ onto the ball and then clamping (the usual shortcut) is feasible but stops short.
    ``delta`` is not modified.
    """
    if norm is Norm.LINF:
        return (clean + delta.clamp(-eps, eps)).clamp_(0.0, 1.0)

    # Along δ each coordinate can move |δ_i|·t until it meets its side of the box, room_i away: per image
    # ‖z − clean‖(t) = ‖min(t·|δ|, room)‖, a cheap function of t alone.
    step = delta.flatten(1).abs()
    room = torch.where(delta > 0, 1.0 - clean, clean).flatten(1).clamp_min_(0.0)
    radius = eps.flatten()
    t_ok = torch.ones_like(radius)
    over = torch.linalg.vector_norm(torch.minimum(step, room), 2, dim=1) > radius
    if bool(over.any()):
        rows = over.nonzero().flatten()
        step, room, r = step[rows], room[rows], radius[rows]
        lo, hi = torch.zeros_like(r), torch.ones_like(r)
        buf = torch.empty_like(step)
        for _ in range(_BISECTIONS):
            mid = (lo + hi) / 2
            fits = torch.linalg.vector_norm(torch.minimum(torch.mul(step, mid[:, None], out=buf), room, out=buf),
                                            2, dim=1) <= r
            lo, hi = torch.where(fits, mid, lo), torch.where(fits, hi, mid)
        t_ok[rows] = lo
    return (clean + delta * t_ok.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _start(clean: torch.Tensor, eps: torch.Tensor, norm: Norm, seed: int) -> torch.Tensor:
    """A uniform random point of each ε-ball, clamped to [0, 1]."""
    # drawn on the CPU from a seeded generator, so a seed gives the same start on every device
    gen = torch.Generator().manual_seed(seed)
    shape, device = clean.shape, clean.device
    if norm is Norm.LINF:
        delta = (torch.rand(shape, generator=gen) * 2 - 1).to(device) * eps.view(-1, 1, 1, 1)
    else:
        u = torch.randn(shape, generator=gen)
        u = (u / u.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)).to(device)
        radius = eps * (torch.rand(shape[0], generator=gen) ** (1.0 / clean[0].numel())).to(device)
        delta = u * radius.view(-1, 1, 1, 1)
    return (clean + delta).clamp(0.0, 1.0)
