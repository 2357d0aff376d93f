"""The caching module: every page reaches core through the functions here (the activation index's through
:mod:`ui.index_cache`).

Models are ``st.cache_resource`` (one object shared by all sessions and threads: core makes hook-based work
safe on it). Results are ``st.cache_data`` keyed by the model's fingerprint and the image's content hash, so
changing only a view option never recomputes. Arguments with a leading underscore are not hashed.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st
import torch
from PIL import Image

from core import images as core_images
from core import serve as core_serve
from core import keys as core_keys
from core.attribution.registry import REGISTRY, attribute
from core.catalogue import LayerInfo, catalogue
from core.errors import dataset as core_error_data
from core.features import filters as core_filters
from core import index as core_index
from core.model import LensModel, load_model
from core.model import labels as core_labels
from core.model import predict as core_predict
from core.spec import Technique, model_context


@st.cache_resource(show_spinner=False, max_entries=4)
def get_model(name: str | None, weights: str | None) -> LensModel:
    """Load once per (name, weights) for the whole app. Raises ModelLoadError."""
    return load_model(name, weights)


@st.cache_resource(show_spinner=False)
def process_tuning() -> dict[str, str]:
    """Once per server process, called by dashboard.py after the sidebar has loaded the first model (the start-up
    objects are all there then): malloc arenas capped, then the heap frozen (core.serve.tune_process); what was
    done, as model-card rows."""
    return core_serve.tune_process()


model_key = core_keys.model_key  # keys built in core, so `python -m core warm` writes what the pages read


@st.cache_data(show_spinner=False, max_entries=64)
def decode_image(data: bytes, name: str) -> Image.Image:
    """Decoded RGB image (raises ImageError with a one-line reason)."""
    return core_images.load_image(data, name=name)


content_key = core_keys.content_key


@st.cache_data(show_spinner=False, max_entries=32)
def top_classes(_model: LensModel, model_key: str, _x: torch.Tensor, image_key: str, k: int = 5) -> list[dict]:
    """Top-k classes of one image ``_x`` (3, H, W) in [0, 1], as dicts (index, label, prob)."""
    return [c.as_dict() for c in core_predict.predict(_model, _x.unsqueeze(0), k=k)[0]]


@st.cache_data(show_spinner=False, max_entries=8)
def layers(_model: LensModel, model_key: str) -> list[LayerInfo]:
    return list(catalogue(_model))


# Results of long computations with progress. st.cache_data records every element call made inside a cached function and replays it on a hit, which fails
# for a progress bar or preview created outside it (CacheReplayClosureError). Long computations that report
# progress therefore keep their results in one shared store (st.cache_resource: one per app), keyed as
# st.cache_data would key them, and compute outside the lock so one session's long run never blocks another's hit.
# The store (core.serve.store) is bounded in bytes and spills to LENS_CACHE_DIR, so results survive a restart.

Results = core_serve.ResultStore


@st.cache_resource(show_spinner=False)
def results() -> Results:
    """The app's store of long results (attacks, attributions, SmoothGrad panels), sized by the environment; the
    scheduler sheds it (to disk) when a job does not fit the memory budget."""
    store = Results.from_env()
    core_serve.scheduler().shed_from(store)
    return store


def server_load(model: LensModel) -> dict[str, str]:
    """Model-card rows: memory budget and use, jobs, and the measured memory per image ."""
    status = core_serve.scheduler().status()
    mb = 2**20
    return {
        **process_tuning(),
        "memory": f"{core_serve.rss_bytes() / mb:.0f} MB in use of a {status['memory_budget'] / mb:.0f} MB budget "
                  "(LENS_MEMORY_MB)",
        "memory shed": f"{status['memory_shed'] / mb:.1f} MB of stored results dropped from memory to fit jobs "
                       f"({status['memory_sheds']} times; "
                       + ("kept on disk)" if results().directory is not None else "recomputed when asked for)"),
        "jobs": f"{status['running']} running (at most {status['max_jobs']}, on {status['threads']} of "
                f"{status['cores']} cores), {status['queued']} queued",
        "memory per image": f"{core_serve.per_sample_bytes(model) / mb:.0f} MB with gradients, "
                            f"{core_serve.per_sample_bytes(model, 'forward') / mb:.0f} MB forward only (measured)",
    }


def _long(key: tuple, progress, model: LensModel, compute, *, samples: int = 1, preview=None, whole: bool = False):
    """The stored result, or ``compute(progress, batch)`` (``compute(progress, batch, preview)`` when a
    ``preview`` is given) run as a job of the app's scheduler (core.serve): queued behind other sessions' jobs
    ("queued, N ahead" on the progress bar), computed once for identical requests, on a worker thread at a lower
    CPU priority (the pages stay responsive) whose progress and previews are drawn by this script thread, stopped
    within about a second (core.serve: the script thread draws at least once a second, and the job's passes check
    every 0.25 s, see ``scheduled``) when the session reruns (Stop, a changed input) or ends (a closed tab);
    nothing stored on failure or stop."""
    def queued(ahead: int) -> None:
        if progress is not None:
            progress(0.0, f"queued, {ahead} ahead" if ahead else "queued: waiting for a free slot")

    def scheduled(job, report):
        last = [0.0, "running"]

        def noted(fraction, message):
            last[:] = fraction, message
            report(fraction, message)
        # between progress reports (a batch can take seconds) the last report is repeated from inside the
        # passes every 0.25 s: a report is where a stopped job (Stop, a changed input, a closed tab) ends
        with core_serve.heartbeat(model, lambda: report(*last)):
            if preview is None:
                return compute(noted, job.batch)
            return compute(noted, job.batch, job.relay(preview))

    def run():
        return core_serve.scheduler().run(
            key, scheduled, progress=progress, wait=queued,
            bytes_per_sample=core_serve.per_sample_bytes(model), samples=samples, on_worker=_with_script_context,
            whole=whole)
    return results().get_or_compute(key, run)


def _with_script_context(thread) -> None:
    """Give a job's worker thread this session's script context: what the job reads of Streamlit (session
    state, st.cache_data) works there as on the script thread; it draws only through relayed callbacks."""
    from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

    add_script_run_ctx(thread, get_script_run_ctx(suppress_warning=True))


def model_input(model: LensModel, model_key: str, path: str) -> core_images.ModelInput:
    """The image file at ``path`` as ``model`` sees it (3, H, W) in [0, 1], kept until the file changes.

    Raises ImageError."""
    try:
        stamp = Path(path).stat().st_mtime_ns
    except OSError:
        stamp = None  # load_image names the problem
    return _model_input(model, model_key, path, stamp)


@st.cache_data(show_spinner=False, max_entries=64)
def _model_input(_model: LensModel, model_key: str, path: str, stamp: int | None) -> core_images.ModelInput:
    return core_images.preprocess(core_images.load_image(path), _model.card.data_config)


# ----------------------------------------------------------------------------- techniques of core.techniques

def context(model: LensModel, target: int | None = None) -> dict:
    """:func:`core.spec.model_context` of ``model`` (what declared defaults and ranges depend on)."""
    return model_context(model, target=target)


def technique(spec: Technique, model: LensModel, model_key: str, subject, subject_key, values: dict,
              progress=None, preview=None):
    """The result of ``spec`` run on ``subject`` with ``values``, kept under ``spec.key`` (the key
    ``python -m core warm`` writes), computed as a job of the app's scheduler with progress (and a preview where
    the technique gives one)."""
    batched = spec.takes_batch

    def compute(progress, batch, preview=None):
        extra = {"preview": preview} if preview is not None else {}
        if batched:
            extra["batch"] = batch
        return spec.run(model, subject, values, progress=progress, **extra)
    # a technique without a batch takes its declared samples at once: all of them fit, or it waits
    return _long(spec.key(model_key, subject_key, values), progress, model, compute,
                 samples=spec.samples_for(values), preview=preview, whole=not batched)


# --------------------------------------------------------------------------------------------------- Net2Vec

@st.cache_data(show_spinner=False, max_entries=16)
def _images_key(paths: tuple[str, ...], stamps: tuple) -> tuple:
    """core.keys.images_key (content hashes), hashed again only when a file's size or mtime changes."""
    return core_keys.images_key(paths)


def images_key(paths: tuple[str, ...]) -> tuple:
    """The subject key of a folder-wide technique over the images at ``paths`` (:func:`core.keys.images_key`,
    the key ``python -m core warm`` writes), its hashes recomputed only for files whose size or mtime changed."""
    stamps = []
    for p in paths:
        try:
            info = Path(p).stat()
            stamps.append((info.st_size, info.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return _images_key(tuple(paths), tuple(stamps))


# ------------------------------------------------------------------------ feature visualisation, filters

@st.cache_data(show_spinner=False, max_entries=32)
def channel_map(_model: LensModel, model_key: str, _x: torch.Tensor, image_key: str, layer: str,
                channel: int) -> torch.Tensor:
    """One channel's activation map (h, w) on one image ``_x`` (3, H, W) in [0, 1]."""
    return core_index.channel_map(_model, _x.unsqueeze(0), layer, channel)


@st.cache_data(show_spinner=False, max_entries=8)
def filter_views(_model: LensModel, model_key: str) -> dict:
    """First-layer kernels, depthwise layer names and per-layer weight statistics."""
    try:
        first = core_filters.first_layer_kernels(_model)
    except ValueError:
        first = None
    return {"first": first, "depthwise": core_filters.depthwise_layers(_model),
            "stats": core_filters.weight_stats(_model)}


@st.cache_data(show_spinner=False, max_entries=32)
def depthwise_kernels(_model: LensModel, model_key: str, layer: str):
    """The depthwise kernels of ``layer`` as tiles (see core.features.filters.depthwise_kernels)."""
    return core_filters.depthwise_kernels(_model, layer)


# ------------------------------------------------------------------------------------------- attribution

def attribution(model: LensModel, model_key: str, x: torch.Tensor, image_key: str, method: str, target: int,
                options: dict, progress=None, preview=None):
    """:class:`core.attribution.Attribution` of one image ``x`` (3, H, W) in [0, 1]; raises NotApplicable.

    Keyed by model, image, method, target and options, so changing only the view is instant. ``progress``
    gets (fraction, message); ``preview(map, fraction)`` (SmoothGrad only) sees the map refine per batch.
    """
    key = core_keys.attribution_key(model_key, image_key, method, target, options)
    spec = REGISTRY[method]
    samples = spec.gradient_passes_at_once(options)
    batched = "batch_size" in spec.keywords()

    def compute(progress, fits, preview=None):  # the scheduler lowers the batch when memory is short
        lowered = {"batch_size": fits} if batched and fits < samples else {}
        extra = {"preview": preview} if preview is not None else {}
        return attribute(model, x.unsqueeze(0), int(target), method=method, progress=progress,
                         **{**options, **lowered}, **extra)
    return _long(key, progress, model, compute, samples=samples,
                 preview=preview if spec.preview and preview is not None else None)


# ------------------------------------------------------------------------ error analysis (pages/error_analysis.py)

@st.cache_resource(show_spinner=False, max_entries=8)
def labelled_model(_model: LensModel, model_key: str, labels: tuple[str, ...]) -> LensModel:
    """``_model`` under the class names ``labels`` (a weight-sharing copy; raises LabelsError on a bad count)."""
    return core_labels.with_labels(_model, labels, "the class-names file")


def folder_stamp(folder: str) -> str:
    """Changes when the labelled folder (or CSV) gains, loses or changes a file."""
    return core_error_data.stamp(folder)


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(path: str, stamp: str, size: int = 224) -> Image.Image:
    """A small copy of one labelled image (raises ImageError)."""
    img = core_images.load_image(path)
    img.thumbnail((size, size))
    return img
