"""The smallest budget that changes the model's mind: bisection over ε with :func:`core.attack.attacks.attack`."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch

from ..inputs import check_input, class_indices, num_classes_of
from ..model.wrapper import LensModel
from ..progress import Progress, report
from .attacks import (DEFAULT_EPS, DEFAULT_STEP, DEFAULT_STEPS, PIXEL, AttackMethod, AttackResult, Norm, Trajectory,
                      attack)

MAX_MIN_EPS_ATTACKS = 8


@dataclass(frozen=True)
class MinEpsResult:
    """Smallest budget found by bisection, per image (all fields (N,) except ``result``).

    ``eps`` reached the goal and ``below`` did not (0 when no smaller ε was tried, since ε = 0 is the clean
    image); ``eps`` is NaN when even ``eps_max`` failed. ``result`` is the attack at ``eps`` (or at the largest ε
    tried when none succeeded). ``seconds``: the whole search's compute time.
    """

    eps: torch.Tensor
    below: torch.Tensor
    found: torch.Tensor
    attacks: torch.Tensor
    result: AttackResult
    seconds: float


def minimal_eps(model: LensModel, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None, *,
                method: AttackMethod | str = AttackMethod.PGD, norm: Norm | str = Norm.LINF,
                eps: float = DEFAULT_EPS, step: float = DEFAULT_STEP, steps: int = DEFAULT_STEPS,
                eps_max: float | None = None, tol: float | None = None,
                max_attacks: int = MAX_MIN_EPS_ATTACKS, random_start: bool = False, seed: int = 0,
                progress: Progress | None = None) -> MinEpsResult:
    """The smallest ε that reaches the goal, by bisection (at most ``max_attacks`` attacks per image).

    Starts at ``eps``; while that fails, doubles it up to ``eps_max`` (default 16 × ``eps``); once an ε succeeds,
    halves the bracket [largest failure, smallest success] until it is narrower than ``tol`` (default ε/64)
    or the attacks run out. The PGD step scales with ε (``step / eps`` of the given settings). Bisection assumes
    success is monotone in ε, which holds for most images but is not guaranteed.

    Args:
        x: float (N, 3, H, W) in [0, 1]; images are searched one at a time.
        target, method, norm, steps, random_start, seed: as for :func:`attack` (early stop is on).
        eps, step, eps_max, tol: in [0, 1] pixel units.

    Returns:
        :class:`MinEpsResult`.
    """
    started = time.perf_counter()
    x = check_input(x, pixels_for="attacks")
    if eps <= 0:
        raise ValueError("eps must be positive")
    if max_attacks < 1:
        raise ValueError("max_attacks must be at least 1")
    eps_max = eps * 16 if eps_max is None else max(eps_max, eps)
    if Norm(norm) is Norm.LINF:
        eps_max = min(eps_max, 1.0)
    tol = eps / 64 if tol is None else tol
    ratio = step / eps
    n = x.shape[0]
    goals = None if target is None else class_indices(target, n, num_classes_of(model), name="target")
    say = partial(report, progress)
    found, lows, highs, counts, results = [], [], [], [], []
    for i in range(n):
        lo, hi, e, best, last, count = 0.0, math.nan, eps, None, None, 0
        while count < max_attacks:
            def sub(f, m, i=i, count=count):
                say((i + (count + f) / max_attacks) / n, f"ε = {e / PIXEL:.2f}/255, attack {count + 1}: {m}")
            r = attack(model, x[i:i + 1], None if goals is None else goals[i:i + 1], method=method, norm=norm,
                       eps=e, step=e * ratio, steps=steps, random_start=random_start, seed=seed, progress=sub)
            count += 1
            if bool(r.success[0]):
                hi, best = e, r
                if r.steps_taken[0] == 0:  # the clean image already meets the goal (targeted at its own class)
                    hi, lo = 0.0, 0.0
                    break
            else:
                lo, last = e, r
            if math.isnan(hi):
                if e >= eps_max:
                    break
                e = min(2 * e, eps_max)
            else:
                if hi - lo <= tol:
                    break
                e = (lo + hi) / 2
        found.append(not math.isnan(hi))
        lows.append(lo)
        highs.append(hi)
        counts.append(count)
        results.append(best if best is not None else last)
    say(1.0, "done")
    return MinEpsResult(eps=torch.tensor(highs, dtype=torch.float64), below=torch.tensor(lows, dtype=torch.float64),
                        found=torch.tensor(found),
                        attacks=torch.tensor(counts), result=_cat(results), seconds=time.perf_counter() - started)


def _cat(results: Sequence[AttackResult]) -> AttackResult:
    """Results of attacks on single images joined into one batch result (the search's per-image winners)."""
    first = results[0]
    if len(results) == 1:
        return first

    def join(values):
        v0 = values[0]
        if isinstance(v0, torch.Tensor):
            return torch.cat(values)
        if isinstance(v0, Trajectory):
            return Trajectory(**{f.name: join([getattr(v, f.name) for v in values])
                                 for f in dataclasses.fields(Trajectory)})
        return v0

    fields = {f.name: join([getattr(r, f.name) for r in results]) for f in dataclasses.fields(AttackResult)
              if f.name != "seconds"}
    return AttackResult(**fields, seconds=sum(r.seconds for r in results))
