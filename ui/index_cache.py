"""The activation index's caching: where an index lives, its opened form shared by every session, its crops,
the sample photos' index built once in the background, and the reverse lookup. Pages reach core's index here,
as they reach the rest through :mod:`ui.cache`."""
from __future__ import annotations

import threading
from pathlib import Path

import streamlit as st
import torch
from PIL import Image

from core import images as core_images
from core import index as core_index
from core import serve as core_serve
from core.index import spec as index_spec
from core.model import LensModel
from ui.cache import results

def index_directory(model: LensModel, folder: str) -> str:
    """Where the index of ``folder`` for ``model`` lives (``.lens-cache/index/...``)."""
    return str(core_index.default_directory(model, folder))


def index_stamp(directory: str) -> str | None:
    """Changes whenever the index is rewritten (its manifest's mtime); None when there is no index."""
    path = Path(directory) / core_index.MANIFEST
    return f"{path.stat().st_mtime_ns}" if path.exists() else None


@st.cache_resource(show_spinner=False, max_entries=8)
def open_activation_index(directory: str, stamp: str) -> core_index.ActivationIndex:
    """The opened index, shared (read-only) by all sessions. Raises IndexCorrupt."""
    return core_index.open_index(directory)


@st.cache_data(show_spinner=False, max_entries=8)
def activation_index_summary(directory: str, stamp: str) -> core_index.IndexSummary:
    """Engine, size, build time and missing images of the index (one stat per image: cached per stamp)."""
    return core_index.summarize(open_activation_index(directory, stamp))


def build_activation_index(_model: LensModel, folder: str, directory: str, values: dict,
                           progress) -> core_index.BuildResult:
    """Build or extend (not cached: an action) with ``values`` of :data:`core.index.spec.BUILD` (those left out
    at their defaults). Raises ValueError, ImageError."""
    values = index_spec.BUILD.complete(values, index_spec.build_context(_model))
    return index_spec.run_build(_model, folder, values, progress=progress, directory=directory)


class Background:
    """Work started once for every session on its own thread; any visitor's page reads its progress."""

    def __init__(self, work) -> None:
        self.fraction, self.message, self.error = 0.0, "starting", ""
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(work,), name="lens-background", daemon=True).start()

    def progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message

    def _run(self, work) -> None:
        try:
            work(self.progress)
        except Exception as e:  # noqa: BLE001 - shown to whoever visits the page
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.done.set()


@st.cache_resource(show_spinner=False, max_entries=4)
def sample_index(_model: LensModel, model_key: str, folder: str) -> Background:
    """The Dataset-examples page's default index of ``folder`` (the sample photos) for ``_model``, built once in
    the background as a job of the app's scheduler (:func:`core.index.spec.warm_build`, as ``python -m core warm``
    builds it), started by the first visit; later visits follow its progress."""
    from core.index.passes import RELEVANCE_BATCH
    from core.parallel import default_workers

    def work(progress):
        def build(job, report):  # as many workers as the memory the scheduler granted holds LRP passes
            return index_spec.warm_build(_model, folder, progress=report,
                                         workers=max(1, min(default_workers(), job.batch // RELEVANCE_BATCH)))
        # LRP passes (the relevance ranking) of RELEVANCE_BATCH images on every worker at once: one sample's
        # estimate let it start beside heavy jobs and take the server over the hosted tier's memory cap
        return core_serve.scheduler().run(("index_build", model_key, folder), build, progress=progress,
                                          bytes_per_sample=core_serve.per_sample_bytes(_model, "gradient"),
                                          samples=RELEVANCE_BATCH * default_workers())
    return Background(work)


@st.cache_data(show_spinner=False, max_entries=512)
def patch_crop(directory: str, stamp: str, image_id: int, box: tuple[int, int, int, int]) -> Image.Image:
    """One patch cut from its original image (raises IndexStale when the file changed)."""
    index = open_activation_index(directory, stamp)
    return index.load(image_id).crop(box)


@st.cache_data(show_spinner=False, max_entries=64)
def patch_context(_model: LensModel, model_key: str, directory: str, stamp: str, image_id: int, layer: str,
                  channel: int) -> tuple:
    """(the channel's map (h, w), the model input (3, H, W) in [0, 1], original image) for one indexed image."""
    index = open_activation_index(directory, stamp)
    original = index.load(image_id)
    inp = core_images.preprocess(original, _model.card.data_config)
    return core_index.channel_map(_model, inp.batch, layer, channel), inp.tensor, original


def channels_excited(model: LensModel, model_key: str, x: torch.Tensor, image_key: str, directory: str,
                     stamp: str, layer: str) -> list:
    """Reverse lookup (:data:`core.index.spec.EXCITED` at ``layer``): the ChannelHits that image ``x``
    (3, H, W) excites most, kept in the result store under warm's key (one forward pass; survives a restart).
    Raises ValueError (another model's index)."""
    index = open_activation_index(directory, stamp)
    spec = index_spec.EXCITED
    values = spec.complete({"layer": layer}, index_spec.excited_context(index))
    key = spec.key(model_key, index_spec.excited_subject(image_key, index), values)
    return list(results().get_or_compute(key, lambda: spec.run(model, (x, index), values)))


def sample_patches(model: LensModel, layer: str, channel: int, n: int, by: str = "relevance") -> list[tuple] | None:
    """(Patch, crop) of the top ``n`` sample-photo patches of one channel from the index of the sample photos,
    ranked ``by`` relevance or activation (:data:`core.concepts.spec.EXAMPLES`), or None when that index was not
    built. Raises IndexCorrupt, IndexStale, ValueError (another model's index; NoRelevance: none kept)."""
    from core.concepts.spec import EXAMPLES

    directory = index_directory(model, str(core_images.SAMPLES))
    stamp = index_stamp(directory)
    if stamp is None:
        return None
    index = open_activation_index(directory, stamp)
    core_index.check_model(index, model)
    patches = EXAMPLES.run(model, (index, layer, channel, n), {"examples_by": by})
    return [(p, patch_crop(directory, stamp, p.image_id, p.box)) for p in patches]


def sample_index_ranked(model: LensModel, model_key: str) -> bool:
    """Whether the index of the sample photos is there with its relevance ranking; when it is missing, damaged
    or without it, the app's background build (:func:`sample_index`) is started (it builds with relevance)."""
    directory = index_directory(model, str(core_images.SAMPLES))
    stamp = index_stamp(directory)
    try:
        if stamp is not None and open_activation_index(directory, stamp).has_relevance:
            return True
    except core_index.IndexCorrupt:
        pass
    sample_index(model, model_key, str(core_images.SAMPLES))
    return False


