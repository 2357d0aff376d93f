"""Shared fixtures: tiny seeded models for mechanics, the embedded model where real semantics are needed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import timm
import torch

os.environ.setdefault("LENS_OFFLINE", "1")  # never wait on the network in tests
# AppTest runs the pages in this process: freezing its heap would keep a test's reference cycles from the
# collector (tests/test_jobs.py freezes a child process instead)
os.environ.setdefault("LENS_GC_FREEZE", "0")
# results spilled by the app's store go to a fresh directory: a test never reads another run's results
os.environ.setdefault("LENS_CACHE_DIR", __import__("tempfile").mkdtemp(prefix="lens-test-cache-"))
# choices measured on the machine (core.profile) go to a folder of this run, shared with the servers tests start
os.environ.setdefault("LENS_PROFILE_DIR", __import__("tempfile").mkdtemp(prefix="lens-test-profile-"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "assets" / "samples"


def lock_is_free(model) -> bool:
    """Whether another thread can take ``model.lock`` (i.e. the work that held it released it)."""
    import threading

    free: list[bool] = []

    def probe():
        got = model.lock.acquire(timeout=5)
        free.append(got)
        if got:
            model.lock.release()

    worker = threading.Thread(target=probe)
    worker.start()
    worker.join()
    return free == [True]


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


def make_tiny(arch: str = "convnext_atto", seed: int = 0, **kwargs):
    """A random-init timm model wrapped as a LensModel (ImageNet normalisation), seeded."""
    from core.model import wrap

    torch.manual_seed(seed)
    net = timm.create_model(arch, pretrained=False, **kwargs)
    return wrap(net, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), name=arch, input_size=64)


@pytest.fixture(scope="session")
def convnext_atto():
    """convnext_atto, random init (seed 0), 10 classes: ConvNeXt mechanics (GELU, LayerNorm) at low cost."""
    return make_tiny("convnext_atto", num_classes=10)


@pytest.fixture(scope="session")
def resnet_tiny():
    """A small ReLU/BatchNorm net (resnet18, 10 classes, random init)."""
    return make_tiny("resnet18", num_classes=10)


@pytest.fixture(scope="session")
def embedded():
    """The real ImageNet EfficientNet-Lite0 (loads in about a second)."""
    from core.model import load_model

    return load_model("embedded")


@pytest.fixture(scope="session")
def cat_input(embedded):
    from core.images import load_image, preprocess

    return preprocess(load_image(SAMPLES / "chelsea.jpg"), embedded.card.data_config)


@pytest.fixture
def app(monkeypatch):
    """An AppTest of the whole dashboard, offline.

    AppTest resets ``PagesManager.uses_pages_directory`` before every run and re-detects our ``pages/`` folder,
    so reruns would take Streamlit's old folder-based multipage path instead of running dashboard.py (the real
    server clears the flag for good once ``st.navigation`` is called). Keep it off, as the server does.
    """
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
    monkeypatch.setenv("LENS_OFFLINE", "1")
    monkeypatch.chdir(ROOT)
    return AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)


@pytest.fixture(scope="module")
def cli_loads_each_model_once():
    """Each model the CLI loads is built once for the module (the CLI would rebuild it on every command)."""
    import functools

    from core.cli import common

    original = common.load_model
    common.load_model = functools.lru_cache(maxsize=None)(original)
    yield
    common.load_model = original


def sample_photos_only(tmp_path: Path, monkeypatch, names) -> Path:
    """A fresh ``LENS_CACHE_DIR`` and ``core.images.SAMPLES`` holding only the sample photos ``names`` (a page's
    first view over a small, known set); returns that folder."""
    import shutil

    import core.images

    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    photos = tmp_path / "samples"
    photos.mkdir()
    for name in names:
        shutil.copy(SAMPLES / name, photos / name)
    monkeypatch.setattr(core.images, "SAMPLES", photos)
    return photos


@pytest.fixture
def fresh_profile(tmp_path, monkeypatch):
    """An empty folder of remembered machine choices (:mod:`core.profile`), nothing held in memory: for tests
    that fake a measurement."""
    from core import profile

    monkeypatch.setenv("LENS_PROFILE_DIR", str(tmp_path / "profile"))
    profile.forget()
    yield tmp_path / "profile"
    profile.forget()
