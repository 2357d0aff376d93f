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
