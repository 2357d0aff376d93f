"""Model loading: every weights source, the offline default, safe weight files, real predictions, threads."""
from __future__ import annotations

import os
import pickle
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import timm
import torch
from safetensors.torch import save_file

from core.model import hub
from core.model.finish import finish_model
from core.images import load_image, preprocess
from core.model import ModelLoadError, WeightsSource, load_model
from core.model.predict import predict

from tests.conftest import SAMPLES, make_tiny


def test_wrapper_owns_normalisation(convnext_atto):
    x = torch.rand(2, 3, 64, 64)
    expected = convnext_atto.net((x - convnext_atto.mean) / convnext_atto.std)
    assert torch.allclose(convnext_atto(x), expected)
    assert not any(p.requires_grad for p in convnext_atto.parameters())
    convnext_atto.train()
    assert not convnext_atto.training and not convnext_atto.net.training


def test_embedded_maps_every_tensor(embedded):
    assert embedded.card.weights is WeightsSource.EMBEDDED
    assert embedded.card.arch == "tf_efficientnet_lite0"
    assert len(embedded.net.state_dict()) == 296
    assert embedded.card.mean == (0.5, 0.5, 0.5) and embedded.card.interpolation == "bicubic"
    assert embedded.labels[282] == "tiger cat" and len(embedded.labels) == 1000


@pytest.mark.parametrize("photo, expected", [
    ("chelsea.jpg", {"tiger cat", "Egyptian cat", "tabby"}),
    ("coffee.jpg", {"espresso"}),
    ("opencv_squirrel_cls.jpg", {"fox squirrel"}),
])
def test_embedded_real_predictions(embedded, photo, expected):
    inp = preprocess(load_image(SAMPLES / photo), embedded.card.data_config)
    top = predict(embedded, inp.batch, k=3)[0]
    assert top[0].label in expected
    if photo == "coffee.jpg":
        assert top[0].prob > 0.9


def test_default_falls_back_to_embedded_offline(monkeypatch):
    monkeypatch.setenv("LENS_OFFLINE", "1")
    start = time.monotonic()
    model = load_model()
    assert model.card.name == "embedded" and model.card.notice and "cannot reach the Hugging Face hub" in model.card.notice
    assert time.monotonic() - start < 30  # loading only; the probe itself answers at once


@pytest.fixture
def silent_server():
    """A local TCP server that accepts connections and never answers: a hanging hub."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    srv.close()


def test_hub_probe_gives_up_on_a_hanging_server(monkeypatch, silent_server):
    monkeypatch.delenv("LENS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", silent_server)
    hub._probe_cache.clear()
    start = time.monotonic()
    assert hub.hub_reachable(timeout=0.5) is False
    assert time.monotonic() - start < 5  # a hang-guard, not a speed test: the probe must not block for long


def test_explicit_hub_model_offline_says_why(monkeypatch):
    monkeypatch.setenv("LENS_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="cannot reach the Hugging Face hub"):
        load_model("convnext_nano", "hub")


def test_unknown_model():
    with pytest.raises(ModelLoadError, match="unknown model"):
        load_model("not_a_model_xyz", "random")


def test_random_weights_are_seeded():
    a, b = load_model("convnext_atto", "random"), load_model("convnext_atto", "random")
    assert a.card.weights is WeightsSource.RANDOM
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_local_safetensors_and_pth_roundtrip(tmp_path):
    ref = load_model("convnext_atto", "random")
    torch.manual_seed(1)
    other = timm.create_model("convnext_atto")
    st_path, pth_path = tmp_path / "w.safetensors", tmp_path / "w.pth"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(st_path))
    torch.save({"state_dict": {f"module.{k}": v for k, v in other.state_dict().items()}}, pth_path)
    x = torch.rand(1, 3, 64, 64)
    for path in (st_path, pth_path):
        m = load_model("convnext_atto", str(path))
        assert m.card.weights is WeightsSource.FILE and m.card.fingerprint.startswith("sha256:")
        assert torch.allclose(m(x), other.eval()(m.normalise(x)), atol=1e-5)
        assert not torch.allclose(m(x), ref(x), atol=1e-3)  # the file's weights, not the seed-0 ones


def test_fine_tuned_head_size_is_read_from_the_file(tmp_path):
    net = timm.create_model("convnext_atto", num_classes=7)
    path = tmp_path / "seven.safetensors"
    save_file(net.state_dict(), str(path))
    m = load_model("convnext_atto", str(path))
    assert m.card.num_classes == 7 and m.label(3) == "class 3"


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {Payload.marker}",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    Payload.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": Payload()}, f)
    with pytest.raises(ModelLoadError, match="refused"):
        load_model("convnext_atto", str(path))
    assert not Payload.marker.exists()


@pytest.mark.parametrize("content, suffix, message", [
    (b"", ".safetensors", "empty"),
    (b"garbage" * 10, ".safetensors", "not a valid safetensors"),
    (b"garbage" * 10, ".pth", "refused w.pth: not a plain tensor checkpoint"),
    (b"PK\x03\x04" + b"\x00" * 40, ".pt", "not a readable PyTorch weights file"),
    (b"{}", ".json", "unsupported weights file type"),
])
def test_bad_weight_files(tmp_path, content, suffix, message):
    path = tmp_path / f"w{suffix}"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        load_model("convnext_atto", str(path))


def test_weights_of_another_architecture(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), str(path))
    with pytest.raises(ModelLoadError, match="does not fit") as err:
        load_model("convnext_atto", str(path))
    assert "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match="not found"):
        load_model("convnext_atto", str(tmp_path / "missing.safetensors"))


def test_threads_sharing_one_model_get_serial_results(embedded):
    photos = ["chelsea.jpg", "coffee.jpg", "opencv_baboon.jpg", "opencv_orange.jpg"]
    xs = [preprocess(load_image(SAMPLES / p), embedded.card.data_config).batch for p in photos]
    serial = [predict(embedded, x, k=5)[0] for x in xs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda i: predict(embedded, xs[i % 4], k=5)[0], range(16)))
    for i, result in enumerate(parallel):
        assert [c.index for c in result] == [c.index for c in serial[i % 4]]
        assert all(abs(a.prob - b.prob) < 1e-5 for a, b in zip(result, serial[i % 4]))


@pytest.fixture
def fake_hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding (random) convnext_atto weights under timm's hub id, as a download leaves it."""
    import huggingface_hub.constants

    hub_id = timm.models.get_pretrained_cfg("convnext_atto").hf_hub_id
    repo = tmp_path / ("models--" + hub_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    torch.manual_seed(3)
    net = timm.create_model("convnext_atto")
    save_file(net.state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("LENS_OFFLINE", "1")
    return net.eval()


def test_cached_hub_weights_load_offline(fake_hub_cache):
    model = load_model("convnext_atto", "hub")
    assert model.card.weights is WeightsSource.HUB and model.card.fingerprint.startswith("sha256:")
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(model(x), fake_hub_cache(model.normalise(x)), atol=1e-5)


def test_default_falls_back_when_the_download_fails(monkeypatch):
    def broken(name):
        raise OSError("connection reset by peer")
    monkeypatch.setattr(hub, "load_hub", broken)
    model = load_model()
    assert model.card.name == "embedded" and "connection reset by peer" in model.card.notice


def test_a_backbone_without_classifier_is_refused():
    with pytest.raises(ModelLoadError, match="no classifier head"):
        finish_model(timm.create_model("convnext_atto", num_classes=0), "convnext_atto.dinov3_lvd1689m",
                     WeightsSource.HUB, "hub", "x", None)
