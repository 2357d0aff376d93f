"""Feature visualisation by activation maximisation (Olah et al., "Feature Visualization", Distill 2017).

The image is parameterised as a Fourier spectrum scaled by 1/frequency (so every frequency learns at a similar
rate) in a decorrelated colour space, then mapped to RGB in [0, 1] by a sigmoid (:class:`FourierImage`). Each
Adam step sees a randomly padded, jittered, scaled and rotated copy (transformation robustness), so the result
is what the unit responds to robustly rather than a high-frequency adversarial pattern. To fit a CPU the first
part of the run works on a half-size canvas (4x cheaper), which is then upsampled and refined at full size
(an "octave", as in DeepDream). The forward pass stops at the layer being maximised.

Objectives: a channel's mean activation, one unit (the centre of the channel's grid), or a class logit.
Optional diversity across a small batch (a penalty on the cosine similarity of the layer's Gram matrices), and
neuron interaction (:func:`interpolate`): frames that trade one channel against another, sharing part of their
parameters so neighbouring frames stay aligned. The settings the pages and the CLI offer are declared in
:mod:`core.features.featurevis_spec`.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F

from ..catalogue import LayerInfo, find_layer, layer_output
from ..tokens import fit_input
from ..model.device import model_device
from ..model.wrapper import LensModel
from ..progress import Cancel, Progress, is_cancelled, report
from .optimisation import FourierImage, Settings, robust_transform


DEFAULT_FRAMES = 5            # neuron-interaction frames from channel A to channel B


class Objective(str, enum.Enum):
    CHANNEL = "channel"   # mean over the channel's grid
    UNIT = "unit"         # the unit at the centre of the channel's grid
    LOGIT = "logit"       # a class logit (the layer is not used)


@dataclass(frozen=True)
class Visualisation:
    """Result of an optimisation.

    ``images``: float32 (B, 3, S, S) in [0, 1]. ``values``: the objective for each image from a plain forward
    pass at the model's input size (the image resized if S differs). ``baseline``: the same objective on
    mid-grey, for scale. ``weights`` (B, K): how each image mixes ``channels``. ``history``: mean objective
    per step, measured on the transformed images during optimisation.
    """

    images: torch.Tensor
    layer: str
    channels: tuple[int, ...]
    weights: tuple[tuple[float, ...], ...]
    objective: Objective
    values: tuple[float, ...]
    baseline: float
    history: tuple[float, ...]
    settings: Settings
    seconds: float
    cancelled: bool


# -------------------------------------------------------------------------------------------- reading

def activation(model: LensModel, x: torch.Tensor, layer: LayerInfo | None, channels: list[int],
               objective: Objective) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Objective values (N, K) for ``channels`` and the layer output (None for logits)."""
    x = fit_input(model, x)  # a transformer with fixed-size position embeddings takes no other size
    if objective is Objective.LOGIT:
        return model(x)[:, channels], None
    out = layer_output(model, x, layer, grad=True)
    chans = out[:, channels]
    if objective is Objective.UNIT:
        return chans[:, :, out.shape[2] // 2, out.shape[3] // 2], out
    return chans.mean(dim=(2, 3)), out


def measure(model: LensModel, images: torch.Tensor, layer: str, channel: int,
            objective: Objective = Objective.CHANNEL) -> torch.Tensor:
    """The objective on images (N, 3, H, W) in [0, 1], resized to the model's input size. Returns (N,)."""
    size = model.card.input_size[1:]
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    info = None if objective is Objective.LOGIT else find_layer(model, layer)
    with torch.no_grad():
        return activation(model, images, info, [channel], objective)[0][:, 0].float()


def _diversity(out: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine similarity of the batch's Gram matrices (Lucid's diversity objective)."""
    b, c = out.shape[:2]
    flat = out.reshape(b, c, -1)
    grams = F.normalize((flat @ flat.transpose(1, 2)).reshape(b, -1), dim=1)
    sim = grams @ grams.T
    return (sim.sum() - sim.diagonal().sum()) / (b * (b - 1))


# ------------------------------------------------------------------------------------------ optimising

def _check(model: LensModel, layer: str, channels: list[int], objective: Objective) -> LayerInfo | None:
    if objective is Objective.LOGIT:
        n = model.card.num_classes
        info = None
    else:
        info = find_layer(model, layer)
        n = info.channels
    for c in channels:
        if not 0 <= c < n:
            what = "class" if info is None else f"channel of {layer} ({n} channels)"
            raise ValueError(f"{c} is not a valid {what}: use 0..{n - 1}")
    return info


def _optimise(model: LensModel, layer: str, channels: list[int], weights: torch.Tensor, objective: Objective,
              s: Settings, shared: bool, progress: Progress | None, cancel) -> Visualisation:
    info = _check(model, layer, channels, objective)
    if s.steps < 1:
        raise ValueError("steps must be at least 1")
    start = time.perf_counter()
    say = partial(report, progress)
    gen = torch.Generator().manual_seed(s.seed)  # host-side draws (start, jitter, angles): the same on every device
    device = model_device(model)
    weights = weights.to(device)
    size = s.size or model.card.input_size[1]
    if size < 32:
        raise ValueError("size must be at least 32 pixels")
    b = weights.shape[0]
    coarse_steps = int(s.steps * s.coarse) if size >= 64 else 0
    kw = dict(decay=s.decay, decorrelate=s.decorrelate, fourier=s.fourier, device=device)
    history: list[float] = []
    cancelled = False
    rgb = None
    step = 0
    for phase, (n_steps, side) in enumerate(((coarse_steps, size // 2), (s.steps - coarse_steps, size))):
        if n_steps <= 0:
            continue
        param = FourierImage(b, side, side, generator=gen, **kw)
        if rgb is not None:  # continue from the coarse result, upsampled
            param.set_images(F.interpolate(rgb, size=(side, side), mode="bilinear", align_corners=False))
        common = FourierImage(1, side, side, generator=gen, **kw) if shared else None
        if common is not None:
            common.spectrum.data.zero_()
        params = [param.spectrum] + ([common.spectrum] if common is not None else [])
        opt = torch.optim.Adam(params, lr=s.lr)
        for _ in range(n_steps):
            if is_cancelled(cancel):
                cancelled = True
                break
            opt.zero_grad(set_to_none=True)
            spectrum = param.spectrum + common.spectrum if common is not None else None
            img = param(spectrum)
            acts, out = activation(model, robust_transform(img, s, gen), info, channels, objective)
            per_image = (acts * weights.to(acts)).sum(1)
            loss = -per_image.sum()
            if s.diversity and b > 1 and out is not None:
                loss = loss + s.diversity * per_image.detach().abs().mean() * b * _diversity(out)
            loss.backward()
            opt.step()
            history.append(float(per_image.detach().mean()))
            step += 1
            say(step / s.steps, f"step {step}/{s.steps} ({side}px): objective {history[-1]:.3g}")
        with torch.no_grad():
            rgb = param(param.spectrum + common.spectrum if common is not None else None).detach()
        if cancelled:
            break
    if rgb.shape[-1] != size:
        rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    say(1.0, "measuring the result")
    mixed = _mixed_measure(model, rgb, layer, channels, weights, objective)
    grey = _mixed_measure(model, torch.full((1, 3, size, size), 0.5, device=device), layer, channels, weights[:1],
                          objective)
    return Visualisation(
        images=_to_cpu(rgb.float()), layer=layer if info else "", channels=tuple(channels),
        weights=tuple(tuple(float(v) for v in row) for row in weights), objective=objective,
        values=tuple(float(v) for v in mixed), baseline=float(grey[0]), history=tuple(history), settings=s,
        seconds=time.perf_counter() - start, cancelled=cancelled)


def _to_cpu(images: torch.Tensor) -> torch.Tensor:
    return images.cpu()  # the result comes back to the CPU for display


def _mixed_measure(model, images, layer, channels, weights, objective) -> torch.Tensor:
    cols = torch.stack([measure(model, images, layer, c, objective) for c in channels], dim=1)
    return (cols * weights.to(cols)).sum(1)


def visualize(model: LensModel, layer: str, channel: int, *, objective: Objective = Objective.CHANNEL,
              settings: Settings = Settings(), progress: Progress | None = None,
              cancel: Cancel | None = None) -> Visualisation:
    """The image(s) that maximise one channel, unit or logit.

    Args:
        model: the classifier.
        layer: a catalogue layer name (ignored for ``Objective.LOGIT``).
        channel: channel index of the layer, or class index for ``Objective.LOGIT``.
        settings: optimisation settings; ``settings.batch`` images are made (diverse if ``diversity`` > 0).
        progress: called with (fraction in [0, 1], message) after every step.
        cancel: an Event or a callable; when set, optimisation stops and the partial result is returned
            with ``cancelled=True``.

    Raises:
        KeyError: unknown layer. ValueError: channel out of range, bad settings.
    """
    weights = torch.ones(max(1, settings.batch), 1)
    return _optimise(model, layer, [channel], weights, Objective(objective), settings, False, progress, cancel)


def interpolate(model: LensModel, layer: str, channel: int, other: int, *, frames: int = DEFAULT_FRAMES,
                objective: Objective = Objective.CHANNEL, settings: Settings = Settings(),
                progress: Progress | None = None,
                cancel: Cancel | None = None) -> Visualisation:
    """Neuron interaction: ``frames`` images maximising (1 - t) * a + t * b for t from 0 to 1.

    The middle frame optimises both channels jointly. Frames share a common parameter added to their own, so
    they stay aligned and the interpolation reads as one pattern morphing into the other.
    """
    if frames < 2:
        raise ValueError("frames must be at least 2")
    t = torch.linspace(0, 1, frames)[:, None]
    weights = torch.cat([1 - t, t], dim=1)
    s = replace(settings, batch=frames, diversity=0.0)
    return _optimise(model, layer, [channel, other], weights, Objective(objective), s, True, progress, cancel)
