"""The activation index's settings, declared once: building it (the Dataset-examples page's "Index" form,
``python -m core index build``, the warm-up), querying it (``python -m core index top``, the report's command)
and the reverse lookup of one image against it (the page's "What ... excites" rows, warmed per image).

The index is a directory (:func:`core.index.build.default_directory`), not a result-store entry: :data:`BUILD`
runs :func:`core.index.build.build_index` into it. The reverse lookup is a result-store entry keyed by
:meth:`Technique.key` with :func:`excited_subject` (the image and the index's data hash).
"""
from __future__ import annotations

from typing import Mapping

from ..spec import Setting, Technique, model_context
from .build import DEFAULT_BATCH_SIZE, DEFAULT_TOP_K, ENGINES, build_index, default_directory, default_layers
from .passes import RANKINGS

EXCITED_N = 6  # channels the page's reverse lookup lists


def build_context(model) -> dict[str, object]:
    """:func:`core.spec.model_context` with ``stages``: the layers an index holds unless told
    (:func:`core.index.build.default_layers`), the default of :data:`BUILD`'s ``layers``."""
    return {**model_context(model), "stages": default_layers(model)}


def _stages(context: Mapping[str, object]):
    """The context's default layers; None (the builder's own default) in a context without them."""
    stages = context.get("stages")
    return None if stages is None else tuple(stages)


BUILD_SETTINGS = (
    Setting("layers", tuple, "dotted layer names, the output of every stage (e.g. stages.0 .. stages.3) unless "
                             "given; block internals (e.g. stages.2.blocks.5.mlp.fc1) may be added, and changing "
                             "the list rebuilds", label="Layers", layer=True, default=_stages, metavar="NAME"),
    Setting("top_k", int, "images kept per channel", label="Images kept per channel (top-k)", low=1, high=256,
            default=DEFAULT_TOP_K, widget="number", key="k", strict=False),
    Setting("batch_size", int, "images per forward pass", low=1, default=DEFAULT_BATCH_SIZE, widget="none",
            strict=False),
    Setting("engine", str, "local: threads in this process; ray: Ray Data on a cluster (pip install -r "
                           "requirements-ray.txt; see docs/scale.md)", among=ENGINES, default=ENGINES[0],
            widget="none"),
    Setting("relevance", bool, "also keep per channel the top-k images by LRP relevance for each image's predicted "
                               "class (relevance maximisation; an LRP pass per batch, slower: docs/activation-index.md)"
                               "; an index that has it keeps it", label="Also rank by relevance (LRP)", default=False),
)


def run_build(model, folder, values: Mapping[str, object], *, progress=None, directory=None, cancel=None,
              **engine_options):
    """:class:`core.index.build.BuildResult` of building (or extending) the index of ``folder`` with ``values``
    in ``directory`` (default: the page's, :func:`core.index.build.default_directory`). ``engine_options``:
    ``workers``, ``address``, ``gpus_per_worker`` of :func:`core.index.build.build_index`."""
    layers = values.get("layers")
    return build_index(model, folder, directory or default_directory(model, folder),
                       layers=None if layers is None else list(layers), top_k=int(values["top_k"]),
                       batch_size=int(values["batch_size"]), engine=str(values["engine"]), progress=progress,
                       cancel=cancel, relevance=bool(values.get("relevance")), **engine_options)


BUILD = Technique(
    "index_build", "Activation index", "the top-k images per channel of a folder, by the channel's maximum",
    BUILD_SETTINGS, run_build, subject="folder", command="index build", prefix="lens_idx", page="index")


def warm_values(model) -> dict:
    """The values of the app's own index of a folder (the sample photos): :data:`BUILD` at its defaults, with the
    relevance ranking (the Concepts page's examples are relevance-ranked)."""
    return {**BUILD.defaults(build_context(model)), "relevance": True}


def warm_build(model, folder, *, progress=None, cancel=None, workers: int | None = None):
    """Build (or extend, or find complete) the Dataset-examples page's default index of ``folder``
    (:func:`warm_values`) in :func:`core.index.build.default_directory` (atomic writes, one builder at a time:
    see :func:`core.index.build.build_index`); an index there without the relevance ranking is rebuilt with it.
    ``workers``: the local engine's workers (None: one per intra-op thread). Returns (BuildResult, whether a
    complete index was there already)."""
    from .build import MANIFEST

    directory = default_directory(model, folder)
    existed = (directory / MANIFEST).exists()
    result = run_build(model, folder, warm_values(model), progress=progress, directory=directory, cancel=cancel,
                       workers=workers)
    return result, existed and result.added == 0 and not result.notes


def _top(_model, index, values: Mapping[str, object], *, progress=None):
    """The :class:`core.index.Patch` es of one channel of an opened index (the subject)."""
    return index.top(str(values["layer"]), int(values["channel"]), values.get("k"), by=str(values["by"]))


BY = Setting("by", str, "rank by the channel's maximum activation, or by its LRP relevance for each image's "
                        "predicted class (an index built with --relevance)", label="Rank examples by",
             among=RANKINGS, default=RANKINGS[0], widget="radio")

TOP = Technique(
    "index_top", "Dataset examples", "the top patches of one channel of an index",
    (Setting("layer", str, "an indexed layer", label="Layer", layer=True, metavar="NAME", required=True),
     Setting("channel", int, "a channel of the layer", label="Channel number", low=0, default=0, metavar="C",
             required=True, strict=False),
     Setting("k", int, "how many patches (default: all kept)", low=1, strict=False),
     BY),
    _top, subject="folder", command="index top", prefix="lens_idx", page="index")


def commands(card, directory: str, query: Mapping[str, object], *, folder: str | None = None,
             build: Mapping[str, object] | None = None) -> str:
    """``python -m core index top`` with :data:`TOP`'s ``query`` values, preceded (``&&``) by the ``index build``
    with :data:`BUILD`'s ``build`` values that makes the index when ``folder`` is given (an index opened by path
    is named as it is). ``card``: the model's ModelCard."""
    top = TOP.command_line(directory, None, query)
    if folder is None:
        return top
    return f"{BUILD.command_line(folder, card, build or {}, extra=['--out', directory])} && {top}"


def excited_context(index) -> dict[str, object]:
    """The context of a reverse lookup against ``index``: the layer the page opens it on
    (:func:`core.index.view.opening_choice`)."""
    from .view import opening_choice

    return {"layer": opening_choice(index.layers, index.input_size[0])}


def excited_subject(image_key: str, index) -> tuple[str, str]:
    """The subject key of one image's reverse lookup against an opened ``index``: the image's content hash and
    the index's data-file hash (the statistics the z-scores use), so a rebuilt or extended index is a new key
    and an untouched one keeps it across restarts."""
    return image_key, index.manifest["data"]["sha256"]


def run_excited(model, subject, values: Mapping[str, object], *, progress=None) -> tuple:
    """The :class:`core.index.ChannelHit` s of ``values["layer"]`` that one image excites most.

    Args:
        subject: (x (3, H, W) in [0, 1], the opened index).

    Raises:
        ValueError: an index of another model.
    """
    x, index = subject
    return tuple(index.excited_by(model, x.unsqueeze(0), str(values["layer"]), int(values["n"])))


EXCITED = Technique(
    "excited", "Reverse lookup", "the channels of an indexed layer one image excites most, against the index",
    (Setting("layer", str, "an indexed layer", label="Layer", layer=True, cli=False, widget="none"),
     Setting("n", int, "channels listed", low=1, default=EXCITED_N, cli=False, widget="none")),
    run_excited, prefix="lens_idx", page="index")
