"""Extremal perturbation's mask parameterisation (TorchRay): the smooth max-over-bumps mask and the area constraint.

:class:`SmoothMask` maps a coarse grid of parameters in [0, 1] to a smooth (H, W) mask; :func:`area_loss` is the
ranking constraint that holds each mask to its area. :mod:`core.perturbation.masks` optimises them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

# The soft maximum runs over chunks of grid cells of at most this much scratch (cells × step² × 81 floats): one
# chunk for up to 4 masks of 224², so that large inputs do not allocate unbounded scratch. Chunks small enough to
# stay in the cache gained little at 1 thread but made the mask several times slower at 2 threads on a loaded
# machine (every small operation is an OpenMP region that waits for a descheduled partner): docs/performance.md.
_CHUNK_BYTES = 64 << 20


class _SoftMax(torch.autograd.Function):
    """pooled = Σ_j b_j softmax(c b)_j over the J neighbours of each pixel, with b_pj = nb_j · w_pj: nb (N, 1, J)
    the neighbouring parameters of each of the N grid cells, w (1, P, J) the bump weights of the P = step² pixels
    of a cell (they depend only on a pixel's place in its cell). Returns (N, P).

    One node instead of autograd's chain, with as few passes over the N × P × J values as the arithmetic allows,
    chunk by chunk of cells (``chunk`` cells, scratch ``buffers[1]``).
    Forward: e = exp(c b - shift) with shift = c · max_j nb_j per cell (one fused multiply-add, one exp; softmax
    is shift-invariant and with parameters in [0, 1] every pixel keeps a term ≥ exp(-c), so nothing under- or
    overflows: the nearest bump has weight 1 and every other term is ≤ exp(0)), Z = Σ_j e, ew = e · w (saved),
    pooled = Σ_j ew_j nb_j / Z (a batched matrix-vector product). The gradient ∂pooled/∂b_j = s_j (1 + c b_j -
    c pooled), s = e / Z, summed over a cell's pixels: ∂/∂nb_j = Σ_p s w (g (1 - c pooled)) + c nb_j Σ_p s w² g,
    two batched vector-matrix products with the saved ew (ew · w in the scratch). Results equal the unfold +
    softmax formulation to float rounding (test). A buffer reused before the previous backward ran trips
    autograd's in-place check (RuntimeError)."""

    @staticmethod
    def forward(ctx, nb: torch.Tensor, weight: torch.Tensor, cweight: torch.Tensor, coldness: float,
                buffers: tuple, chunk: int) -> torch.Tensor:
        ew, scratch = buffers
        n_cells = nb.shape[0]
        shift = nb.amax(dim=-1, keepdim=True).mul_(-coldness)  # (N, 1, 1): -c max_j nb_j
        z = nb.new_empty(n_cells, ew.shape[1], 1)
        num = nb.new_empty(n_cells, ew.shape[1], 1)
        for a in range(0, n_cells, chunk):
            b = min(n_cells, a + chunk)
            e = torch.addcmul(shift[a:b], nb[a:b], cweight, out=scratch[:b - a]).exp_()
            torch.sum(e, dim=-1, keepdim=True, out=z[a:b])
            torch.bmm(torch.mul(e, weight, out=ew[a:b]), nb[a:b].transpose(1, 2), out=num[a:b])
        ctx.save_for_backward(nb, weight, ew, z, num)
        ctx.coldness, ctx.chunk, ctx.scratch = coldness, chunk, scratch
        return (num / z).squeeze(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        nb, weight, ew, z, num = ctx.saved_tensors
        c, chunk, scratch = ctx.coldness, ctx.chunk, ctx.scratch
        g = grad.unsqueeze(-1) / z                          # (N, P, 1): g / Z
        # (N, 1, P) rows, contiguous (a strided left operand slows the products)
        coef = (g * (1 - c * (num / z))).transpose(1, 2).contiguous()  # g (1 - c pooled) / Z
        g = g.transpose(1, 2).contiguous()
        first, second = torch.empty_like(nb), torch.empty_like(nb)
        for a in range(0, nb.shape[0], chunk):
            b = min(nb.shape[0], a + chunk)
            torch.bmm(coef[a:b], ew[a:b], out=first[a:b])
            torch.bmm(g[a:b], torch.mul(ew[a:b], weight, out=scratch[:b - a]), out=second[a:b])
        return first.addcmul_(nb, second, value=c), None, None, None, None, None


class SmoothMask:
    """Maps a coarse parameter grid to a smooth (H, W) mask: each parameter is a flat-topped bump of radius
    ``sigma`` at its grid point, and the mask is a soft maximum of the bumps covering a pixel (TorchRay's
    "max-convolution" parameterisation: a region can be switched on without blurring its edges).

    Computed per grid cell (the ``step`` × ``step`` pixels that share their neighbouring parameters) with the
    bumps broadcast over the cell, and one fused autograd node for the soft maximum: the same mask as TorchRay's
    unfold + nearest upsampling, without materialising the upsampled neighbours."""

    def __init__(self, size: tuple[int, int], step: int = 7, sigma: float = 21.0, coldness: float = 20.0,
                 device: torch.device | str = "cpu") -> None:
        h, w = size
        self.size, self.step, self.sigma, self.coldness = (h, w), step, sigma, coldness
        self.margin = int(math.ceil(sigma))     # grid points extend past the border by sigma
        self.radius = 1 + int(math.ceil(sigma / step))
        self.shape_in = tuple(int(math.ceil((n + 2 * self.margin) / step)) + 1 for n in (h, w))
        # pixel u belongs to grid cell floor((u + margin) / step); the cells that hold image pixels, and where
        # the image starts in the first of them
        self.cells = tuple(range(self.margin // step, (n - 1 + self.margin) // step + 1) for n in (h, w))
        self.offset = self.margin % step
        k = 2 * self.radius + 1
        # a pixel's offsets to its neighbouring grid points depend only on its place in its cell
        wy, wx = (self._axis(torch.arange(step, dtype=torch.float32) - self.offset) for _ in range(2))
        # weight[y, x, k] = kernel(distance from pixel (y, x) of a cell to its k-th neighbouring grid point / sigma)
        d = torch.sqrt(wy[:, None, :, None] ** 2 + wx[None, :, None, :] ** 2)  # (ky, kx, step, step)
        kernel = torch.exp(-2 * ((d / sigma - 0.5).clamp(min=0) ** 2))
        # (1, P, J): a cell's pixels (row-major), neighbours last (contiguous)
        self.weight = kernel.reshape(k * k, step * step).t().contiguous().unsqueeze(0).to(device)
        self.cweight = self.weight * coldness
        self._buffers: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def _axis(self, u: torch.Tensor) -> torch.Tensor:
        """(2r+1, n) offsets from each pixel position ``u`` (n,) to the grid points around it."""
        nearest = torch.floor((u + self.margin) / self.step)  # grid index left of / at the pixel
        offsets = torch.arange(-self.radius, self.radius + 1, dtype=torch.float32)
        grid_pos = (nearest[None, :] + offsets[:, None]) * self.step - self.margin  # (2r+1, n)
        return u[None, :] - grid_pos

    def inside(self) -> torch.Tensor:
        """(1, 1, *shape_in): 1 for grid points inside the image, 0 for those in the margin."""
        masks = []
        for n, size in zip(self.shape_in, self.size):
            pos = torch.arange(n, dtype=torch.float32) * self.step - self.margin
            masks.append(((pos >= 0) & (pos <= size - 1)).float())
        return (masks[0][:, None] * masks[1][None, :]).view(1, 1, *self.shape_in).to(self.weight.device)

    def __call__(self, params: torch.Tensor) -> torch.Tensor:
        """(K, 1, *shape_in) parameters in [0, 1] -> (K, 1, H, W) mask in [0, 1]."""
        k = 2 * self.radius + 1
        gh, gw = self.shape_in
        (cy, cx) = self.cells
        nb = F.unfold(params, (k, k), padding=self.radius).view(params.shape[0], k * k, gh, gw)
        n = params.shape[0]
        nb = nb[:, :, cy[0]:cy[-1] + 1, cx[0]:cx[-1] + 1].permute(0, 2, 3, 1)
        nb = nb.reshape(n * len(cy) * len(cx), 1, k * k).contiguous()  # (cells, 1, J)
        per_cell = self.step ** 2 * k * k
        chunk = max(1, _CHUNK_BYTES // (per_cell * params.element_size()))
        key = (n, params.dtype, params.device, chunk)
        if key not in self._buffers:
            self._buffers[key] = (params.new_empty(nb.shape[0], self.step ** 2, k * k),
                                  params.new_empty(min(chunk, nb.shape[0]), self.step ** 2, k * k))
        pooled = _SoftMax.apply(nb, self.weight, self.cweight, self.coldness, self._buffers[key], chunk)
        h, w = self.size
        pooled = pooled.view(n, len(cy), len(cx), self.step, self.step).permute(0, 1, 3, 2, 4)
        pooled = pooled.reshape(n, 1, len(cy) * self.step, len(cx) * self.step)
        o = self.offset
        return pooled[:, :, o:o + h, o:o + w].clamp(0, 1)


def area_loss(mask: torch.Tensor, ones: Sequence[int]) -> torch.Tensor:
    """TorchRay's area constraint ``mean((sort(m) - r)²)`` per row of ``mask`` (K, n), with ``r`` the sorted
    reference of ``ones[i]`` ones, without the sort: Σ sort(m) r is the sum of the ``ones[i]`` largest values, found
    by one selection (``kthvalue``). Same value; the same gradient 2 (m - r(m)) / n, where values tied at the
    threshold share the ones left for them (the sort hands them out in its own order)."""
    n = mask.shape[1]
    rows = []
    for i, k in enumerate(ones):
        m = mask[i]
        if k <= 0:
            rows.append(m.pow(2).mean())
            continue
        with torch.no_grad():
            threshold = m.kthvalue(n - k + 1).values
            above = m > threshold
            tied = m == threshold
            r = above.to(m.dtype) + tied.to(m.dtype) * ((k - above.sum()) / tied.sum())
        rows.append((m - r).pow(2).mean() + (k - r.pow(2).sum()) / n)
    return torch.stack(rows)
