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
