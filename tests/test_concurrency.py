"""Hook-based techniques beside plain forwards on ONE shared model, as two Streamlit sessions run them (issue 12).

Each test runs a hook-based technique in one thread while another thread loops the plain-forward work every
session does (prediction, SmoothGrad, a PGD attack) on the same embedded model, then checks that both sides
equal the serial results, that nothing raised and that no hook is left.

"Equal" means bitwise (``torch.equal`` / ``np.array_equal``; timings excluded): every result here, serial or
concurrent, is computed on a thread with ONE intra-op thread and the same batch composition, so the float
arithmetic is the same operation sequence. A hook of the other thread firing in our pass (the defect: it raised
``_Done`` or recorded our tensors) or a module state it changed would show as an exception or a different value.
"""
from __future__ import annotations

import dataclasses
import shutil
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.hooks import hook_count
from tests.conftest import SAMPLES

SIZE = 96          # the embedded EfficientNet-Lite0 at low resolution: ~10 ms a forward pass
MIDDLE = "blocks.3"
IGNORED = {"seconds", "elapsed"}


@pytest.fixture(scope="module", autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # also what threads started later get


@pytest.fixture(scope="module")
def x(cat_input):
    return F.interpolate(cat_input.batch, size=(SIZE, SIZE), mode="bilinear", align_corners=False,
                         antialias=True).clamp(0, 1)


def on_one_thread(fn):
    """``fn()`` on a fresh thread with one intra-op thread (how every result here is computed)."""
    out: dict = {}

    def run():
        torch.set_num_threads(1)
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            out["error"] = e
    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def same(a, b, where="result") -> None:
    """Bitwise equality of nested results (dataclasses, dicts, sequences, tensors, arrays), timings ignored."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            if f.name not in IGNORED:
                same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, where
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                      and torch.equal(a.nan_to_num(), b.nan_to_num())), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k not in IGNORED:
                same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            same(u, v, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# ------------------------------------------------------------------- the other session: plain forwards only

def plain_work(model, x):
    from core.attack.attacks import attack
    from core.attribution.smoothgrad import smoothgrad
    from core.model.predict import predict

    return {
        "predict": lambda: predict(model, x),
        "smoothgrad": lambda: smoothgrad(model, x, 281, samples=4, batch_size=4, seed=1, precision="fp32").map,
        "attack": lambda: attack(model, x, eps=2 / 255, steps=2, early_stop=False).adversarial,
    }


def beside_plain_forwards(model, x, technique, *, repeats: int = 2, min_plain: int = 3):
    """Run ``technique()`` ``repeats`` times in one thread while another loops the plain work; compare both
    to the serial results. Returns how many plain calls ran."""
    plain = plain_work(model, x)
    serial_plain = {name: on_one_thread(fn) for name, fn in plain.items()}
    serial = on_one_thread(technique)

    done = threading.Event()
    plain_results: list = []
    plain_errors: list = []

    def loop_plain():
        torch.set_num_threads(1)
        try:
            while not done.is_set() or len(plain_results) < min_plain:
                for name, fn in plain.items():
                    plain_results.append((name, fn()))
        except BaseException as e:  # noqa: BLE001
            plain_errors.append(e)

    other = threading.Thread(target=loop_plain)
    other.start()
    try:
        results = [on_one_thread(technique) for _ in range(repeats)]
    finally:
        done.set()
        other.join()
    assert not plain_errors, f"the plain-forward session raised {plain_errors[0]!r}"
    for i, r in enumerate(results):
        same(r, serial, f"technique run {i}")
    for name, r in plain_results:
        same(r, serial_plain[name], name)
    assert hook_count(model) == 0
    return len(plain_results)


# ---------------------------------------------------------------------------------------------- the tests

def test_hooks_fire_in_their_owners_forward_and_backward_only():
    """Forward, pre-forward, full-backward and tensor hooks of the owner fire in its own passes (autograd runs
    CPU backward hooks on the caller's thread); a pass from another thread sees none of them."""
    from torch import nn

    from core.hooks import hooks_on

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2))
    x = torch.randn(3, 4, requires_grad=True)
    expected = net(x).detach()
    fired: list[str] = []
    other: dict = {}

    def other_session():
        xi = x.detach().clone().requires_grad_(True)
        y = net(xi)
        y.sum().backward()
        other["y"], other["grad"] = y.detach(), xi.grad

    with hooks_on(net) as hooks:
        hooks.forward_pre(net[0], lambda _m, _i: fired.append("pre"))
        hooks.forward(net[0], lambda _m, _i, o: (fired.append("forward"), o.register_hook(
            lambda g: fired.append("tensor")))[0])
        hooks.forward(net[2], lambda _m, _i, o: o * 0)  # would zero the other session's logits
        net(x).sum().backward()
        mine = sorted(fired)
        t = threading.Thread(target=other_session)
        t.start()
        t.join()
        assert sorted(fired) == mine  # nothing fired for the other thread's forward and backward
    assert mine == ["forward", "pre", "tensor"]
    assert torch.equal(other["y"], expected) and other["grad"].abs().sum() > 0
    assert hook_count(net) == 0


def test_layer_capture_beside_prediction_loop(embedded, x):
    """The reported defect: a layer capture (Similarity, Net2Vec, dataset examples) and predict in two threads."""
    from core.catalogue import find_layer, layer_outputs
    from core.model.predict import predict

    info = find_layer(embedded, MIDDLE)
    serial_pred = on_one_thread(lambda: predict(embedded, x))
    serial_feat = on_one_thread(lambda: layer_outputs(embedded, x, [info]))
    stop, errors, preds = threading.Event(), [], []

    def capture_loop():
        torch.set_num_threads(1)
        try:
            while not stop.is_set():
                same(layer_outputs(embedded, x, [info]), serial_feat, "capture")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    a = threading.Thread(target=capture_loop)
    a.start()
    try:
        def predictions():
            for _ in range(30):
                preds.append(predict(embedded, x))
        on_one_thread(predictions)
    finally:
        stop.set()
        a.join()
    assert not errors, repr(errors[0])
    for p in preds:
        same(p, serial_pred, "predict")
    assert len(preds) == 30 and hook_count(embedded) == 0


def test_gradcam(embedded, x):
    from core.attribution.gradcam import gradcam

    beside_plain_forwards(embedded, x, lambda: gradcam(embedded, x, 281, layer=MIDDLE))


def test_guided_gradcam(embedded, x):
    from core.attribution.gradcam import guided_gradcam

    beside_plain_forwards(embedded, x, lambda: guided_gradcam(embedded, x, 281, layer=MIDDLE))


def test_cam(embedded, x):
    from core.attribution.cam import cam

    beside_plain_forwards(embedded, x, lambda: cam(embedded, x, 281))


def test_lrp(embedded, x):
    from core.attribution.lrp import lrp

    beside_plain_forwards(embedded, x, lambda: lrp(embedded, x, 281))


def test_two_lrp_sessions_share_the_prepared_copy(embedded, x):
    """LRP's rule hooks live on one prepared copy per model: two LRP sessions at once must not mix rules."""
    from core.attribution.lrp import lrp

    serial = {rule: on_one_thread(lambda r=rule: lrp(embedded, x, 281, rule=r)) for rule in ("epsilon", "zplus")}
    out: dict = {}

    def run(rule):
        torch.set_num_threads(1)
        out[rule] = [lrp(embedded, x, 281, rule=rule) for _ in range(3)]

    threads = [threading.Thread(target=run, args=(r,)) for r in serial]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rule, results in out.items():
        for r in results:
            same(r, serial[rule], rule)
    assert not torch.equal(serial["epsilon"].raw, serial["zplus"].raw)  # the two rules do differ


def test_feature_visualisation(embedded, x):
    from core.features.featurevis import Settings, visualize

    settings = Settings(steps=4, size=64, pad=4, jitter=2)
    beside_plain_forwards(embedded, x, lambda: visualize(embedded, MIDDLE, 3, settings=settings))


def test_similarity(embedded, x):
    from core.features.similarity import layer_features, similarity_map

    def technique():
        feats = layer_features(embedded, x, MIDDLE)
        return feats, similarity_map(feats, (2, 3))
    beside_plain_forwards(embedded, x, technique)


def test_net2vec(embedded, x):
    from core.features.net2vec import colour_concepts, net2vec

    batch = torch.cat([x, x.flip(-1)])
    concepts = dict(list(colour_concepts(batch, size=24).items())[:2])
    assert concepts
    beside_plain_forwards(embedded, x, lambda: net2vec(embedded, batch, MIDDLE, concepts, size=24, iterations=5))


def test_perturbation_masks(embedded, x):
    from core.perturbation.masks import perturbation_masks

    beside_plain_forwards(embedded, x, lambda: perturbation_masks(embedded, x, 281, iterations=3))


def test_index_build_on_the_shared_model(embedded, x, tmp_path):
    from core.index.build import build_index

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "rocket.jpg"):
        shutil.copy(SAMPLES / name, folder / name)
    runs = iter(range(100))

    def technique():
        r = build_index(embedded, folder, tmp_path / f"index{next(runs)}", layers=[MIDDLE], top_k=2, batch_size=2,
                        workers=1)
        return [i.path for i in r.index.images], r.index._arrays
    beside_plain_forwards(embedded, x, technique, repeats=1)


def test_a_failing_hook_technique_leaves_other_sessions_alone(embedded, x):
    """A job that raises inside its hooked pass leaves no hook, and the other thread never sees its hook."""
    from core.hooks import hooks_on

    class Boom(Exception):
        pass

    def failing():
        with hooks_on(embedded) as hooks:
            def explode(*_):
                time.sleep(0.001)
                raise Boom("injected")
            hooks.forward(embedded.layer(MIDDLE), explode)
            embedded(x)

    def technique():
        with pytest.raises(Boom, match="injected"):
            failing()
        return hook_count(embedded)
    beside_plain_forwards(embedded, x, technique, repeats=3)
