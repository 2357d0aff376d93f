"""Precompute the default views for a folder of images into the result store, so a demo opens instantly.

The keys are built by the same functions ``ui/cache.py`` uses (:func:`model_key`, :func:`content_key`,
:func:`attribution_key`, :meth:`core.spec.Technique.key`, :func:`images_key`), and the computations are the
``run_*`` functions both call, so the app
hits what ``python -m core warm`` wrote. Covered (``PAGES``): the Attribution page (its main view, SmoothGrad with
the page's default options, for the predicted class, and the "Compare methods" grid, each method with its default
options), the deletion/insertion curves under the main view (``faithfulness``), the Adversarial page (the default
PGD attack), the Perturbation-masks page (the default extremal masks for the predicted class), the
Feature-visualisation page (the default channel of the default layer: one per model, not per image), the
Similarity page (the default layer's features of each image and of the default second image), the Net2Vec page
(the default fit over the folder) and the Dataset-examples page (the default activation index of the folder,
built or extended in its own directory, :func:`core.index.default_directory`, not in the result store, left as
it is when complete; and the reverse lookup of each image against it at the layer the page opens on,
:data:`core.index.spec.EXCITED`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .attribution.base import NotApplicable
from .images import ImageError, list_images, load_image, preprocess
from .model.loading import LensModel
from .progress import Progress
from .keys import attribution_key, content_key, images_key, model_key  # noqa: F401 (the keys warm writes)
from .serve.store import ResultStore

PAGE_METHOD = "smoothgrad"                                                    # the Attribution page's default
GRID_METHODS = ("saliency", "smoothgrad", "guided-backprop", "gradcam")        # its "Compare methods" default


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
    ``errors`` one line each ({"image", "error"}), ``written`` one entry per result key ({"page", "image" (None
    for a per-model view), "view", "status": computed | present | copied}), ``seconds`` in total."""

    images: tuple[str, ...]
    computed: int
    present: int
    errors: tuple[dict, ...]
    seconds: float
    keys: tuple[tuple, ...] = field(default=(), repr=False)
    written: tuple[dict, ...] = field(default=(), repr=False)


# the pages whose default views warm covers besides the registered techniques' (faithfulness: the curves under
# the Attribution page's main view)
FIXED_PAGES = ("attribution", "faithfulness", "index")


def all_pages() -> tuple[str, ...]:
    """Every page ``warm`` can prepare: the fixed ones and those of the techniques that declare ``warm``."""
    from .techniques import TECHNIQUES

    extra = [t.page or t.name for t in TECHNIQUES.values() if t.warm]
    return tuple(dict.fromkeys((*FIXED_PAGES[:2], *extra, *FIXED_PAGES[2:])))


def warmed(pages: Sequence[str], subject: str) -> list:
    """The registered techniques with ``warm`` set, of ``subject``, whose page is among ``pages``."""
    from .techniques import TECHNIQUES

    return [t for t in TECHNIQUES.values() if t.warm and t.subject == subject and (t.page or t.name) in pages]


PAGES = all_pages()


def warm(model: LensModel, folder: str | Path, store: ResultStore, *, methods: Sequence[str] = GRID_METHODS,
         pages: Sequence[str] | None = None, progress: Progress | None = None,
         cancel: Callable[[], bool] | None = None) -> WarmResult:
    """Compute the default views of ``pages`` for every image in ``folder`` into ``store``.

    Attribution, for each image: every method in ``methods`` with its default options (the grid's key), and the
    page's main view (``smoothgrad`` with the page's options; the same result, stored under its own key without
    recomputing when the defaults agree). Adversarial and Perturbation masks: the page's default run for each
    image (for the predicted class). Faithfulness: the deletion/insertion curves of the page's main view (which
    is computed for them when ``attribution`` is not warmed). Similarity: each image's features at the default
    layer, and the default second image's (a sample photo). Techniques of the model alone (feature
    visualisation): the page's default view, once. The Net2Vec fit over the folder's images (searched
    recursively, as the page lists them): the page's default view, once. Index: the
    default activation index of the folder, built or extended (``written`` says "present" when it was complete,
    and its files are left untouched), and each image's reverse lookup against it at the layer the page opens on.
    Methods that do not apply to the model, and bad images, are recorded in ``errors``.
    """
    from .attribution.registry import REGISTRY, attribute
    from .model.predict import predict
    from .spec import canonical, model_context

    pages = all_pages() if pages is None else tuple(pages)

    unknown = [m for m in methods if m not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown method {', '.join(unknown)}; choose from {', '.join(REGISTRY)}")
    known = all_pages()
    unknown = [p for p in pages if p not in known]
    if unknown:
        raise ValueError(f"unknown page {', '.join(unknown)}; choose from {', '.join(known)}")
    started = time.perf_counter()
    paths = list_images(folder, recursive=False)
    mkey = model_key(model)
    counts = {"computed": 0, "present": 0}
    errors, keys, done, written = [], [], [], []

    def one(page: str, image: str | None, view: str, key: tuple, compute: Callable[[], object]):
        """Store one result (unless present); the value, or None when it does not apply."""
        keys.append(key)
        if key in store:
            counts["present"] += 1
            written.append({"page": page, "image": image, "view": view, "status": "present"})
            return store.get(key)
        try:
            value = store.get_or_compute(key, compute)
        except (NotApplicable, ValueError) as e:
            errors.append({"image": image or str(folder), "error": f"{page} {view}: {e}"})
            return None
        counts["computed"] += 1
        written.append({"page": page, "image": image, "view": view, "status": "computed"})
        return value

    for spec in (warmed(pages, "model") if paths else ()):  # once per model: the key names no image
        if cancel is not None and cancel():
            break
        values = spec.defaults(model_context(model))
        one(spec.page or spec.name, None, f"{spec.title}: {canonical(values)}", spec.key(mkey, None, values),
            lambda spec=spec, values=values: spec.run(model, None, values))
    folder_wide = warmed(pages, "folder") if paths else []
    if folder_wide:  # over the folder's images searched recursively, as the pages list them
        listed = [str(p) for p in list_images(folder)]
        listed_key = images_key(listed)
        for spec in folder_wide:
            if cancel is not None and cancel():
                break
            values = spec.defaults(model_context(model))
            one(spec.page or spec.name, None, f"{spec.title}: {canonical(values)}, {len(listed)} images",
                spec.key(mkey, listed_key, values), lambda spec=spec, values=values: spec.run(model, listed, values))
    opened = None  # the folder's index, for each image's reverse lookup
    if "index" in pages and paths and not (cancel is not None and cancel()):
        from .index import spec as index_spec

        built, complete = index_spec.warm_build(model, folder, cancel=cancel)
        counts["present" if complete else "computed"] += 1
        opened = built.index
        excited = index_spec.EXCITED.defaults(index_spec.excited_context(opened))
        written.append({"page": "index", "image": None, "status": "present" if complete else "computed",
                        "view": f"{len(opened)} images, layers {', '.join(opened.layers)}, top-{opened.top_k} "
                                f"({opened.directory})"})
        errors += [{"image": s["image"], "error": f"index: {s['error']}"} for s in built.skipped]
    if "similarity" in pages and paths:  # the page's default second image too (a sample photo)
        from .features.similarity_spec import SIMILARITY, SIMILARITY_OTHER
        from .images import SAMPLES

        other = SAMPLES / SIMILARITY_OTHER
        if other.is_file():  # when it is in the folder too, the loop below finds it present
            x_other = preprocess(load_image(other), model.card.data_config).tensor
            layer = SIMILARITY.defaults(model_context(model))
            one("similarity", str(other), f"{SIMILARITY.title} (the default second image): {canonical(layer)}",
                SIMILARITY.key(mkey, content_key(other.read_bytes()), layer),
                lambda: SIMILARITY.run(model, x_other, layer))
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
        jobs: list[tuple[str, dict]] = []
        if "attribution" in pages:
            jobs = [(m, {}) for m in methods]
            if PAGE_METHOD in methods:
                jobs.append((PAGE_METHOD, page_options(PAGE_METHOD, model)))
        steps = len(jobs) + len(warmed(pages, "image")) + sum(p in pages for p in ("faithfulness", "index"))
        step = 0

        def advance(what: str) -> None:
            nonlocal step
            step += 1
            if progress is not None:
                progress((i + step / max(1, steps)) / max(1, len(paths)), f"{path.name}: {what}")

        values: dict[str, object] = {}
        for method, options in jobs:
            key = attribution_key(mkey, ikey, method, target, options)
            defaults = {k: getattr(v, "value", v) for k, v in REGISTRY[method].keywords().items()}
            same_as_default = all(k in defaults and defaults[k] == v for k, v in options.items())
            view = f"{method} ({'page options' if options else 'default options'}), class {target}"
            if key not in store and same_as_default and method in values:  # the page's explicit defaults
                keys.append(key)
                store.put(key, values[method])
                written.append({"page": "attribution", "image": str(path), "view": view, "status": "copied"})
            else:
                value = one("attribution", str(path), view, key, lambda m=method, o=options: attribute(
                    model, inp.tensor.unsqueeze(0), target, method=m, **o))
                if value is not None:
                    values[method] = value
            advance(method)
        if "faithfulness" in pages:
            options = page_options(PAGE_METHOD, model)
            akey = attribution_key(mkey, ikey, PAGE_METHOD, target, options)
            amap = store.get(akey) if akey in keys else one(  # unless warmed above
                "attribution", str(path), f"{PAGE_METHOD} (page options), class {target}", akey,
                lambda: attribute(model, inp.tensor.unsqueeze(0), target, method=PAGE_METHOD, **options))
            if amap is not None:
                from .evaluation.spec import EVALUATION, MapSubject, curve_values, map_key

                curves = curve_values(model_context(model, target=target))
                one("faithfulness", str(path), f"{PAGE_METHOD} deletion/insertion, {curves['steps']} steps, "
                                               f"class {target}",
                    EVALUATION.key(mkey, map_key(mkey, ikey, PAGE_METHOD, target, options), curves),
                    lambda: EVALUATION.run(model, MapSubject(inp.tensor, target, PAGE_METHOD, options, amap.map[0]),
                                           curves))
            advance("deletion/insertion curves")
        if opened is not None:
            lookup = index_spec.EXCITED.key(mkey, index_spec.excited_subject(ikey, opened), excited)
            one("index", str(path), f"reverse lookup: the {excited['n']} channels of {excited['layer']} it excites "
                "most", lookup, lambda: index_spec.EXCITED.run(model, (inp.tensor, opened), excited))
            advance("reverse lookup")
        for spec in warmed(pages, "image"):
            values = spec.defaults(model_context(model, target=target))
            one(spec.page or spec.name, str(path), f"{spec.title}: {canonical(values)}",
                spec.key(mkey, ikey, values), lambda spec=spec, values=values: spec.run(model, inp.tensor, values))
            advance(spec.title)
        done.append(str(path))
    return WarmResult(tuple(done), counts["computed"], counts["present"], tuple(errors),
                      time.perf_counter() - started, tuple(keys), tuple(written))
