"""Techniques keep their tensors on the model's device: caught without a GPU.

``PretendDevice`` is a ``TorchFunctionMode`` under which every tensor *reports* a device other than the CPU
(``cuda:0``) while really living on the CPU, so a technique takes its GPU code path here. The mode records, with
the ``core/`` line that asked for it, every tensor moved to the CPU on purpose (``.cpu()``, ``.to("cpu")``,
``device="cpu"``) and everything that would fail on a real GPU: an operation that mixes a CPU tensor with a
device tensor, or ``.numpy()`` of a device tensor. CPU tensors are followed through every operation: a factory
without ``device=`` (``torch.zeros(...)``), ``torch.from_numpy`` and a ``torch.Generator`` on the CPU make CPU
tensors, which are fine as host-side bookkeeping (window orders, jitter offsets, a kernel built once and then
moved) and are caught as soon as one meets the model's tensors without ``.to(device)``. The few places that
legitimately bring results back to the CPU for display, or keep host-side bookkeeping there, are allowed by name
(``ALLOWED``, each with its reason). ``torch.from_numpy`` (which a TorchFunctionMode does not see) is wrapped while
the mode is on; module-level tensors of ``core/`` count as CPU tensors, and a Parameter lives where its data does.

Covered: every registered attribution method, the mask methods, the attack, feature visualisation and the filter
views, Net2Vec, similarity overlays, the activation index, error analysis and the faithfulness/sanity evaluations.
The new cases give their input as a CPU tensor (as ``preprocess`` makes it), so a technique must move it.

The meta device cannot do this: the techniques read values (``.item()``, the target's probability, extremal's
selection), which meta tensors do not have.
"""
from __future__ import annotations

import contextlib
import sys
import weakref
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from core.attribution.registry import REGISTRY, attribute
from core.memo import PerModel
from tests.conftest import make_tiny

ROOT = Path(__file__).resolve().parent.parent
CORE = str(ROOT / "core")
TORCH = str(Path(torch.__file__).parent)
PRETEND = torch.device("cuda", 0)

FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn, torch.randint,
             torch.randperm, torch.arange, torch.linspace, torch.logspace, torch.eye, torch.tensor,
             torch.fft.fftfreq, torch.fft.rfftfreq}

# (file, function): why a CPU placement is right there. Nothing else in core/ may put a tensor on the CPU.
ALLOWED = {
    ("core/attribution/registry.py", "attribute"): "results come back to the CPU for display",
    ("core/perturbation/masks.py", "_to_cpu"): "mask results come back to the CPU for display",
    ("core/perturbation/masks.py", "_optimise"): "the preview masks go to the CPU for the page",
    ("core/attack/attacks.py", "_to_cpu"): "attack results come back to the CPU for display",
    ("core/attack/attacks.py", "quantize_8bit"): "the 8-bit check rounds as the page's PNG does, on the CPU",
    ("core/features/featurevis.py", "_to_cpu"): "the visualisations come back to the CPU for display",
    ("core/features/filters.py", "_kernels"): "the kernel tiles come back to the CPU for display",
    ("core/features/net2vec.py", "_to_cpu"): "a concept's weights and masks come back to the CPU for display",
    ("core/features/similarity.py", "_to_cpu"): "the similarity map comes back to the CPU for display",
    ("core/index/build.py", "channel_map"): "the activation map comes back to the CPU for display",
    ("core/index/passes.py", "forward_partials"): "a batch's (N, C) maxima leave the device: the top-k is host-side "
                                                 "bookkeeping (numpy, merged and written to disk)",
    ("core/index/query.py", "excited_by"): "the image's (C,) maxima are ranked against the index's numpy statistics",
    ("core/model/identity.py", "weights_fingerprint"): "hashes the weights' bytes on the host (a fingerprint)",
    ("core/errors/evaluate.py", "_predict"): "probabilities go to numpy for the prediction cache and confusion matrix",
    ("core/errors/explain.py", "channel_maxima"): "(N, C) maxima go to numpy for the separation statistics",
    ("core/evaluation/curves.py", "pixel_order"): "the pixel order is a stable numpy sort of the map on the host",
    ("core/evaluation/road.py", "road"): "ROAD's imputation is a scipy sparse solve on the host; the imputed copies "
                                         "go back to the model's device",
    ("core/evaluation/pointing.py", "pointing"): "numpy statistics of a map already on the CPU for display",
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
        self._paused = False

    # where: the first frame outside torch and this file; None when that is not code we audit
    def _where(self, placement: bool) -> tuple[str, str, int] | None:
        f = sys._getframe(2)
        while f is not None and f.f_code.co_filename == __file__ and f.f_code.co_name in (
                "__torch_function__", "_record", "_where", "generator"):
            f = f.f_back
        if placement and f is not None and f.f_code.co_filename.startswith(TORCH):
            return None  # torch's own CPU bookkeeping (e.g. the optimiser's step counter), not a technique's
        while f is not None and f.f_code.co_filename.startswith(TORCH):
            f = f.f_back
        if f is None or not f.f_code.co_filename.startswith(self.roots):
            return None
        return f.f_code.co_filename, f.f_code.co_name, f.f_lineno

    def _record(self, what: str, placement: bool = True) -> bool:
        """Record a CPU placement (or, ``placement`` False, a mix); True when allowed or outside the audited code."""
        where = self._where(placement)
        if where is None or self._paused:
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

    def on_device(self, t: torch.Tensor) -> bool:
        """Whether ``t`` would be on the model's device (a result must come back to the CPU)."""
        return not self.on_host(t)

    @contextlib.contextmanager
    def paused(self):
        """Placements made inside are followed but not recorded (set-up a case needs from another technique)."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def host(self, t: torch.Tensor) -> torch.Tensor:
        """A copy of ``t`` that really is on the CPU (an input as ``preprocess`` gives it to a technique)."""
        out = t.detach().clone()
        self.mark(out)
        return out

    def __enter__(self):
        mode = self
        # tensors made when core/ was imported (module constants) live on the CPU
        for name, module in list(sys.modules.items()):
            if name == "core" or name.startswith("core."):
                for value in vars(module).values():
                    if isinstance(value, torch.Tensor):
                        self.mark(value)
        self._parameter_new = torch.nn.Parameter.__new__

        def parameter(cls, data=None, requires_grad=True):  # a Parameter lives where its data does
            p = mode._parameter_new(cls, data, requires_grad)
            if data is not None and mode.on_host(data):
                mode.mark(p)
            return p

        torch.nn.Parameter.__new__ = staticmethod(parameter)

        def generator(device=None):  # a CPU generator only makes CPU tensors (followed like any other)
            gen = mode._generator(device="cpu")
            if device is None or mode._is_cpu(device):
                mode._cpu_generators[id(gen)] = weakref.ref(gen)
            return gen

        torch.Generator = generator  # noise generators must be made on the model's device
        self._from_numpy = torch.from_numpy

        def from_numpy(array):  # not seen by a TorchFunctionMode: wrapped here; numpy arrays live on the CPU
            out = mode._from_numpy(array)
            mode.mark(out)
            return out

        torch.from_numpy = from_numpy
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Generator = self._generator
        torch.from_numpy = self._from_numpy
        torch.nn.Parameter.__new__ = self._parameter_new
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if getattr(func, "__self__", None) is torch.Tensor.device:  # the property getter
            return torch.device("cpu") if self.on_host(args[0]) else PRETEND
        if getattr(func, "__self__", None) is torch.Tensor.data and func.__name__ == "__set__":
            out = func(*args, **kwargs)  # ``t.data = other``: t now lives where other does
            self.mark(args[0], self.on_host(args[1]))
            return out
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
        if func is torch.Tensor.cpu:
            self._record(".cpu()")
            out = func(*args, **kwargs).view_as(args[0])
            self.mark(out)
            return out
        if func is torch.Tensor.cuda:
            return args[0].view_as(args[0])
        if func is torch.Tensor.numpy and not self.on_host(args[0]):
            self._record(".numpy() of a tensor on the model's device (fails on a GPU)", False)
        if func is torch.Tensor.to:
            devs = [a for a in args[1:] if isinstance(a, (str, torch.device))]
            if devs:
                if self._is_cpu(devs[0]):
                    to_host = True
                    self._record(".to('cpu')")
                args = tuple("cpu" if a is devs[0] else a for a in args)
            elif "device" in kwargs and not to_host:
                pass
            else:  # .to(dtype) follows its source; .to(other) goes where ``other`` is
                others = [a for a in args[1:] if isinstance(a, torch.Tensor)]
                to_host = self.on_host(others[0] if others else args[0])
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
                self._record(f"{getattr(func, '__name__', func)} mixes a CPU tensor with the model's device", False)
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


# precision: auto on a GPU times the device (below, with the GPU's own calls stood in)
OPTS = {"smoothgrad": {"samples": 4, "converge": 0.5, "precision": "fp32"}, "integrated-gradients": {"steps": 4},
        "occlusion": {"window": 16, "stride": 16}}


@pytest.mark.parametrize("method", [m for m in REGISTRY if m not in ("rollout", "grad-rollout")])  # a CNN here
def test_attribution_keeps_tensors_on_the_model_device(tiny, x, method):
    with PretendDevice() as audit:
        r = attribute(tiny, x, 0, method=method, **OPTS.get(method, {}))
    assert audit.found == []
    assert torch.isfinite(r.map).all()


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # autocast("cuda") on this machine: off, as intended
def test_auto_precision_times_the_gpu_precisions_on_the_model_device(tiny, x, monkeypatch):
    import core.attribution.smoothgrad as sg

    timed = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(sg, "_synchronize", lambda device: timed.append(device.type))
    monkeypatch.setattr(sg, "_measured", PerModel())
    with PretendDevice() as audit:
        r = attribute(tiny, x, 0, method="smoothgrad", samples=2)
    assert audit.found == []
    # fp32 and fp16, each warmed up and timed three times, synchronised before and after every run
    assert timed == ["cuda"] * 16 and r.options["precision"] in ("fp32", "fp16")


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
        attribute(tiny, x, 0, method="smoothgrad", samples=2, precision="fp32")
    assert audit.found and all(".cpu()" in f or "mixes a CPU tensor" in f for f in audit.found)
    assert any("test_device_placement.py" in f and ".cpu()" in f for f in audit.found)

    monkeypatch.setattr(sg, "combine", lambda *a: real(*a) + torch.zeros(a[0].shape))
    with PretendDevice(roots=(CORE, __file__)) as audit:
        attribute(tiny, x, 0, method="smoothgrad", samples=2, precision="fp32")
    assert any("test_device_placement.py" in f and "add mixes a CPU tensor" in f for f in audit.found)


def test_attack_keeps_tensors_on_the_model_device(tiny, x):
    from core.attack.attacks import attack

    with PretendDevice() as audit:
        attack(tiny, x, 0, steps=2, random_start=True)
    assert audit.found == []


# ------------------------------------------------------------------ features, index, error analysis, evaluation
# Inputs are given as the pages give them (``preprocess`` makes CPU tensors): each technique must move them to
# the model's device itself and return its results on the CPU.

def _images(folder: Path, n: int, size=(40, 30)) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(n)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _serial(model, fn, items, *, workers=None):
    """core.parallel.ordered_map in the calling thread (a TorchFunctionMode is per thread)."""
    replica = model.replica()
    return (fn(replica, item) for item in items)


def _featurevis(model, x, tmp_path, audit, monkeypatch):
    from core.features.featurevis import Objective, Settings, interpolate, visualize

    s = Settings(steps=2, size=64, batch=2, diversity=0.1)  # 64 px: a half-size step, then one at full size
    for r in (visualize(model, "stages.1", 0, settings=s),
              visualize(model, "", 1, objective=Objective.LOGIT, settings=Settings(steps=1, size=32)),
              interpolate(model, "stages.1", 0, 1, frames=2, settings=Settings(steps=1, size=32))):
        assert not audit.on_device(r.images)


def _filters(model, x, tmp_path, audit, monkeypatch):
    from core.features.filters import depthwise_kernels, depthwise_layers, first_layer_kernels, mosaic, weight_stats

    for k in (first_layer_kernels(model), depthwise_kernels(model, depthwise_layers(model)[0])):
        assert not audit.on_device(k.tiles) and not audit.on_device(k.weights)
        mosaic(k.tiles)
    assert weight_stats(model)


def _net2vec(model, x, tmp_path, audit, monkeypatch):
    from core.features.net2vec import colour_concepts, net2vec

    xs = audit.host(torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2)))
    concepts = colour_concepts(xs, size=16, min_fraction=0.0)
    fits = net2vec(model, xs, "stages.1", dict(list(concepts.items())[:2]), size=16, iterations=5)
    assert all(not audit.on_device(f.predicted) and not audit.on_device(f.weights) for f in fits)


def _net2vec_subsampled(model, x, tmp_path, audit, monkeypatch):
    from core.features.net2vec import fit_concept, layer_activations

    xs = audit.host(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)))
    acts = layer_activations(model, xs, "stages.1", size=16)
    masks = audit.host(torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(4)) > 0.7)
    fit = fit_concept(acts, masks, iterations=5, max_pixels=100)  # masks from files: on the CPU
    assert not audit.on_device(fit.predicted)


def _similarity(model, x, tmp_path, audit, monkeypatch):
    from core.features.similarity import layer_features, similarity_map

    query = layer_features(model, audit.host(x), "stages.1")
    other = layer_features(model, audit.host(x.flip(-1)), "stages.1")
    for sim in (similarity_map(query, (1, 2)), similarity_map(query, (0, 0), other)):
        assert not audit.on_device(sim.map)


def _index(model, x, tmp_path, audit, monkeypatch):
    import core.index.build as build
    from core.index import build_index, channel_map

    monkeypatch.setattr(build, "ordered_map", _serial)
    _images(tmp_path / "imgs", 5)
    result = build_index(model, tmp_path / "imgs", tmp_path / "idx", layers=["stages.1", "stages.3"], top_k=2,
                         batch_size=2, workers=1)
    assert len(result.index) == 5 and result.index.top("stages.1", 0)
    assert result.index.excited_by(model, audit.host(x), "stages.3", n=3)
    assert not audit.on_device(channel_map(model, audit.host(x), "stages.1", 0))


def _labelled(model, tmp_path):
    for label in ("0", "1"):
        _images(tmp_path / "labelled" / label, 3)
    return tmp_path / "labelled"


def _errors_evaluate(model, x, tmp_path, audit, monkeypatch):
    from core.errors.evaluate import evaluate

    ev = evaluate(model, _labelled(model, tmp_path), cache_dir=tmp_path / "cache", batch_size=4)
    assert len(ev.images) == 6 and ev.probs.shape == (6, 10)


def _errors_explain(model, x, tmp_path, audit, monkeypatch):
    from core.errors.explain import contrastive, explain_mistake

    maps = explain_mistake(model, audit.host(x), 1, 0, methods={"gradcam": {}})
    assert len(maps.maps) == 3
    assert not audit.on_device(contrastive(model, audit.host(x), 2, 0, method="saliency").map)


def _errors_separate(model, x, tmp_path, audit, monkeypatch):
    import dataclasses

    import numpy as np

    from core.errors.evaluate import evaluate
    from core.errors.explain import separating_channels

    with audit.paused():  # the evaluation is its own case: here only its rows are needed
        ev = evaluate(model, _labelled(model, tmp_path), use_cache=False)
    ev = dataclasses.replace(ev, true=np.zeros(6, np.int64), predicted=np.array([1, 1, 0, 0, 0, 1], np.int64))
    sep = separating_channels(model, ev, 0, 1, "stages.1", n=3)
    assert len(sep.channels) == 3


def _evaluation(model, x, tmp_path, audit, monkeypatch):
    from core.evaluation import evaluate

    small = audit.host(x[0, :, :32, :32])  # 32 px: ROAD's imputation and the cascade stay cheap
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:20, 8:20] = True
    ev = evaluate(model, small, 0, method="saliency", steps=2, mask=mask.numpy(), batch_size=5)
    assert ev.curves and ev.road and ev.randomisation and ev.pointing and not ev.skipped
    assert not audit.on_device(ev.map) and not audit.on_device(ev.randomisation.maps)
    given = evaluate(model, small, None, values=ev.map.numpy(), metrics=("deletion",), steps=2)
    assert given.curves


TECHNIQUES = {"featurevis": _featurevis, "filters": _filters, "net2vec": _net2vec,
              "net2vec-subsampled": _net2vec_subsampled, "similarity": _similarity, "index": _index,
              "errors-evaluate": _errors_evaluate, "errors-explain": _errors_explain,
              "errors-separate": _errors_separate, "evaluation": _evaluation}


@pytest.mark.parametrize("technique", list(TECHNIQUES))
def test_technique_keeps_tensors_on_the_model_device(tiny, x, tmp_path, monkeypatch, technique):
    with PretendDevice() as audit:
        TECHNIQUES[technique](tiny, x, tmp_path, audit, monkeypatch)
    assert audit.found == []


def test_a_planted_cpu_in_a_covered_technique_is_caught(tiny, x, monkeypatch):
    """A ``.cpu()`` on a layer's output, and an input left on the CPU, are caught in the similarity overlay."""
    import core.features.similarity as sim

    real = sim.layer_outputs
    monkeypatch.setattr(sim, "layer_outputs", lambda *a, **k: {n: t.cpu() for n, t in real(*a, **k).items()})
    with PretendDevice(roots=(CORE, __file__)) as audit:
        sim.layer_features(tiny, audit.host(x), "stages.1")
    assert any("test_device_placement.py" in f and ".cpu()" in f for f in audit.found)

    monkeypatch.setattr(sim, "layer_outputs", real)
    monkeypatch.setattr(sim, "model_device", lambda _model: torch.device("cpu"))  # the input is not moved
    with PretendDevice() as audit:
        sim.layer_features(tiny, audit.host(x), "stages.1")
    assert any("core/model/wrapper.py" in f and "mixes a CPU tensor" in f for f in audit.found)
