"""Techniques keep their tensors on the model's device: caught without a GPU.

``PretendDevice`` is a ``TorchFunctionMode`` under which every tensor *reports* a device other than the CPU
(``cuda:0``) while really living on the CPU, so a technique takes its GPU code path here. The mode records, with
the ``core/`` line that asked for it, every tensor moved to the CPU on purpose (``.cpu()``, ``.to("cpu")``,
``device="cpu"``) and everything that would fail on a real GPU: an operation that mixes a CPU tensor with a
device tensor, or ``.numpy()`` of a device tensor. CPU tensors are followed through every operation: a factory
without ``device=`` (``torch.zeros(...)``), ``torch.from_numpy`` and a ``torch.Generator`` on the CPU make CPU
tensors, which are fine as host-side bookkeeping (window orders, jitter offsets, a kernel built once and then
moved) and are caught as soon as one meets the model's tensors without ``.to(device)``. The few places that
legitimately bring results back to the CPU for display are allowed by name (``ALLOWED``).

The meta device cannot do this: the techniques read values (``.item()``, the target's probability, extremal's
selection), which meta tensors do not have.
"""
from __future__ import annotations

import sys
import weakref
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from core.attribution.registry import REGISTRY, attribute
from tests.conftest import make_tiny

ROOT = Path(__file__).resolve().parent.parent
CORE = str(ROOT / "core")
TORCH = str(Path(torch.__file__).parent)
PRETEND = torch.device("cuda", 0)

FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn, torch.randint,
             torch.randperm, torch.arange, torch.linspace, torch.logspace, torch.eye, torch.tensor}

# (file, function): why a CPU placement is right there. Nothing else in core/ may put a tensor on the CPU.
ALLOWED = {
    ("core/attribution/registry.py", "attribute"): "results come back to the CPU for display",
    ("core/perturbation/masks.py", "_to_cpu"): "mask results come back to the CPU for display",
    ("core/perturbation/masks.py", "_optimise"): "the preview masks go to the CPU for the page",
    ("core/attack/attacks.py", "_to_cpu"): "attack results come back to the CPU for display",
    ("core/attack/attacks.py", "quantize_8bit"): "the 8-bit check rounds as the page's PNG does, on the CPU",
}


class PretendDevice(TorchFunctionMode):
    """Every tensor reports ``PRETEND`` as its device; CPU placements made from ``roots`` are recorded."""

    def __init__(self, roots: tuple[str, ...] = (CORE,), allowed: dict | None = None):
        super().__init__()
        self.roots = roots
        self.allowed = ALLOWED if allowed is None else allowed
        self._host: dict[int, weakref.ref] = {}  # tensors that would really be on the CPU (by id)
        self.found: list[str] = []
        self._generator = torch.Generator
        self._cpu_generators: dict[int, weakref.ref] = {}

    # where: the first frame outside torch and this file; None when that is not code we audit
    def _where(self) -> tuple[str, str, int] | None:
        f = sys._getframe(2)
        while f is not None and (f.f_code.co_filename.startswith(TORCH) or f.f_code.co_filename == __file__
                                 and f.f_code.co_name in ("__torch_function__", "_record", "_where", "generator")):
            f = f.f_back
        if f is None or not f.f_code.co_filename.startswith(self.roots):
            return None
        return f.f_code.co_filename, f.f_code.co_name, f.f_lineno

    def _record(self, what: str) -> bool:
        """Record a CPU placement; True when it is allowed (or outside the audited code)."""
        where = self._where()
        if where is None:
            return True
        path, func, line = where
        rel = str(Path(path).relative_to(ROOT)) if path.startswith(str(ROOT)) else path
        if (rel, func) in self.allowed:
            return True
        self.found.append(f"{rel}:{line} in {func}: {what}")
        return False

    def on_host(self, t: torch.Tensor) -> bool:
        ref = self._host.get(id(t))
        return ref is not None and ref() is t

    def mark(self, t: torch.Tensor, host: bool = True) -> None:
        if host:
            self._host[id(t)] = weakref.ref(t)
        else:
            self._host.pop(id(t), None)

    def _is_cpu(self, device) -> bool:
        return device is not None and torch.device(device).type == "cpu"

    def __enter__(self):
        mode = self

        def generator(device=None):  # a CPU generator only makes CPU tensors (followed like any other)
            gen = mode._generator(device="cpu")
            if device is None or mode._is_cpu(device):
                mode._cpu_generators[id(gen)] = weakref.ref(gen)
            return gen

        torch.Generator = generator  # noise generators must be made on the model's device
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Generator = self._generator
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if getattr(func, "__self__", None) is torch.Tensor.device:  # the property getter
            return torch.device("cpu") if self.on_host(args[0]) else PRETEND
        to_host = False
        if "device" in kwargs and kwargs["device"] is not None:
            if self._is_cpu(kwargs["device"]):
                to_host = True
                self._record(f"{getattr(func, '__name__', func)}(device='cpu')")
            kwargs["device"] = "cpu"
        elif func in FACTORIES or func is torch.as_tensor and not isinstance(args[0], torch.Tensor):
            to_host = True  # a CPU tensor: fine until it meets the model's tensors
        gen = kwargs.get("generator")
        if gen is not None and self._cpu_generators.get(id(gen), lambda: None)() is gen:
            if not to_host and "device" in kwargs:
                self._record(f"{getattr(func, '__name__', func)} on the model's device from a CPU generator")
            to_host = True
        if func is torch.from_numpy:
            to_host = True
        if func is torch.Tensor.cpu:
            self._record(".cpu()")
            out = func(*args, **kwargs).view_as(args[0])
            self.mark(out)
            return out
        if func is torch.Tensor.cuda:
            return args[0].view_as(args[0])
        if func is torch.Tensor.numpy and not self.on_host(args[0]):
            self._record(".numpy() of a tensor on the model's device (fails on a GPU)")
        if func is torch.Tensor.to:
            devs = [a for a in args[1:] if isinstance(a, (str, torch.device))]
            if devs:
                if self._is_cpu(devs[0]):
                    to_host = True
                    self._record(".to('cpu')")
                args = tuple("cpu" if a is devs[0] else a for a in args)
            elif "device" in kwargs and not to_host:
                pass
            else:  # .to(dtype) or .to(other): follows its source
                to_host = any(isinstance(a, torch.Tensor) and self.on_host(a) for a in args)
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                out = out.view_as(out) if out is args[0] else out
                self.mark(out, to_host)
            return out
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        on_host = [self.on_host(a) for a in tensors]
        if any(on_host) and not all(on_host) and not to_host:
            big = [t for t, h in zip(tensors, on_host) if h and t.dim() > 0]
            if big:  # a 0-dim CPU tensor mixes with a GPU tensor; anything larger does not
                self._record(f"{getattr(func, '__name__', func)} mixes a CPU tensor with the model's device")
            to_host = False
        elif tensors and all(on_host):
            to_host = True
        out = func(*args, **kwargs)
        if to_host:
            tree_map(lambda o: self.mark(o) if isinstance(o, torch.Tensor) else None, out)
        return out


@pytest.fixture(scope="module")
def tiny():
    return make_tiny("convnext_atto", seed=1, num_classes=10, ls_init_value=1.0)


@pytest.fixture
def x():
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


OPTS = {"smoothgrad": {"samples": 4, "converge": 0.5}, "integrated-gradients": {"steps": 4},
        "occlusion": {"window": 16, "stride": 16}}


@pytest.mark.parametrize("method", list(REGISTRY))
def test_attribution_keeps_tensors_on_the_model_device(tiny, x, method):
    with PretendDevice() as audit:
        r = attribute(tiny, x, 0, method=method, **OPTS.get(method, {}))
    assert audit.found == []
    assert torch.isfinite(r.map).all()


def test_masks_keep_tensors_on_the_model_device(tiny, x):
    from core.perturbation.masks import extremal_perturbation, meaningful_perturbation

    with PretendDevice() as audit:
        extremal_perturbation(tiny, x, 0, iterations=3)
        meaningful_perturbation(tiny, x, 0, iterations=3)
    assert audit.found == []


def test_a_planted_cpu_is_caught(tiny, x, monkeypatch):
    """The check fails on a hidden .cpu() in a technique and on a factory without device= (planted here)."""
    import core.attribution.smoothgrad as sg

    real = sg.combine
    monkeypatch.setattr(sg, "combine", lambda *a: real(*a).cpu())
    with PretendDevice(roots=(CORE, __file__)) as audit:
        attribute(tiny, x, 0, method="smoothgrad", samples=2)
    assert audit.found and all(".cpu()" in f or "mixes a CPU tensor" in f for f in audit.found)
    assert any("test_device_placement.py" in f and ".cpu()" in f for f in audit.found)

    monkeypatch.setattr(sg, "combine", lambda *a: real(*a) + torch.zeros(a[0].shape))
    with PretendDevice(roots=(CORE, __file__)) as audit:
        attribute(tiny, x, 0, method="smoothgrad", samples=2)
    assert any("test_device_placement.py" in f and "add mixes a CPU tensor" in f for f in audit.found)


def test_attack_keeps_tensors_on_the_model_device(tiny, x):
    from core.attack.attacks import attack

    with PretendDevice() as audit:
        attack(tiny, x, 0, steps=2, random_start=True)
    assert audit.found == []
