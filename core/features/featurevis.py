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
parameters so neighbouring frames stay aligned.
"""
from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from ..catalogue import LayerInfo, find_layer, layer_output
from ..tokens import fit_input
from ..model.device import model_device
from ..model.wrapper import LensModel
from ..progress import Cancel, Progress, is_cancelled, report


# Square root of ImageNet's colour covariance (from Lucid): decorrelated colour space -> RGB.
_COLOUR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
_COLOUR = torch.from_numpy(_COLOUR_SQRT / np.max(np.linalg.norm(_COLOUR_SQRT, axis=0)))
_FOURIER_SCALE = 4.0  # Lucid's constant: keeps the initial image's spread small


class Objective(str, enum.Enum):
    CHANNEL = "channel"   # mean over the channel's grid
    UNIT = "unit"         # the unit at the centre of the channel's grid
    LOGIT = "logit"       # a class logit (the layer is not used)


class Cancelled(Exception):
    """Raised inside the loop when the caller's cancel flag is set (the partial result is still returned)."""


@dataclass(frozen=True)
class Settings:
    """How to optimise. Defaults suit a 224-pixel CNN on a CPU.

    ``size`` None means the model's input size. ``coarse`` is the fraction of steps spent on a half-size
    canvas first. ``diversity`` weights the batch diversity penalty (0 = off; needs ``batch`` >= 2).
    """

    steps: int = 128
    size: int | None = None
    lr: float = 0.05
    seed: int = 0
    batch: int = 1
    diversity: float = 0.0
    decay: float = 1.0           # spectrum scale 1/f**decay
    decorrelate: bool = True
    fourier: bool = True         # False: plain pixel parameterisation (for comparison)
    pad: int = 12
    jitter: int = 8
    scale: float = 0.05          # random scale in [1 - scale, 1 + scale]
    rotate: float = 10.0         # random rotation in [-rotate, rotate] degrees
    coarse: float = 0.4

    def key(self) -> tuple:
        """Hashable form (cache keys)."""
        return tuple(self.__dict__.values())


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


# ------------------------------------------------------------------------------------ parameterisation

def _freqs(h: int, w: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierImage(torch.nn.Module):
    """A batch of RGB images in [0, 1] as a scaled, colour-decorrelated Fourier spectrum.

    ``forward()`` -> float32 (B, 3, H, W) in (0, 1). :meth:`from_images` inverts it exactly (up to float
    error) for images strictly inside (0, 1). The parameters live on ``device``; the initial spectrum is drawn
    from ``generator`` (a CPU generator: the same start on every device) and moved there.
    """

    def __init__(self, batch: int, h: int, w: int, *, decay: float = 1.0, decorrelate: bool = True,
                 fourier: bool = True, generator: torch.Generator | None = None, sd: float = 0.01,
                 device: torch.device | str | None = None):
        super().__init__()
        self.h, self.w, self.decorrelate, self.fourier = h, w, decorrelate, fourier
        if fourier:
            scale = 1.0 / torch.clamp(_freqs(h, w), min=1.0 / max(h, w)) ** decay
            self.register_buffer("scale", scale[None, None, :, :, None].float().to(device))
            shape = (batch, 3, h, w // 2 + 1, 2)
        else:
            shape = (batch, 3, h, w)
        self.spectrum = torch.nn.Parameter((torch.randn(shape, generator=generator) * sd).to(device))

    def spatial(self, spectrum: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-sigmoid image in decorrelated colour space, (B, 3, H, W)."""
        s = self.spectrum if spectrum is None else spectrum
        if not self.fourier:
            return s
        c = torch.view_as_complex((s * self.scale).contiguous())
        return torch.fft.irfftn(c, s=(self.h, self.w), dim=(-2, -1), norm="ortho") / _FOURIER_SCALE

    def to_rgb(self, spatial: torch.Tensor) -> torch.Tensor:
        if self.decorrelate:
            spatial = torch.einsum("bchw,dc->bdhw", spatial, _COLOUR.to(spatial))
        return torch.sigmoid(spatial)

    def forward(self, spectrum: torch.Tensor | None = None) -> torch.Tensor:
        return self.to_rgb(self.spatial(spectrum))

    @torch.no_grad()
    def set_images(self, images: torch.Tensor) -> None:
        """Set the parameters so that ``forward()`` returns ``images`` (B, 3, H, W), clamped into (0, 1)."""
        x = images.clamp(1e-4, 1 - 1e-4).float()
        z = torch.log(x) - torch.log1p(-x)
        if self.decorrelate:
            z = torch.einsum("bchw,dc->bdhw", z, torch.linalg.inv(_COLOUR).to(z))
        if self.fourier:
            c = torch.fft.rfftn(z * _FOURIER_SCALE, dim=(-2, -1), norm="ortho")
            z = torch.view_as_real(c) / self.scale
        self.spectrum.copy_(z)

    @classmethod
    def from_images(cls, images: torch.Tensor, **kwargs) -> "FourierImage":
        b, _, h, w = images.shape
        param = cls(b, h, w, **kwargs)
        param.set_images(images)
        return param


# --------------------------------------------------------------------------------------- transforms

def robust_transform(x: torch.Tensor, s: Settings, gen: torch.Generator) -> torch.Tensor:
    """Pad with grey, jitter, scale and rotate (one random draw per call), jitter again. (B,3,H,W) -> (B,3,H',W').

    H' = H + 2 pad - jitter - max(1, jitter // 2). When the grey pad is wider than the first jitter (the default)
    the whole chain is one ``grid_sample`` of the unpadded image (:func:`_fused_transform`): the same values as
    the step-by-step chain (:func:`_stepwise_transform`, kept for the other settings) up to float rounding of
    the sampling grid, without the padded copy and the crops' gradients.
    """
    if (s.scale or s.rotate) and s.pad > s.jitter:
        return _fused_transform(x, s, gen)
    return _stepwise_transform(x, s, gen)


def _draws(s: Settings, gen: torch.Generator) -> tuple[tuple[int, int], float, float, tuple[int, int]]:
    """The random draws of one transform, in the order the step-by-step chain makes them."""
    d1, d2 = s.jitter, max(1, s.jitter // 2)
    j1 = tuple(int(v) for v in torch.randint(0, d1 + 1, (2,), generator=gen)) if d1 >= 1 else (0, 0)
    u = torch.rand(2, generator=gen)
    k = 1.0 + s.scale * (2 * float(u[0]) - 1)
    a = math.radians(s.rotate * (2 * float(u[1]) - 1))
    j2 = tuple(int(v) for v in torch.randint(0, d2 + 1, (2,), generator=gen))
    return j1, k, a, j2


def _fused_transform(x: torch.Tensor, s: Settings, gen: torch.Generator) -> torch.Tensor:
    """:func:`_stepwise_transform` as one affine ``grid_sample`` of ``x`` (needs ``s.pad > s.jitter``).

    Every stage maps output pixels to input pixels affinely (crops are integer shifts; ``align_corners=False``
    normalised coordinates), so the chain is one affine map from the final output to ``x``. Outside ``x`` the
    chain samples the grey pad (the rotation's border clamp lands on the pad too, since the pad is wider than the
    crop), so sampling ``x - 0.5`` with zero padding and adding 0.5 gives the same bilinear mix of image and grey.
    """
    (dy1, dx1), k, a, (dy2, dx2) = _draws(s, gen)
    b, _, h, w = x.shape
    d1, d2 = s.jitter, max(1, s.jitter // 2)
    h1, w1 = h + 2 * s.pad - d1, w + 2 * s.pad - d1    # after the first crop (the rotation's canvas)
    h2, w2 = h1 - d2, w1 - d2                          # after the second crop

    def chain(n: int, n1: int, n2: int, shift2: int, shift1: int) -> tuple[float, float, float, float]:
        # output normalised -> rotation canvas normalised: scale, offset; canvas normalised -> x normalised
        return n2 / n1, n2 / n1 + 2 * shift2 / n1 - 1, n1 / n, n1 / n + 2 * (shift1 - s.pad) / n - 1

    ax, bx, cx, ex = chain(w, w1, w2, dx2, dx1)
    ay, by, cy, ey = chain(h, h1, h2, dy2, dy1)
    cos, sin = math.cos(a) / k, math.sin(a) / k
    # x_in = cx (cos (ax xo + bx) - sin (ay yo + by)) + ex;  y_in = cy (sin (ax xo + bx) + cos (ay yo + by)) + ey
    theta = torch.tensor([[cx * cos * ax, -cx * sin * ay, cx * (cos * bx - sin * by) + ex],
                          [cy * sin * ax, cy * cos * ay, cy * (sin * bx + cos * by) + ey]], dtype=x.dtype,
                         device=x.device)
    grid = F.affine_grid(theta.expand(b, 2, 3), [b, x.shape[1], h2, w2], align_corners=False)
    return F.grid_sample(x - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def _stepwise_transform(x: torch.Tensor, s: Settings, gen: torch.Generator) -> torch.Tensor:
    """Pad, jitter, scale and rotate, jitter: one operation after the other."""
    if s.pad:
        x = F.pad(x, (s.pad,) * 4, mode="constant", value=0.5)
    x = _jitter(x, s.jitter, gen)
    if s.scale or s.rotate:
        u = torch.rand(2, generator=gen)
        k = 1.0 + s.scale * (2 * float(u[0]) - 1)
        a = math.radians(s.rotate * (2 * float(u[1]) - 1))
        theta = torch.tensor([[math.cos(a) / k, -math.sin(a) / k, 0.0],
                              [math.sin(a) / k, math.cos(a) / k, 0.0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _jitter(x, max(1, s.jitter // 2), gen)


def _jitter(x: torch.Tensor, d: int, gen: torch.Generator) -> torch.Tensor:
    if d < 1:
        return x
    dy, dx = (int(v) for v in torch.randint(0, d + 1, (2,), generator=gen))
    return x[:, :, dy:x.shape[2] - d + dy, dx:x.shape[3] - d + dx]


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


def interpolate(model: LensModel, layer: str, channel: int, other: int, *, frames: int = 5,
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
