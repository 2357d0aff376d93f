"""The one caching module: every page reaches core through the functions here.

Models are ``st.cache_resource`` (one object shared by all sessions and threads: core makes hook-based work
safe on it). Results are ``st.cache_data`` keyed by the model's fingerprint and the image's content hash, so
changing only a view option never recomputes. Arguments with a leading underscore are not hashed.
"""
from __future__ import annotations

import hashlib

import streamlit as st
import torch
from PIL import Image

from core import images as core_images
from core import predict as core_predict
from core.catalogue import LayerInfo, catalogue
from core.models import LensModel, load_model


@st.cache_resource(show_spinner=False, max_entries=4)
def get_model(name: str | None, weights: str | None) -> LensModel:
    """Load once per (name, weights) for the whole app. Raises ModelLoadError."""
    return load_model(name, weights)


def model_key(model: LensModel) -> str:
    return f"{model.card.arch}|{model.card.fingerprint}"


@st.cache_data(show_spinner=False, max_entries=64)
def decode_image(data: bytes, name: str) -> Image.Image:
    """Decoded RGB image (raises ImageError with a one-line reason)."""
    return core_images.load_image(data, name=name)


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@st.cache_data(show_spinner=False, max_entries=32)
def top_classes(_model: LensModel, model_key: str, _x: torch.Tensor, image_key: str, k: int = 5) -> list[dict]:
    """Top-k classes of one image ``_x`` (3, H, W) in [0, 1], as dicts (index, label, prob)."""
    return [c.as_dict() for c in core_predict.predict(_model, _x.unsqueeze(0), k=k)[0]]


@st.cache_data(show_spinner=False, max_entries=8)
def layers(_model: LensModel, model_key: str) -> list[LayerInfo]:
    return list(catalogue(_model))


# ----------------------------------------------------------------------- activation index (issue 5: pages/activation_index.py)

from core import activation_index as core_index  # noqa: E402  (section appended by the index page's owner)
from core.render import normalize_map as _normalize_map, overlay as _overlay  # noqa: E402


def index_directory(model: LensModel, folder: str) -> str:
    """Where the index of ``folder`` for ``model`` lives (``.lens-cache/index/...``)."""
    return str(core_index.default_directory(model, folder))


def index_stamp(directory: str) -> str | None:
    """Changes whenever the index is rewritten (its manifest's mtime); None when there is no index."""
    path = core_index.Path(directory) / core_index.MANIFEST
    return f"{path.stat().st_mtime_ns}" if path.exists() else None


@st.cache_resource(show_spinner=False, max_entries=8)
def open_activation_index(directory: str, stamp: str) -> core_index.ActivationIndex:
    """The opened index, shared (read-only) by all sessions. Raises IndexCorrupt."""
    return core_index.open_index(directory)


def build_activation_index(_model: LensModel, folder: str, directory: str, layers: list[str], top_k: int,
                           progress) -> core_index.BuildResult:
    """Build or extend (not cached: an action). Raises ValueError, ImageError."""
    return core_index.build_index(_model, folder, directory, layers=layers, top_k=top_k, batch_size=16,
                                  progress=progress)


@st.cache_data(show_spinner=False, max_entries=512)
def patch_crop(directory: str, stamp: str, image_id: int, box: tuple[int, int, int, int]) -> Image.Image:
    """One patch cut from its original image (raises IndexStale when the file changed)."""
    index = open_activation_index(directory, stamp)
    return index.load(image_id).crop(box)


@st.cache_data(show_spinner=False, max_entries=64)
def patch_context(_model: LensModel, model_key: str, directory: str, stamp: str, image_id: int, layer: str,
                  channel: int) -> tuple:
    """(model input with the channel's map overlaid (H, W, 3) uint8, original image) for one indexed image."""
    index = open_activation_index(directory, stamp)
    original = index.load(image_id)
    inp = core_images.preprocess(original, _model.card.data_config)
    heat = core_index.channel_map(_model, inp.batch, layer, channel)
    return _overlay(inp.tensor, _normalize_map(heat.clamp(min=0)), alpha=0.55), original


@st.cache_data(show_spinner=False, max_entries=32)
def channels_excited(_model: LensModel, model_key: str, _x: torch.Tensor, image_key: str, directory: str,
                     stamp: str, layer: str, n: int) -> list:
    """Reverse lookup: the ChannelHits of ``layer`` that image ``_x`` (3, H, W) excites most."""
    index = open_activation_index(directory, stamp)
    return list(index.excited_by(_model, _x.unsqueeze(0), layer, n))


# ----------------------------------------------------------------------- perturbation, similarity, Net2Vec (issue 6: pages/perturbation.py, pages/similarity.py, pages/net2vec.py)

from core import net2vec as core_net2vec  # noqa: E402  (section appended by issue 6's owner)
from core import perturbation as core_perturbation  # noqa: E402
from core import similarity as core_similarity  # noqa: E402


@st.cache_data(show_spinner=False, max_entries=16)
def perturbation_masks(_model: LensModel, model_key: str, _x: torch.Tensor, image_key: str, target: int,
                       method: str, areas: tuple[float, ...], variant: str, perturbation: str, iterations: int,
                       _progress=None) -> core_perturbation.PerturbationResult:
    """Masks for one image ``_x`` (3, H, W) in [0, 1] (see core.perturbation.perturbation_masks)."""
    return core_perturbation.perturbation_masks(
        _model, _x.unsqueeze(0), target, method=core_perturbation.Method(method), areas=areas,
        variant=core_perturbation.Variant(variant), iterations=iterations,
        perturbation=core_perturbation.Perturbation(perturbation), progress=_progress)


@st.cache_data(show_spinner=False, max_entries=32)
def similarity_features(_model: LensModel, model_key: str, _x: torch.Tensor, image_key: str,
                        layer: str) -> core_similarity.LayerFeatures:
    """Unit-normalised features of one image at one layer: computed once, then every click is a dot product."""
    return core_similarity.layer_features(_model, _x, layer)


@st.cache_data(show_spinner=False, max_entries=8)
def net2vec_fits(_model: LensModel, model_key: str, paths: tuple[str, ...], layer: str, concepts: str,
                 size: int, iterations: int, _progress=None) -> tuple:
    """(fits, errors) for the images at ``paths``; ``concepts`` is 'colors' or a mask folder.

    Raises ImageError (mask folder), ValueError (no concepts)."""
    good, errors = [], []
    for p in paths:
        try:
            good.append((p, core_images.preprocess(core_images.load_image(p), _model.card.data_config)))
        except core_images.ImageError as e:
            errors.append(str(e))
    if not good:
        raise core_images.ImageError("no readable images in the folder")
    x = torch.stack([inp.tensor for _, inp in good])
    if concepts == core_net2vec.ConceptSource.COLORS.value:
        masks = core_net2vec.color_concepts(x, size=size)
    else:
        masks = core_net2vec.load_concept_masks(concepts, [p for p, _ in good], size=size)
    fits = core_net2vec.net2vec(_model, x, layer, masks, size=size, iterations=iterations, progress=_progress)
    return fits, tuple(p for p, _ in good), tuple(errors)


# ------------------------------------------------------------ feature visualisation, filters, CAM, LRP (issue 7)

@st.cache_data(show_spinner=False, max_entries=32)
def feature_vis(_model: LensModel, model_key: str, layer: str, channels: tuple[int, ...], objective: str,
                settings_key: tuple, _progress=None):
    """A :class:`core.featurevis.Visualization`, cached per (model, layer, channels, objective, settings).

    One channel: ``visualize``; two channels: ``interpolate`` (frames = ``settings.batch``).
    """
    from core import featurevis

    settings = featurevis.Settings(*settings_key)
    if len(channels) == 2:
        return featurevis.interpolate(_model, layer, channels[0], channels[1], frames=settings.batch,
                                      objective=objective, settings=settings, progress=_progress)
    return featurevis.visualize(_model, layer, channels[0], objective=objective, settings=settings,
                                progress=_progress)


@st.cache_data(show_spinner=False, max_entries=32)
def channel_map(_model: LensModel, model_key: str, _x: torch.Tensor, image_key: str, layer: str, channel: int):
    """One channel's activation map (h, w) on one image ``_x`` (3, H, W) in [0, 1]."""
    from core.catalogue import find_layer
    from core.featurevis import layer_output

    with torch.no_grad():
        return layer_output(_model, _x.unsqueeze(0), find_layer(_model, layer))[0, channel].float()


@st.cache_data(show_spinner=False, max_entries=8)
def filter_views(_model: LensModel, model_key: str) -> dict:
    """First-layer kernels, depthwise layer names and per-layer weight statistics."""
    from core import filters

    try:
        first = filters.first_layer_kernels(_model)
    except ValueError:
        first = None
    return {"first": first, "depthwise": filters.depthwise_layers(_model), "stats": filters.weight_stats(_model)}


@st.cache_data(show_spinner=False, max_entries=32)
def cam_lrp(_model: LensModel, model_key: str, _x: torch.Tensor, image_key: str, method: str, target: int | None,
            options: tuple = ()):
    """CAM (``method="cam"``) or LRP (``"lrp"``, options ``(rule, first, epsilon)``) for one image."""
    from core.cam import cam
    from core.lrp import lrp

    if method == "cam":
        return cam(_model, _x.unsqueeze(0), target)
    rule, first, epsilon = options
    return lrp(_model, _x.unsqueeze(0), target, rule=rule, first=first, epsilon=epsilon)
