"""Precompute the default views for a folder of images into the result store, so a demo opens instantly.

The keys are built by the same functions ``ui/cache.py`` uses (:func:`model_key`, :func:`content_key`,
:func:`attribution_key`), so the app hits what ``python -m core warm`` wrote. Covered today: the Attribution page
(its main view, SmoothGrad with the page's default options, for the predicted class, and the "Compare methods"
grid, each method with its default options). Other pages' default views are not warmed yet.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .attribution.base import NotApplicable
from .images import ImageError, load_image, preprocess
from .model.loading import LensModel
from .result_store import ResultStore

Progress = Callable[[float, str], None]

PAGE_METHOD = "smoothgrad"                                                    # the Attribution page's default
GRID_METHODS = ("saliency", "smoothgrad", "guided-backprop", "gradcam")        # its "Compare methods" default
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def model_key(model: LensModel) -> str:
    """The model part of every result key: architecture and weights fingerprint."""
    return f"{model.card.arch}|{model.card.fingerprint}"


def content_key(data: bytes) -> str:
    """The image part of every result key: hash of the file's bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def attribution_key(model_key: str, image_key: str, method: str, target: int, options: dict) -> tuple:
    """Result-store key of one attribution (the Attribution page's key)."""
    return ("attribution", model_key, image_key, method, int(target), json.dumps(options, sort_keys=True, default=str))


def page_options(method: str, model: LensModel) -> dict:
    """The options the Attribution page's widgets start with for ``method``: generated from the method's option
    spec, as the page's widgets are (``MethodSpec.initial``)."""
    from .attribution.registry import REGISTRY
    from .catalogue import default_layer

    spec = REGISTRY[method]
    return spec.initial({"side": int(model.card.input_size[-1])},
                        default_layer(model).name if spec.layer else None)


@dataclass(frozen=True)
class WarmResult:
    """What :func:`warm` did: ``images`` warmed, ``computed`` results, ``present`` ones already stored,
    ``errors`` one line each ({"image", "error"}), ``seconds`` in total."""

    images: tuple[str, ...]
    computed: int
    present: int
    errors: tuple[dict, ...]
    seconds: float
    keys: tuple[tuple, ...] = field(default=(), repr=False)


def folder_images(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted. Raises ValueError for a missing folder."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{folder} is not a folder")
    return sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def warm(model: LensModel, folder: str | Path, store: ResultStore, *, methods: Sequence[str] = GRID_METHODS,
         progress: Progress | None = None, cancel: Callable[[], bool] | None = None) -> WarmResult:
    """Compute the default attribution views of every image in ``folder`` into ``store``.

    For each image: every method in ``methods`` with its default options (the grid's key), and the page's main
    view (``smoothgrad`` with the page's options; the same result, stored under its own key without recomputing
    when the defaults agree). Methods that do not apply to the model are recorded in ``errors``.
    """
    from .attribution.registry import REGISTRY, attribute
    from .model.predict import predict

    unknown = [m for m in methods if m not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown method {', '.join(unknown)}; choose from {', '.join(REGISTRY)}")
    started = time.perf_counter()
    paths = folder_images(folder)
    mkey = model_key(model)
    computed = present = 0
    errors, keys, done = [], [], []
    for i, path in enumerate(paths):
        if cancel is not None and cancel():
            break
        data = path.read_bytes()
        try:
            inp = preprocess(load_image(data, name=path.name), model.card.data_config)
        except ImageError as e:
            errors.append({"image": str(path), "error": str(e)})
            continue
        ikey = content_key(data)
        target = predict(model, inp.tensor.unsqueeze(0), k=1)[0][0].index
        jobs = [(m, {}) for m in methods]
        if PAGE_METHOD in methods:
            jobs.append((PAGE_METHOD, page_options(PAGE_METHOD, model)))
        values: dict[str, object] = {}
        for j, (method, options) in enumerate(jobs):
            key = attribution_key(mkey, ikey, method, target, options)
            keys.append(key)
            defaults = {k: getattr(v, "value", v) for k, v in REGISTRY[method].keywords().items()}
            same_as_default = all(k in defaults and defaults[k] == v for k, v in options.items())
            if key in store:
                present += 1
            elif same_as_default and method in values:  # the page's explicit defaults: the same result
                store.put(key, values[method])
            else:
                try:
                    values[method] = store.get_or_compute(key, lambda: attribute(
                        model, inp.tensor.unsqueeze(0), target, method=method, **options))
                    computed += 1
                except (NotApplicable, ValueError) as e:
                    errors.append({"image": str(path), "error": f"{method}: {e}"})
            if progress is not None:
                progress((i + (j + 1) / len(jobs)) / max(1, len(paths)), f"{path.name}: {method}")
        done.append(str(path))
    return WarmResult(tuple(done), computed, present, tuple(errors), time.perf_counter() - started, tuple(keys))
