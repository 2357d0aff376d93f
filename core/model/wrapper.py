"""The model wrapper every technique works through: :class:`LensModel` (RGB [0, 1] in, normalisation inside),
its :class:`ModelCard`, and :func:`wrap` for any classifier.

Every technique in ``core`` feeds RGB float tensors in [0, 1], shape (N, 3, H, W), to a :class:`LensModel`,
which owns the model's normalisation. Loading (hub, files, embedded weights) is in :mod:`core.model.loading`.
"""
from __future__ import annotations

import enum
import itertools
import threading
from dataclasses import dataclass

import torch
from torch import nn

from ..hooks import private_copy


class ModelLoadError(RuntimeError):
    """A model or weights file could not be loaded; the message is one line, fit to show a user."""


class WeightsSource(str, enum.Enum):
    HUB = "hub"
    FILE = "file"
    RANDOM = "random"
    EMBEDDED = "embedded"


@dataclass(frozen=True)
class ModelCard:
    """What a user needs to know about the loaded model."""

    name: str                      # timm name as asked for (may carry a pretrained tag), or "embedded"
    arch: str                      # timm architecture actually built
    weights: WeightsSource
    weights_detail: str            # hub id, file path, seed, or package
    fingerprint: str               # identifies the exact weights (sha256 of the file, or a derived key)
    num_params: int
    num_classes: int
    input_size: tuple[int, int, int]
    interpolation: str
    crop_pct: float
    crop_mode: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    notice: str | None = None      # e.g. why the default fell back to the embedded model
    device: str = "cpu"            # where the model runs (cpu, cuda, mps)

    @property
    def data_config(self) -> dict:
        """timm-style data config (``resolve_data_config`` keys)."""
        return {
            "input_size": self.input_size, "interpolation": self.interpolation, "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode, "mean": self.mean, "std": self.std,
        }

    @property
    def preprocessing(self) -> str:
        size = self.input_size[1]
        scale = int(size / self.crop_pct) if self.crop_mode != "squash" else size
        return (f"{self.interpolation} resize to {scale}, {self.crop_mode} crop {size}x{size}, "
                f"mean {tuple(round(m, 3) for m in self.mean)}, std {tuple(round(s, 3) for s in self.std)}")


class LensModel(nn.Module):
    """A classifier that takes RGB in [0, 1] and owns its normalisation.

    Args:
        net: the timm model (expects normalised input).
        card: description of the model and its preprocessing.
        labels: one human-readable name per output class.

    ``forward(x)``: x float (N, 3, H, W) in [0, 1] -> logits (N, num_classes).
    Parameters never require grad (techniques take gradients with respect to the input only).
    ``lock`` serialises work that installs hooks on the shared model (see :mod:`core.hooks`).
    """

    def __init__(self, net: nn.Module, card: ModelCard, labels: list[str]):
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.card = card
        self.labels = list(labels)
        self.register_buffer("mean", torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.lock = threading.RLock()
        super().train(False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalise(x))

    def layer(self, name: str) -> nn.Module:
        """The submodule of ``net`` with dotted name ``name`` ("" is the whole net)."""
        try:
            return self.net.get_submodule(name)
        except AttributeError as e:
            raise KeyError(f"model {self.card.arch} has no layer {name!r}") from e

    def replica(self) -> "LensModel":
        """A private copy of the module tree that shares every parameter and buffer (no extra weight memory).

        For thread-parallel inference: hooks on a replica are invisible to this model and to other replicas,
        and the replica has its own ``lock``. Weights are never written in place (parameters do not require
        grad and the model stays in eval mode), so sharing them between threads is safe.
        """
        memo: dict = {id(t): t for t in itertools.chain(self.parameters(), self.buffers())}
        memo[id(self.lock)] = threading.RLock()
        # under the lock that guards hook registration (no hook dict changes size mid-copy); no hook is copied
        return private_copy(self, memo=memo)

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"

    def train(self, mode: bool = True) -> "LensModel":
        # A shared model must stay in eval mode: BatchNorm statistics and dropout would change results.
        return super().train(False)


def wrap(net: nn.Module, *, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), name: str = "custom",
         labels: list[str] | None = None, input_size: int = 224) -> LensModel:
    """Wrap any classifier (tests, notebooks) with a given normalisation."""
    num_classes = net_num_classes(net)
    card = ModelCard(
        name=name, arch=type(net).__name__, weights=WeightsSource.RANDOM, weights_detail="given",
        fingerprint=f"object:{id(net)}", num_params=sum(p.numel() for p in net.parameters()),
        num_classes=num_classes, input_size=(3, input_size, input_size), interpolation="bilinear",
        crop_pct=1.0, crop_mode="center", mean=tuple(mean), std=tuple(std))
    return LensModel(net, card, labels or [f"class {i}" for i in range(num_classes)])


def imagenet_labels(net: nn.Module, num_classes: int) -> list[str]:
    """Class names from timm's ImageNet metadata (short form: the first synonym)."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(net)
    if subset is None:
        return [f"class {i}" for i in range(num_classes)]
    info = ImageNetInfo(subset)
    return [info.index_to_description(i).split(",")[0].strip() for i in range(num_classes)]


def net_num_classes(net: nn.Module) -> int:
    """The class count of a bare classifier: its ``num_classes``, else one small forward pass."""
    n = getattr(net, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    with torch.no_grad():
        return int(net(torch.zeros(1, 3, 64, 64)).shape[-1])


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), for one-line errors."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
