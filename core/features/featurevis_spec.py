"""Feature visualisation, neuron interaction and the filter views: their settings declared once (page widgets,
CLI flags, result key, warm-up, report line), and :class:`Settings`, an optimisation in the function's terms.

The three techniques work on the model alone (``subject="model"``): their result keys name no image. Values are
in the units the page and the CLI show; :func:`optimisation` turns them into :class:`Settings`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from ..spec import Setting, Technique
from .featurevis import DEFAULT_FRAMES, Objective, interpolate, visualize
from .optimisation import Settings


OBJECTIVE_LABELS = {"channel": "channel (mean)", "unit": "unit (centre)", "logit": "class logit"}


SIZES = (64, 96, 128, 160)    # image sides offered besides the model's own
VISUALIZE_OUT_DIR = "lens-out/visualize"  # where the report's commands write their PNGs
FILTERS_OUT_DIR = "lens-out/filters"


def _objective_is(*kinds: Objective):
    return lambda v: v.get("objective") in {k.value for k in kinds}


def optimisation_settings(prefix: str, count: Setting, *, diversity: bool) -> tuple[Setting, ...]:
    """The optimisation settings of one form: widget keys and link names ``{prefix}_*``.

    Args:
        count: how many images the run makes (a batch, or interpolation frames).
        diversity: ask for the batch diversity weight (it needs a batch).
    """
    def url(name: str) -> str:
        return f"{prefix}_{name}"

    settings = [
        Setting("steps", int, "Adam steps. About 128 gives a clear pattern; 256+ refines it", label="Steps", low=8,
                high=512, step=8, default=Settings.steps, url=url("steps"), strict=False),
        Setting("size", int, "image side in pixels. The model's input size matches how the objective is measured; "
                "smaller is faster", label="Size (pixels)", among=lambda c: sorted({*SIZES, int(c["side"])}),
                default=lambda c: int(c["side"]), widget="select", url=url("size"), strict=False),
        Setting("seed", int, "random seed", label="Seed", low=0, high=10_000, default=Settings.seed,
                widget="number", url=url("seed"), strict=False),
        count,
        Setting("lr", float, "Adam learning rate", label="Learning rate", low=0.001, high=0.5, default=Settings.lr,
                widget="number", format="%.3f", advanced=True, url=url("lr"), strict=False),
    ]
    if diversity:
        settings.append(Setting("diversity", float, "diversity weight: penalises similar images in a batch, "
                                "needs 2+ images", label="Diversity", low=0.0, high=100.0,
                                default=Settings.diversity, widget="number", key="div", url=url("div"),
                                advanced=True, strict=False))
    settings += [
        Setting("rotate", float, "random rotation range in degrees, a robustness transform", label="Rotation (deg)",
                low=0.0, high=45.0, default=Settings.rotate, widget="number", key="rot", url=url("rot"),
                advanced=True, strict=False),
        Setting("fourier", bool, "on: Fourier parameterisation; off (--pixels on the command line): plain pixels, "
                "which tend to give high-frequency noise", label="Fourier parameterisation", default=Settings.fourier,
                flag="--pixels", widget="toggle", url=url("fourier"), advanced=True),
    ]
    return tuple(settings)


VISUALISE_SETTINGS = (
    Setting("objective", Objective, "channel mean, the centre unit of the channel, or a class logit",
            label="Objective", default=Objective.CHANNEL, widget="radio", format=OBJECTIVE_LABELS.get),
    Setting("layer", str, "catalogue layer name, for a channel or a unit (default: the last feature stage)", layer=True,
            visible=_objective_is(Objective.CHANNEL, Objective.UNIT)),
    Setting("channel", int, "channel index of the layer", label="Channel", low=0, default=0, required=True,
            visible=_objective_is(Objective.CHANNEL, Objective.UNIT), strict=False),
    Setting("class", int, "class index, with --objective logit", label="Class", low=0, default=0, flag="--channel",
            visible=_objective_is(Objective.LOGIT), strict=False),
    *optimisation_settings("fv", Setting("batch", int, "how many images", label="Images", low=1, high=8,
                                         default=Settings.batch, widget="number", url="fv_batch", strict=False),
                           diversity=True),
)

INTERACTION_SETTINGS = (
    Setting("layer", str, "catalogue layer name", label="Layer", layer=True),
    Setting("a", int, "channel A (the first frame's)", label="Channel A", low=0, default=0, cli=False),
    Setting("b", int, "channel B (the last frame's)", label="Channel B", low=0, default=1, cli=False),
    *optimisation_settings("mix", Setting("frames", int, "frames from A to B", label="Frames", low=2, high=8,
                                          default=DEFAULT_FRAMES, widget="number", key="batch", url="mix_batch",
                                          strict=False), diversity=False),
)


def optimisation(values: Mapping[str, object]) -> Settings:
    """The :class:`Settings` of a set of :data:`FEATUREVIS` or :data:`INTERACTION` values (frames as the batch)."""
    return Settings(steps=int(values["steps"]), size=int(values["size"]), seed=int(values["seed"]),
                    batch=int(values.get("batch", values.get("frames", Settings.batch))), lr=float(values["lr"]),
                    diversity=float(values.get("diversity", Settings.diversity)), rotate=float(values["rotate"]),
                    fourier=bool(values["fourier"]))


def target_of(values: Mapping[str, object]) -> tuple[str, int]:
    """(layer, index) of a :data:`FEATUREVIS` run: the layer and channel, or "" and the class of a logit."""
    if values["objective"] == Objective.LOGIT.value:
        return "", int(values["class"])
    return str(values["layer"]), int(values["channel"])


def run_featurevis(model, subject, values: Mapping[str, object], *, progress=None):
    """:class:`~core.features.featurevis.Visualisation` (``subject`` unused: the model alone)."""

    layer, index = target_of(values)
    return visualize(model, layer, index, objective=Objective(values["objective"]), settings=optimisation(values),
                     progress=progress)


def run_interaction(model, subject, values: Mapping[str, object], *, progress=None):
    """The neuron-interaction frames, a :class:`~core.features.featurevis.Visualisation`."""

    return interpolate(model, str(values["layer"]), int(values["a"]), int(values["b"]), frames=int(values["frames"]),
                       settings=optimisation(values), progress=progress)


FEATUREVIS = Technique(
    "featurevis", "Feature visualisation",
    "an image optimised to excite one channel, unit or class logit (activation maximisation)",
    VISUALISE_SETTINGS, run_featurevis, subject="model", command="visualize", prefix="fv", page="featurevis",
    warm=True, samples=lambda v: int(v["batch"]))

INTERACTION = Technique(
    "neuron_interaction", "Neuron interaction", "frames maximising (1 - t) * A + t * B for two channels A and B",
    INTERACTION_SETTINGS, run_interaction, subject="model", prefix="mix", page="featurevis",
    samples=lambda v: int(v["frames"]))


def depthwise_inside(layer: str, names: Sequence[str]) -> list[str]:
    """The depthwise convolutions among ``names`` inside ``layer`` (a stage holds one per block)."""
    return [d for d in names if d.startswith(layer + ".") or layer.startswith(d.rsplit(".", 1)[0] + ".")]


def run_filters(model, subject, values: Mapping[str, object], *, progress=None) -> dict:
    """The filter views: ``first`` (the first layer's kernels), ``depthwise`` (the chosen depthwise layer's
    kernels, or None), ``layers`` (the depthwise layers' names) and ``stats`` (per-layer weight statistics).

    Raises:
        ValueError: no convolution on the colour channels, or not a depthwise layer. KeyError: unknown layer.
    """
    from .filters import depthwise_kernels, depthwise_layers, first_layer_kernels, weight_stats

    dw = values.get("depthwise")
    return {"first": first_layer_kernels(model), "depthwise": depthwise_kernels(model, dw) if dw else None,
            "layers": depthwise_layers(model), "stats": weight_stats(model)}


# On the page the context's ``within`` names the page's layer and ``depthwise_choices`` the depthwise convolutions
# inside it (the first is the default); the command line has no default.
FILTERS = Technique(
    "filters", "Filters", "first-layer kernels in RGB, a depthwise convolution's kernels, weight statistics",
    (Setting("depthwise", str, "also tile this depthwise convolution's kernels (e.g. stages.0.blocks.0.conv_dw)",
             label=lambda c: f"Depthwise convolution in {c.get('within')}", metavar="LAYER", key="dw", url="dw",
             among=lambda c: tuple(c.get("depthwise_choices") or ())),),
    run_filters, subject="model", command="filters", prefix="filters", page="featurevis")
