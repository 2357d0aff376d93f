"""The method contract: what an attribution method declares once, and what is generated from it.

A method is a function ``fn(model, x, target, *, progress=None, **options) -> Attribution`` plus a
:class:`MethodSpec` that names it and declares its user-facing options. Each :class:`Option` carries its type,
range or choices, help text and label; its default is read from ``fn``'s signature, so it is written once. The
command line (``python -m core attribute``) and the page's widgets are both generated from the specs
(:func:`core.cli.commands.attribute.add_arguments`, :func:`ui.options.option_widgets`).

Options that are not declared (``batch_size``, ``engine``, ...) stay library keywords: :func:`attribute` accepts
every keyword of ``fn``, but only declared ones get a flag and a widget.
"""
from __future__ import annotations

import enum
import inspect
from dataclasses import dataclass
from typing import Callable, Mapping

from ..spec import Bound, Setting

Option = Setting  # an attribution method's options are settings of the one contract (core/spec.py)


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Attributes:
        name: the CLI spelling (``--method NAME``) and registry key.
        fn: ``fn(model, x, target, *, progress=None, **options) -> Attribution``.
        title: the display name. summary: one line on what the map means.
        options: the user-facing options, in display order.
        caveat: a line the page shows under every map of this method (what other tools get wrong, a limit).
        measured_passes: the kind of pass (``gradient``: forward + input-gradient backward; ``forward``: no
            autograd) whose batch ``fn`` measures at run time when its ``batch_size`` is None
            (:class:`~.base.MeasuredBatches`); empty when it has no such batch.
    """

    name: str
    fn: Callable[..., object]
    title: str
    summary: str
    options: tuple[Option, ...] = ()
    caveat: str = ""
    measured_passes: str = ""

    def __post_init__(self) -> None:
        keywords = self.keywords()
        for opt in self.options:
            if opt.name not in keywords:
                raise TypeError(f"{self.name}: option {opt.name!r} is not a keyword of {self.fn.__name__}")

    def gradient_passes_at_once(self, options: Mapping[str, object]) -> int:
        """The most images the method holds in memory at once with ``options``, counted in gradient passes (what
        a memory budget multiplies by its bytes per sample): ``batch_size`` when fixed; when measured, the largest
        batch it may try for gradient passes, and 1 for forward passes (without autograd a forward pass keeps
        only a layer or two of activations: a batch of 16 about as much as one gradient pass stores); else 1."""
        from .base import TRIAL_BATCHES  # base imports the model stack; this module stays light

        batch = options.get("batch_size", self.keywords().get("batch_size"))
        if isinstance(batch, int) and not isinstance(batch, bool):
            return max(1, batch)
        return TRIAL_BATCHES[-1] if batch is None and self.measured_passes == "gradient" else 1

    def keywords(self) -> dict[str, object]:
        """Every keyword option of ``fn`` (declared or not) and its default."""
        sig = inspect.signature(self.fn)
        return {p.name: p.default for p in sig.parameters.values()
                if p.kind is p.KEYWORD_ONLY and p.name not in ("progress", "preview")}

    @property
    def preview(self) -> bool:
        """``fn`` takes a ``preview(values, fraction)`` callback that receives partial maps."""
        return "preview" in inspect.signature(self.fn).parameters

    def default(self, opt: Option, context: Mapping[str, object]) -> object:
        """The starting value of ``opt``: the function's default, else the option's own (may depend on context)."""
        value = Option.value(opt.default, context) if opt.default is not None else self.keywords()[opt.name]
        return value.value if isinstance(value, enum.Enum) else value

    def start(self, opt: Option, context: Mapping[str, object]) -> object:
        """The value a widget for ``opt`` starts at: :meth:`default` kept inside the option's range."""
        value = self.default(opt, context)
        if opt.kind in (int, float) and value is not None:
            cast = opt.kind
            low, high = (Option.value(b, context) for b in (opt.low, opt.high))
            value = cast(value)
            value = value if low is None else max(value, cast(low))
            value = value if high is None else min(value, cast(high))
        return value

    def initial(self, context: Mapping[str, object], layer: str | None = None) -> dict[str, object]:
        """The options a page starts with (what its widgets show before anyone touches them), by keyword.

        Args:
            context: ``{"side": the model's input side in pixels}``.
            layer: the starting value of ``layer`` options (the catalogue's last feature stage).
        """
        chosen: dict[str, object] = {}
        for opt in self.options:
            if opt.shown(chosen):
                chosen[opt.name] = layer if opt.layer else self.start(opt, {**context, **chosen})
        return chosen

    @property
    def layer(self) -> bool:
        """Takes a ``layer`` option (a catalogue name)."""
        return any(o.layer for o in self.options)
