"""Precompute the default views for a folder of images into the result store, so a demo opens instantly.

The keys are built by the same functions ``ui/cache.py`` uses (:func:`model_key`, :func:`content_key`,
:func:`attribution_key`, :meth:`core.spec.Technique.key`, :func:`mask_key`, :func:`featurevis_key`,
:func:`similarity_key`, :func:`net2vec_key`), and the computations are the ``run_*`` functions both call, so the app
hits what ``python -m core warm`` wrote. Covered (``PAGES``): the Attribution page (its main view, SmoothGrad with
the page's default options, for the predicted class, and the "Compare methods" grid, each method with its default
options), the deletion/insertion curves under the main view (``faithfulness``), the Adversarial page (the default
PGD attack), the Perturbation-masks page (the default extremal masks for the predicted class), the
Feature-visualisation page (the default channel of the default layer: one per model, not per image), the
Similarity page (the default layer's features of each image and of the default second image), the Net2Vec page
(the default fit over the folder) and the Dataset-examples page (the default activation index of the folder,
built or extended in its own directory, :func:`core.index.default_directory`, not in the result store, left as
it is when complete; and the reverse lookup of each image against it at the layer the page opens on,
:func:`excited_key`).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from .attribution.base import NotApplicable
from .images import ImageError, load_image, preprocess
from .model.loading import LensModel
from .result_store import ResultStore

Progress = Callable[[float, str], None]

PAGE_METHOD = "smoothgrad"                                                    # the Attribution page's default
GRID_METHODS = ("saliency", "smoothgrad", "guided-backprop", "gradcam")        # its "Compare methods" default
PAGE_AREAS = (0.05, 0.1, 0.2)                      # the Perturbation page's default extremal areas (one batch)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def model_key(model: LensModel) -> str:
    """The model part of every result key: architecture, weights fingerprint and class names (they are part of
    named results)."""
    from .model.labels import labels_digest

    return f"{model.card.arch}|{model.card.fingerprint}|{labels_digest(model.labels)}"


def content_key(data: bytes) -> str:
    """The image part of every result key: hash of the file's bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def attribution_key(model_key: str, image_key: str, method: str, target: int, options: dict) -> tuple:
    """Result-store key of one attribution (the Attribution page's key)."""
    return ("attribution", model_key, image_key, method, int(target), json.dumps(options, sort_keys=True, default=str))


@dataclass(frozen=True)
class MaskSettings:
    """One perturbation-mask run: values of core.perturbation.masks' enums; ``areas`` sorted."""

    target: int
    method: str
    areas: tuple[float, ...]
    variant: str
    perturbation: str
    iterations: int
    converge: bool = False  # stop once the masks hold still; ``iterations`` at most


def mask_key(model_key: str, image_key: str, settings: MaskSettings) -> tuple:
    """Result-store key of one perturbation-mask run (the Perturbation-masks page's key)."""
    return ("perturbation", model_key, image_key, settings)


def featurevis_key(model_key: str, layer: str, channels: tuple[int, ...], objective: str, settings) -> tuple:
    """Result-store key of one feature visualisation (the Feature-visualisation page's key)."""
    return ("feature_vis", model_key, layer, tuple(channels), objective, settings)


def page_masks(target: int) -> MaskSettings:
    """The Perturbation-masks page's initial settings for class ``target``: extremal, preserve, blur, areas
    5/10/20 %, at most TorchRay's 800 steps with the convergence stop."""
    from .perturbation.masks import TORCHRAY_ITERATIONS

    return MaskSettings(int(target), "extremal", PAGE_AREAS, "preserve", "blur", TORCHRAY_ITERATIONS, True)


def page_featurevis(model: LensModel) -> tuple[str, tuple[int, ...], str, object]:
    """(layer, channels, objective, settings) the Feature-visualisation page starts with: channel 0 of the default
    layer, the channel objective, ui/forms.py ``featurevis_settings``'s widget defaults at the model's size."""
    from .catalogue import default_layer
    from .features.featurevis import Settings

    settings = replace(Settings(), steps=128, size=int(model.card.input_size[1]), seed=0, batch=1, lr=0.05,
                       diversity=0.0, rotate=10.0, fourier=True)
    return default_layer(model).name, (0,), "channel", settings


SIMILARITY_OTHER = "coffee.jpg"             # the Similarity page's default second image (a sample photo)
NET2VEC_ITERATIONS = 300                    # the Net2Vec page's optimisation steps


def similarity_key(model_key: str, image_key: str, layer: str) -> tuple:
    """Result-store key of one image's unit-normalised features at ``layer`` (the Similarity page's key)."""
    return ("similarity", model_key, image_key, layer)


@dataclass(frozen=True)
class Net2VecSettings:
    """One Net2Vec fit: ``concepts`` is ConceptSource.COLORS' value or a mask folder; ``size`` the grid side."""

    layer: str
    concepts: str
    size: int
    iterations: int


def images_key(paths: Sequence[str | Path]) -> tuple[tuple[str, str], ...]:
    """The images of a folder-wide result: (absolute path, content hash) of each file in order (a file that
    cannot be read gets an empty hash: the computation names the problem)."""
    from .hashing import file_sha256

    out = []
    for p in paths:
        try:
            digest = file_sha256(p)[:16]
        except OSError:
            digest = ""
        out.append((str(Path(p).resolve()), digest))
    return tuple(out)


def net2vec_key(model_key: str, images: tuple[tuple[str, str], ...], settings: Net2VecSettings) -> tuple:
    """Result-store key of one Net2Vec fit over ``images`` (:func:`images_key`; the Net2Vec page's key)."""
    return ("net2vec", model_key, images, settings)


def page_net2vec(model: LensModel) -> Net2VecSettings:
    """The Net2Vec page's initial settings: the default layer, colour terms, the default grid, 300 steps."""
    from .catalogue import default_layer
    from .features.net2vec import DEFAULT_SIZE, ConceptSource

    return Net2VecSettings(default_layer(model).name, ConceptSource.COLORS.value, DEFAULT_SIZE, NET2VEC_ITERATIONS)


EXCITED_N = 6  # channels the Dataset-examples page's reverse lookup lists


def excited_key(model_key: str, image_key: str, index, layer: str, n: int) -> tuple:
    """Result-store key of the reverse lookup of one image against an opened activation ``index`` (the
    Dataset-examples page's key): the index is named by its data file's hash (the statistics the z-scores use),
    so a rebuilt or extended index is a new key and an untouched one keeps it across restarts."""
    return ("excited", model_key, image_key, index.manifest["data"]["sha256"], layer, int(n))


def page_excited_layer(index) -> str:
    """The layer the Dataset-examples page opens an index on (:func:`core.index.view.opening_choice`)."""
    from .index.view import opening_choice

    return opening_choice(index.layers, index.input_size[0])


def run_excited(model: LensModel, x, index, layer: str, n: int) -> tuple:
    """The :class:`core.index.ChannelHit` s of ``layer`` that one image ``x`` (3, H, W) in [0, 1] excites most
    (``ActivationIndex.excited_by``). Raises ValueError (an index of another model)."""
    return tuple(index.excited_by(model, x.unsqueeze(0), layer, n))


def run_similarity(model: LensModel, x, layer: str):
    """:class:`core.features.similarity.LayerFeatures` of one image ``x`` (3, H, W) in [0, 1] at ``layer``."""
    from .features.similarity import layer_features

    return layer_features(model, x, layer)


def run_net2vec(model: LensModel, paths: Sequence[str], settings: Net2VecSettings,
                progress: Progress | None = None) -> tuple:
    """(fits, used paths (absolute), errors (one line per unreadable image)) of Net2Vec over the images at
    ``paths``. Raises ImageError (no readable image, mask folder), ValueError (no concepts)."""
    from .features import net2vec as n2v

    good, errors = [], []
    for p in paths:
        try:
            good.append((str(Path(p).resolve()), preprocess(load_image(p), model.card.data_config)))
        except ImageError as e:
            errors.append(str(e))
    if not good:
        raise ImageError("no readable images in the folder")
    import torch

    x = torch.stack([inp.tensor for _, inp in good])
    s = settings
    if s.concepts == n2v.ConceptSource.COLORS.value:
        masks = n2v.colour_concepts(x, size=s.size)
    else:
        masks = n2v.load_concept_masks(s.concepts, [p for p, _ in good], size=s.size)
    fits = n2v.net2vec(model, x, s.layer, masks, size=s.size, iterations=s.iterations, progress=progress)
    return fits, tuple(p for p, _ in good), tuple(errors)


def warm_index(model: LensModel, folder: str | Path, progress: Progress | None = None, cancel=None):
    """Build (or extend, or find complete) the Dataset-examples page's default index of ``folder``: the default
    layers, top-k 16, in :func:`core.index.default_directory` (atomic writes, one builder at a time: see
    :func:`core.index.build_index`). Returns (BuildResult, whether a complete index was there already)."""
    from .index import DEFAULT_TOP_K, MANIFEST, build_index, default_directory, default_layers

    directory = default_directory(model, folder)
    existed = (directory / MANIFEST).exists()
    result = build_index(model, folder, directory, layers=list(default_layers(model)), top_k=DEFAULT_TOP_K,
                         batch_size=16, progress=progress, cancel=cancel)
    return result, existed and result.added == 0 and not result.notes


def run_masks(model: LensModel, x, settings: MaskSettings, progress: Progress | None = None, preview=None):
    """:class:`core.perturbation.masks.PerturbationResult` of one image ``x`` (3, H, W) in [0, 1]; ``preview``
    as in :func:`core.perturbation.masks.perturbation_masks`."""
    from .perturbation import masks

    s = settings
    return masks.perturbation_masks(model, x.unsqueeze(0), s.target, method=masks.MaskMethod(s.method),
                                    areas=s.areas, variant=masks.Variant(s.variant), iterations=s.iterations,
                                    perturbation=masks.Perturbation(s.perturbation), converge=s.converge,
                                    progress=progress, preview=preview)


def run_featurevis(model: LensModel, layer: str, channels: tuple[int, ...], objective: str, settings,
                   progress: Progress | None = None):
    """One channel: ``visualize``; two channels: ``interpolate`` (frames = ``settings.batch``)."""
    from .features import featurevis

    if len(channels) == 2:
        return featurevis.interpolate(model, layer, channels[0], channels[1], frames=settings.batch,
                                      objective=objective, settings=settings, progress=progress)
    return featurevis.visualize(model, layer, channels[0], objective=objective, settings=settings,
                                progress=progress)


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
FIXED_PAGES = ("attribution", "faithfulness", "perturbation", "featurevis", "similarity", "net2vec", "index")


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


def folder_images(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted. Raises ValueError for a missing folder."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{folder} is not a folder")
    return sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def warm(model: LensModel, folder: str | Path, store: ResultStore, *, methods: Sequence[str] = GRID_METHODS,
         pages: Sequence[str] | None = None, progress: Progress | None = None,
         cancel: Callable[[], bool] | None = None) -> WarmResult:
    """Compute the default views of ``pages`` for every image in ``folder`` into ``store``.

    Attribution, for each image: every method in ``methods`` with its default options (the grid's key), and the
    page's main view (``smoothgrad`` with the page's options; the same result, stored under its own key without
    recomputing when the defaults agree). Adversarial and Perturbation masks: the page's default run for each
    image (for the predicted class). Faithfulness: the deletion/insertion curves of the page's main view (which
    is computed for them when ``attribution`` is not warmed). Similarity: each image's features at the default
    layer, and the default second image's (a sample photo). Feature visualisation and the Net2Vec fit over the
    folder's images (searched recursively, as the page lists them): the page's default view, once. Index: the
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
    paths = folder_images(folder)
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

    if "featurevis" in pages and paths and not (cancel is not None and cancel()):
        layer, channels, objective, settings = page_featurevis(model)
        one("featurevis", None, f"{layer} channel {channels[0]} ({objective})",
            featurevis_key(mkey, layer, channels, objective, settings),
            lambda: run_featurevis(model, layer, channels, objective, settings))
    if "net2vec" in pages and paths and not (cancel is not None and cancel()):
        from .images import list_images

        n2v = page_net2vec(model)
        listed = [str(p) for p in list_images(folder)]
        one("net2vec", None, f"{n2v.layer}, {n2v.concepts}, grid {n2v.size}, {len(listed)} images",
            net2vec_key(mkey, images_key(listed), n2v), lambda: run_net2vec(model, listed, n2v))
    opened = None  # the folder's index, for each image's reverse lookup
    if "index" in pages and paths and not (cancel is not None and cancel()):
        built, complete = warm_index(model, folder, cancel=cancel)
        counts["present" if complete else "computed"] += 1
        opened = built.index
        excited_layer = page_excited_layer(opened)
        written.append({"page": "index", "image": None, "status": "present" if complete else "computed",
                        "view": f"{len(opened)} images, layers {', '.join(opened.layers)}, top-{opened.top_k} "
                                f"({opened.directory})"})
        errors += [{"image": s["image"], "error": f"index: {s['error']}"} for s in built.skipped]
    similarity_layer = None
    if "similarity" in pages and paths:
        from .catalogue import default_layer
        from .images import SAMPLES

        similarity_layer = default_layer(model).name
        other = SAMPLES / SIMILARITY_OTHER
        if other.is_file():  # when it is in the folder too, the loop below finds it present
            x_other = preprocess(load_image(other), model.card.data_config).tensor
            one("similarity", str(other), f"{similarity_layer} features (the default second image)",
                similarity_key(mkey, content_key(other.read_bytes()), similarity_layer),
                lambda: run_similarity(model, x_other, similarity_layer))
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
        steps = len(jobs) + len(warmed(pages, "image")) + sum(p in pages for p in (
            "perturbation", "faithfulness", "similarity", "index"))
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
        if similarity_layer is not None:
            one("similarity", str(path), f"{similarity_layer} features",
                similarity_key(mkey, ikey, similarity_layer),
                lambda: run_similarity(model, inp.tensor, similarity_layer))
            advance("similarity")
        if opened is not None:
            one("index", str(path), f"reverse lookup: the {EXCITED_N} channels of {excited_layer} it excites most",
                excited_key(mkey, ikey, opened, excited_layer, EXCITED_N),
                lambda: run_excited(model, inp.tensor, opened, excited_layer, EXCITED_N))
            advance("reverse lookup")
        for spec in warmed(pages, "image"):
            values = spec.defaults(model_context(model, target=target))
            one(spec.page or spec.name, str(path), f"{spec.title}: {canonical(values)}",
                spec.key(mkey, ikey, values), lambda spec=spec, values=values: spec.run(model, inp.tensor, values))
            advance(spec.title)
        if "perturbation" in pages:
            m = page_masks(target)
            one("perturbation", str(path), f"{m.method} {m.variant} areas {list(m.areas)}, class {target}",
                mask_key(mkey, ikey, m), lambda: run_masks(model, inp.tensor, m))
            advance("perturbation masks")
        done.append(str(path))
    return WarmResult(tuple(done), counts["computed"], counts["present"], tuple(errors),
                      time.perf_counter() - started, tuple(keys), tuple(written))
