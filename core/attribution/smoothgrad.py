"""SmoothGrad (Smilkov et al. 2017): average a gradient attribution over noisy copies of the image.

Two engines compute the same quantity as Captum's ``NoiseTunnel`` (noise N(0, σ²) added to every pixel, σ a
fraction of the [0, 1] pixel range, noisy images not clipped; ``smoothgrad`` = mean, ``smoothgrad_sq`` = mean
of squares, ``vargrad`` = their variance):

* ``fast`` (saliency, input × gradient, guided-backprop bases): our loop. Noise comes from a private
  ``torch.Generator`` seeded per image, so results do not depend on the global RNG, on other threads or on
  the other images in the batch; samples go through ``batch_size`` at a time, sums are kept in place, a
  ``preview`` callback sees the map refine after each batch, and the passes run under the autocast precision
  measured fastest for the model on its device (``precision="auto"``: bf16 on CPUs with native bf16, fp16 or
  bf16 on a GPU, fp32 when nothing is faster; fp16's backward is scaled).
* ``captum``: ``captum.attr.NoiseTunnel`` around Captum's ``Saliency`` / ``InputXGradient`` /
  ``IntegratedGradients``, with ``nt_samples_batch_size=batch_size``. It is the reference in the tests and
  the engine for the integrated-gradients base. Its noise comes from the global RNG (seeded, then restored).
"""
from __future__ import annotations

import enum
import time
from dataclasses import replace
from typing import Callable, Sequence

import torch
from torch import nn

from ..memo import PerModel
from ..profile import architecture, remembered
from ..progress import Progress, report
from ..stats import spearman
from .spec import MethodSpec, Option
from .base import PREVIEW_BATCH, Attribution, NotApplicable, check_input, input_gradient, resolve_target
from .gradients import BASELINE, STEPS, Baseline, make_baseline
from .guided import GuidedRule, gradient_with_rule, rule_notes


class NoiseType(str, enum.Enum):
    SMOOTHGRAD = "smoothgrad"
    SMOOTHGRAD_SQ = "smoothgrad_sq"
    VARGRAD = "vargrad"


class Base(str, enum.Enum):
    SALIENCY = "saliency"
    INPUT_X_GRADIENT = "input-x-gradient"
    INTEGRATED_GRADIENTS = "integrated-gradients"
    GUIDED_BACKPROP = "guided-backprop"


class Precision(str, enum.Enum):
    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


FP16_SCALE = 1024.0  # fp16 backward runs on 1024 x the logit (see input_gradient's ``scale``)


class Engine(str, enum.Enum):
    AUTO = "auto"
    FAST = "fast"
    CAPTUM = "captum"


FAST_BASES = (Base.SALIENCY, Base.INPUT_X_GRADIENT, Base.GUIDED_BACKPROP)
CAPTUM_BASES = (Base.SALIENCY, Base.INPUT_X_GRADIENT, Base.INTEGRATED_GRADIENTS)


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so autocast is a speed-up."""
    # mkldnn's own "bf16 supported" also answers yes where bf16 is only emulated, which is no speed-up
    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return bool(torch.backends.mkldnn.is_available() and native)
    except (AttributeError, RuntimeError):
        return False


_measured: "PerModel[dict[tuple, Precision]]" = PerModel()  # (device, input shape) -> precision, per model


def reduced_precisions(device: torch.device) -> tuple[Precision, ...]:
    """The autocast precisions ``auto`` times against fp32 on ``device``: bf16 on a CPU with native bf16 (none on
    a CPU that only emulates it), fp16 and (where supported) bf16 on CUDA, fp16 on MPS."""
    if device.type == "cpu":
        return (Precision.BF16,) if native_bf16() else ()
    if device.type == "cuda":
        return (Precision.FP16, Precision.BF16) if torch.cuda.is_bf16_supported() else (Precision.FP16,)
    if device.type == "mps":
        return (Precision.FP16,)
    return ()


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (GPU timings are asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


REDUCED_MARGIN = 1.25  # a reduced precision is chosen only when at least this much faster than fp32


def fastest_precision(model: nn.Module, x: torch.Tensor, candidates: Sequence[Precision],
                      repeats: int = 3) -> Precision:
    """The fastest of fp32 and ``candidates`` for a forward + input-gradient backward of ``model`` on inputs shaped
    like ``x`` (N, 3, H, W), on ``x``'s device, timed here at batch 2: after a warm-up round, ``repeats`` rounds
    each timing fp32 and then every candidate; a reduced precision is chosen only when it beat fp32 by
    :data:`REDUCED_MARGIN` in every round (the fastest such, by its best time).

    Native support does not make every network's kernels faster in a reduced precision, so ``auto`` times the
    candidates on the model itself rather than trusting the instruction set. A reduced precision changes the map:
    where the two are close, timings on a busy machine would pick either, and two processes (a server restarted,
    a warm-up run) would then store different maps for one setting; hence the margin in every round, side by
    side, rather than one best time against another.
    """
    probe = x[:1].detach().expand(2, *x.shape[1:]).clone()
    target = torch.zeros(2, dtype=torch.long, device=x.device)

    def seconds(prec: Precision) -> float:
        _synchronize(probe.device)
        start = time.perf_counter()
        with _autocast(prec, probe.device):
            input_gradient(model, probe, target, scale=FP16_SCALE if prec is Precision.FP16 else 1.0)
        _synchronize(probe.device)
        return time.perf_counter() - start

    order = (Precision.FP32, *candidates)
    rounds = [{prec: seconds(prec) for prec in order} for _ in range(repeats + 1)][1:]  # round 0 warms up
    winners = [prec for prec in candidates
               if all(r[prec] * REDUCED_MARGIN < r[Precision.FP32] for r in rounds)]
    return min(winners, key=lambda prec: min(r[prec] for r in rounds)) if winners else Precision.FP32


def resolve_precision(precision: Precision | str, device: torch.device, model: nn.Module | None = None,
                      x: torch.Tensor | None = None) -> Precision:
    """``auto`` -> the fastest of fp32 and the device's reduced precisions (:func:`reduced_precisions`) measured for
    ``model`` at ``x``'s size, timed once per architecture, device, input size and thread count on this machine and
    remembered across processes (:mod:`core.profile`: a server restarted under load draws the maps it drew before);
    fp32 where the device has none. fp16 is refused on the CPU (it is a GPU precision there: use bf16 or fp32)."""
    precision = Precision(precision)
    if precision is Precision.FP16 and device.type == "cpu":
        raise ValueError("fp16 autocast is for a GPU; on the CPU use bf16 or fp32")
    if precision is not Precision.AUTO:
        return precision
    candidates = reduced_precisions(device)
    if not candidates:
        return Precision.FP32
    if model is None or x is None:
        return candidates[0]
    key = (str(device), tuple(x.shape[1:]))
    known = (_measured.get(model) or {}).get(key)
    if known is None:
        choice = {"architecture": architecture(model), "device": str(device), "shape": list(x.shape[1:]),
                  "threads": torch.get_num_threads(), "candidates": [c.value for c in candidates]}
        known = Precision(remembered("precision", choice,
                                    lambda: fastest_precision(model, x, candidates).value))
        _measured.update(model, lambda old: {**(old or {}), key: known})
    return known


def _autocast(precision: Precision, device: torch.device):
    dtype = torch.float16 if precision is Precision.FP16 else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=precision in (Precision.BF16, Precision.FP16))


def combine(total: torch.Tensor, total_sq: torch.Tensor, n: int, nt_type: NoiseType) -> torch.Tensor:
    """NoiseTunnel's reduction from the sum and sum of squares of ``n`` sample attributions."""
    mean = total / n
    if nt_type is NoiseType.SMOOTHGRAD:
        return mean
    if nt_type is NoiseType.SMOOTHGRAD_SQ:
        return total_sq / n
    return total_sq / n - mean * mean


def smoothgrad(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None, *,
               samples: int = 50, noise: float = 0.15, nt_type: NoiseType | str = "smoothgrad",
               base: Base | str = "saliency", seed: int = 0, batch_size: int = 8,
               precision: Precision | str = "auto", engine: Engine | str = "auto", steps: int = 16,
               baseline: Baseline | str = "black", converge: float = 0.0, converge_grid: int = 14,
               progress: Progress | None = None,
               preview: Callable[[torch.Tensor, float], None] | None = None) -> Attribution:
    """SmoothGrad over a gradient base.

    Args:
        x: (N, 3, H, W) in [0, 1].
        samples: noisy copies per image. noise: σ as a fraction of the pixel range (0 gives the base method).
        nt_type: smoothgrad (signed mean), smoothgrad_sq or vargrad (both ≥ 0).
        base: saliency, input-x-gradient, integrated-gradients (``steps`` points from ``baseline``) or
            guided-backprop (GELU-correct rule, fast engine only).
        precision: auto (the fastest of fp32 and the device's autocast precisions, measured once for this model,
            device and input size: bf16 on CPUs with native bf16, fp16/bf16 on CUDA, fp16 on MPS), fp32, bf16 or
            fp16 (a GPU precision: refused on the CPU; the fast engine only, with a scaled backward).
        engine: auto (fast where it applies, Captum's NoiseTunnel for integrated gradients), fast or captum.
        converge: 0 (off: exactly ``samples`` per image) or a rank correlation such as 0.98: the samples of each
            image are split into two independent halves (alternate batches) and sampling stops as soon as the
            two halves' maps agree to this Spearman correlation; ``samples`` is then the maximum. Fast engine
            only. ``options["samples_used"]`` holds the largest number used for an image.
        converge_grid: P: the halves are compared as P x P grids of cell means of the map (14: the 16-pixel
            cells of a 224 image, the resolution at which the overlay is read); 0 compares every pixel.
        preview: called after each batch with the current map (N, H, W) and the fraction done.

    Returns:
        raw (N, 3, H, W) and map (N, H, W) = channel sum; ``options`` holds the precision and engine used.
    """
    started = time.perf_counter()
    x = check_input(x)
    t = resolve_target(model, x, target)
    nt_type, base, engine = NoiseType(nt_type), Base(base), Engine(engine)
    if samples < 1:
        raise ValueError("samples must be at least 1")
    if not 0 <= noise <= 1:
        raise ValueError("noise is a fraction of the pixel range: between 0 and 1")
    if engine is Engine.AUTO:
        engine = Engine.FAST if base in FAST_BASES else Engine.CAPTUM
    if engine is Engine.FAST and base not in FAST_BASES:
        raise ValueError(f"the fast engine supports bases {', '.join(b.value for b in FAST_BASES)}")
    if engine is Engine.CAPTUM and base not in CAPTUM_BASES:
        raise ValueError(f"Captum's guided backprop is ReLU-only; use the fast engine for base {base.value}")
    if not 0 <= converge < 1:
        raise ValueError("converge is a rank correlation below 1 (0 turns the stop off)")
    if converge and engine is not Engine.FAST:
        raise ValueError("the convergence stop needs the fast engine")
    if converge_grid < 0:
        raise ValueError("converge_grid is a grid side (P for P x P cells) or 0 for every pixel")
    prec = resolve_precision(precision, x.device, model, x)
    if prec is Precision.FP16 and engine is Engine.CAPTUM:  # NoiseTunnel's backward has no loss scaling
        if Precision(precision) is Precision.FP16:
            raise ValueError("fp16 needs a scaled backward, which Captum's NoiseTunnel does not do: "
                             "use the fast engine, bf16 or fp32")
        prec = Precision.FP32
    run = _fast if engine is Engine.FAST else _captum
    raw, notes, used = run(model, x, t, samples=int(samples), sigma=float(noise), nt_type=nt_type, base=base,
                     seed=int(seed), batch_size=max(1, int(batch_size)), precision=prec, steps=int(steps),
                     baseline=Baseline(baseline), converge=float(converge), grid=int(converge_grid),
                     progress=progress, preview=preview)
    at = f"on a {converge_grid} × {converge_grid} grid" if converge_grid else "pixel by pixel"
    what = f"{used} samples (stopped when two halves agreed to ρ ≥ {converge:g} {at}; at most {samples})" \
        if converge and used < samples else \
        f"{used} samples (the two halves had not agreed to ρ ≥ {converge:g} {at}: all were used)" if converge \
        else f"{samples} samples"
    notes = [f"{what}, σ = {noise:g} of the pixel range, {nt_type.value} over {base.value}; "
             f"{engine.value} engine, {prec.value}", *notes]
    options = {"samples": int(samples), "samples_used": used, "converge": float(converge),
               "converge_grid": int(converge_grid), "noise": float(noise), "nt_type": nt_type.value,
               "base": base.value,
               "seed": int(seed), "batch_size": int(batch_size), "precision": prec.value, "engine": engine.value}
    if base is Base.INTEGRATED_GRADIENTS:
        options.update(steps=int(steps), baseline=Baseline(baseline).value)
    raw = raw.float()
    return Attribution(map=raw.sum(1), raw=raw, method="smoothgrad", target=t.tolist(),
                       seconds=time.perf_counter() - started, signed=nt_type is NoiseType.SMOOTHGRAD,
                       notes=tuple(notes), options=options)


def on_grid(m: torch.Tensor, grid: int) -> torch.Tensor:
    """(..., H, W) map as a (..., P, P) grid of cell means (P = ``grid``; 0 returns the map itself)."""
    if not grid:
        return m
    lead = m.shape[:-2]
    return nn.functional.adaptive_avg_pool2d(m.reshape(-1, 1, *m.shape[-2:]), grid).reshape(*lead, grid, grid)


def _fast(model, x, t, *, samples, sigma, nt_type, base, seed, batch_size, precision, progress, preview,
          converge=0.0, grid=0, **_unused) -> tuple[torch.Tensor, list[str], int]:
    n = x.shape[0]
    out = torch.empty_like(x)
    notes: list[str] = []
    used: list[int] = []
    scale = FP16_SCALE if precision is Precision.FP16 else 1.0
    for i in range(n):
        gen = torch.Generator(device=x.device).manual_seed(seed)
        # two independent halves (alternate batches): their agreement is the convergence test
        totals = [torch.zeros_like(x[i]) for _ in range(2)]
        squares = [torch.zeros_like(x[i]) for _ in range(2)]
        counts = [0, 0]
        done = batch = 0
        # with a preview (and no stop), the first batch's passes are split: PREVIEW_BATCH samples, then the rest
        # (the noise is drawn a whole batch at a time either way: the same draws on every device)
        split = PREVIEW_BATCH if preview is not None and not converge else 0
        while done < samples:
            k = min(batch_size, samples - done)
            drawn = torch.randn((k, *x.shape[1:]), generator=gen, device=x.device).mul_(sigma).add_(x[i])
            half = batch % 2
            for noisy in (drawn[:split], drawn[split:]) if batch == 0 and 0 < split < k else (drawn,):
                ti = t[i:i + 1].expand(len(noisy))
                with _autocast(precision, x.device):
                    if base is Base.GUIDED_BACKPROP:
                        grad, mode = gradient_with_rule(model, noisy, ti, GuidedRule.GUIDED, scale=scale)
                        if not mode.seen:
                            raise NotApplicable("guided backprop does not apply: the model has no rectifying "
                                                "activation, so the map would equal the plain gradient")
                        notes = notes or rule_notes(mode, GuidedRule.GUIDED)
                    else:
                        grad = input_gradient(model, noisy, ti, scale=scale)
                if base is Base.INPUT_X_GRADIENT:
                    grad.mul_(noisy)
                totals[half].add_(grad.sum(0))
                squares[half].add_(grad.pow_(2).sum(0))
                counts[half] += len(noisy)
                done += len(noisy)
                fraction = (i + done / samples) / n
                report(progress, fraction, f"SmoothGrad: image {i + 1}/{n}, {done}/{samples} samples")
                if preview is not None:
                    current = out.clone()
                    current[i] = combine(totals[0] + totals[1], squares[0] + squares[1], done, nt_type)
                    preview(current[: i + 1].sum(1), fraction)
            batch += 1
            if converge and batch % 2 == 0 and done < samples:
                halves = [on_grid(combine(totals[h], squares[h], counts[h], nt_type).sum(0), grid) for h in range(2)]
                if spearman(*halves) >= converge:
                    break  # the next image's fraction starts at (i + 1) / n: the samples skipped count as done
        used.append(done)
        out[i] = combine(totals[0] + totals[1], squares[0] + squares[1], done, nt_type)
    return out, notes, max(used)


def _captum(model, x, t, *, samples, sigma, nt_type, base, seed, batch_size, precision, steps, baseline,
            progress, preview, **_unused) -> tuple[torch.Tensor, list[str], int]:
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    rows_per_image = samples * (steps if base is Base.INTEGRATED_GRADIENTS else 1)
    state = {"rows": 0, "total": rows_per_image * x.shape[0]}

    def forward(inp: torch.Tensor) -> torch.Tensor:  # counts rows to report progress through Captum
        out = model(inp)
        state["rows"] += inp.shape[0]
        report(progress, state["rows"] / state["total"], f"SmoothGrad (NoiseTunnel): {state['rows']} passes")
        return out

    kind = {Base.SALIENCY: Saliency, Base.INPUT_X_GRADIENT: InputXGradient,
            Base.INTEGRATED_GRADIENTS: IntegratedGradients}[base]
    nt = NoiseTunnel(kind(forward))
    parts = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].clone()
        kwargs = {"abs": False} if base is Base.SALIENCY else {}
        if base is Base.INTEGRATED_GRADIENTS:
            kwargs = {"baselines": make_baseline(xi, baseline, seed=seed), "n_steps": steps,
                      "internal_batch_size": batch_size}
        with torch.random.fork_rng(devices=[]), _autocast(precision, x.device):
            torch.manual_seed(seed)
            attr = nt.attribute(xi, nt_type=nt_type.value, nt_samples=samples, nt_samples_batch_size=batch_size,
                                stdevs=sigma, target=int(t[i]), **kwargs)
        parts.append(attr.detach().float())
        if preview is not None:
            preview(torch.cat(parts).sum(1), (i + 1) / x.shape[0])
    return torch.cat(parts), [], samples


def _integrates(chosen) -> bool:
    return chosen.get("base") == Base.INTEGRATED_GRADIENTS.value


SMOOTHGRAD = MethodSpec(
    "smoothgrad", smoothgrad, "SmoothGrad", "a gradient method averaged over noisy copies",
    options=(
        Option("base", Base, "the gradient method averaged", label="Base method"),
        Option("nt_type", NoiseType, "signed mean (smoothgrad), mean of squares (smoothgrad_sq) or variance (vargrad)",
               label="Aggregation"),
        Option("samples", int, "noisy samples per image (the most, with a convergence stop)", low=1, high=200),
        Option("converge", float, "stop once two independent halves of the samples agree to this rank correlation "
               "(e.g. 0.98); 0 always takes all the samples", label="Stop at rank correlation (0: off)",
               low=0.0, high=0.99, step=0.01, metavar="RHO"),
        Option("converge_grid", int, "the stop compares the halves as P x P grids of cell means (14: 16-pixel cells "
               "at 224); 0 compares every pixel", label="Stop: grid side P (0: pixels)", low=0, high=64, metavar="P",
               visible=lambda chosen: bool(chosen.get("converge"))),
        Option("noise", float, "noise sigma as a fraction of the pixel range (the paper finds 10-20 % best)",
               label="Noise (fraction of the pixel range)", low=0.0, high=0.5, step=0.01, metavar="FRACTION"),
        Option("seed", int, "seed of the noise", low=0, high=10_000, number_input=True),
        Option("precision", Precision,
               "auto: the fastest of fp32 and the device's autocast precisions (bf16 on CPUs with native bf16, "
               "fp16/bf16 on a GPU), timed once for this model; fp16 is for a GPU"),
        replace(STEPS, label="Integration steps", low=2, high=64, visible=_integrates),
        replace(BASELINE, visible=_integrates),
    ))
