"""The concepts technique's settings, declared once (page widgets, CLI flags, result key, report line); the
ranking of each channel's dataset examples (:data:`EXAMPLES`); the deletion curves (:data:`DELETION`)."""
from __future__ import annotations

from typing import Mapping

from ..attribution.lrp import FirstRule, LrpRule
from ..spec import Setting, Technique

DEFAULT_TOP = 6


def _channel_choices(context) -> tuple:
    # the page puts each layer's channel count in the context; the CLI checks channels once the layer is known
    count = dict(context.get("channel_counts") or {}).get(context.get("layer"), 0)
    return tuple(range(int(count)))


SETTINGS = (
    Setting("layer", str, "the layer split into channels (a catalogue name; default: the last feature layer)",
            label="Layer", layer=True, metavar="LAYER"),
    Setting("target", int, "the class explained (index or exact label); default: the prediction",
            label="Class explained", target=True, optional="the prediction"),
    Setting("contrast", int, "a class whose logit is subtracted: the relevance of logit[target] - logit[contrast]",
            label="Against (contrast)", target=True, optional="none"),
    Setting("top", int, "channels listed and mapped, most relevant first (all when at least the channel count)",
            label="Top channels", low=1, high=24, default=DEFAULT_TOP, strict=False, metavar="K"),
    Setting("channels", tuple, "map these channels instead of the top ones", label="Channels to map",
            among=_channel_choices, default=(), metavar="C"),
    Setting("rule", LrpRule, "LRP rule for convolutions and linear layers (on a transformer zplus and epsilon run "
            "AttnLRP, cp runs CP-LRP)", label="Rule", default=LrpRule.ZPLUS,
            advanced=True),
    Setting("first", FirstRule, "LRP rule for the layer on the pixels", label="First layer (pixels)",
            default=FirstRule.ZB, flag="--first-rule", advanced=True),
    Setting("epsilon", float, "LRP stabiliser as a fraction of each layer's output std",
            label="Epsilon (x layer std)", low=0.0, high=5.0, step=0.05, default=0.25, number_input=True,
            advanced=True),
)


def keywords(values: Mapping[str, object]) -> dict:
    """The keywords of :func:`core.concepts.relevance.concepts` for a set of :data:`CONCEPTS` values."""
    channels = tuple(int(c) for c in values.get("channels") or ())
    return dict(layer=values.get("layer"), target=values.get("target"), contrast=values.get("contrast"),
                top=int(values["top"]), channels=channels or None, rule=values["rule"], first=values["first"],
                epsilon=float(values["epsilon"]))


def run_concepts(model, x, values: Mapping[str, object], *, progress=None):
    """:class:`~core.concepts.relevance.Concepts` of one image ``x`` (3, H, W) in [0, 1].

    Raises:
        ValueError: no such layer or channel.
    """
    from .relevance import concepts

    kw = keywords(values)
    return concepts(model, x.unsqueeze(0), kw.pop("target"), progress=progress, **kw)


def describe(result) -> dict:
    rel = result.relevance
    rows = {"layer": rel.layer.name, "target": int(rel.target[0]), "total relevance": float(rel.total[0])}
    for k, chosen in enumerate(result.maps.channels[0]):
        c = chosen[0] if len(chosen) == 1 else chosen
        rows[f"channel {c}"] = float(rel.share[0, list(chosen)].sum())
    return rows


CONCEPTS = Technique(
    "concepts", "Concepts",
    "concept relevance: the LRP explanation split into a layer's channels, each with its conditional heat map",
    SETTINGS, run_concepts, command="concepts", prefix="cpt", page="concepts", describe=describe)


def run_deletion(model, subject, values: Mapping[str, object], *, progress=None):
    """:class:`~core.evaluation.concepts.DeletionCurves` of deleting ``layer``'s channels from one image.

    Args:
        subject: (x (3, H, W) in [0, 1], layer name, target class or None for the prediction).
    """
    from ..evaluation.concepts import channel_deletion

    x, layer, target = subject
    return channel_deletion(model, x.unsqueeze(0), target, layer=layer, draws=int(values["draws"]))


DELETION = Technique(
    "concept_deletion", "Deleting concepts",
    "the target logit's drop when the top-k channels by relevance, by activation, or k random ones are zeroed",
    (Setting("draws", int, "random channel sets per k (their drops are averaged)", label="Random draws per k",
             low=2, high=20, default=5, cli=False),),
    run_deletion, prefix="cpt", page="concepts")


EXAMPLES_BY = ("relevance", "activation")


def run_examples(_model, subject, values: Mapping[str, object], *, progress=None):
    """The dataset examples (:class:`core.index.Patch` es) of one channel from an opened activation index.

    Args:
        subject: (the index, layer name, channel, how many).

    Raises:
        NoRelevance: ``examples_by`` relevance on an index built without that ranking.
    """
    index, layer, channel, n = subject
    return index.top(layer, int(channel), int(n), by=str(values["examples_by"]))


EXAMPLES = Technique(
    "concept_examples", "Dataset examples of concepts",
    "each channel's top images in an activation index, by its relevance for the image's prediction or by activation",
    (Setting("examples_by", str, "rank each channel's dataset examples (--index) by the channel's LRP relevance for "
                                 "each image's predicted class (an index built with --relevance) or by its activation",
             label="Dataset examples ranked by", among=EXAMPLES_BY, default=EXAMPLES_BY[0], widget="radio"),),
    run_examples, subject="folder", command="concepts", prefix="cpt", page="concepts")
