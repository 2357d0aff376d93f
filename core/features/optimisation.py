"""How a feature visualisation optimises: :class:`Settings`, the image's parameterisation (a Fourier spectrum in
a decorrelated colour space, :class:`FourierImage`) and the transformation-robustness draws."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

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


# Square root of ImageNet's colour covariance (from Lucid): decorrelated colour space -> RGB.
_COLOUR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
_COLOUR = torch.from_numpy(_COLOUR_SQRT / np.max(np.linalg.norm(_COLOUR_SQRT, axis=0)))
_FOURIER_SCALE = 4.0  # Lucid's constant: keeps the initial image's spread small


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
