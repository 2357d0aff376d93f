"""One user-facing setting of a technique (:class:`Setting`) and the values' plain forms (keys, links).

See :mod:`core.spec` for the contract a technique's settings make. This module stays light (no torch).
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Callable, Mapping, Union

Bound = Union[float, int, str, bool, tuple, Callable[[Mapping[str, object]], object], None]
"""A value, or a function of the context for what depends on the model or on another setting."""

Context = Mapping[str, object]


class _AsPage:
    """The command line's default is the page's (:attr:`Setting.cli_default` left unset)."""

    def __repr__(self) -> str:
        return "AS_PAGE"


AS_PAGE = _AsPage()


def evaluate(bound: Bound, context: Context):
    """``bound`` evaluated in ``context`` (a function is called; a value is returned as it is)."""
    return bound(context) if callable(bound) else bound


@dataclass(frozen=True)
class Setting:
    """One user-facing setting of a technique.

    Attributes:
        name: the keyword of the technique's values (and, for attribution methods, of the method function).
        kind: ``int``, ``float``, ``str``, ``bool``, a ``str`` Enum (its values are the choices) or ``tuple`` (a
            multiple choice of ``choices``).
        help: one line for ``--help`` and the widget's tooltip.
        label: the widget label (default: the name, capitalised); a function of the context when it depends on
            another setting.
        low, high, step: range of a number (values or functions of the context).
        default: the starting value (a value or a function of the context). Attribution methods may leave it None
            to read the function's default from its signature.
        among: the choices of a ``str`` or ``tuple`` setting when they are not an Enum's (values or a function
            of the context, e.g. the model's layers); of a number: the stops of its widget (a radio, select box
            or ``select_slider``), which the command line enforces only when ``strict``.
        flag: the command-line flag (default ``--name`` with dashes); settings of one technique may share a flag
            when at most one of them is visible at a time (ε of L∞ and of L2).
        metavar: the flag's metavar in ``--help``.
        cli: False when the setting has no flag (a page-only choice).
        required: the flag must be given on the command line (its help shows no default); the page still
            starts at ``default``.
        layer: the value is a layer name from the model's catalogue (its default: the context's ``layer``); a
            ``tuple`` setting holds several (a multiple choice of the catalogue's names).
        target: the value is a class index (the page shows the class names; the CLI takes an index or a name);
            ``optional`` labels the choice None ("untargeted").
        optional: the label of the value None, for a setting that may be left unset.
        visible: a predicate on the settings chosen so far; the setting is shown (and passed) only when it holds.
        widget: ``slider`` (numbers with a range), ``number`` (a number box), ``radio``, ``select``, ``checkbox``,
            ``toggle``, ``multiselect``, ``select_slider`` (a number's ``among``); ``none``: no widget (a
            command-line-only setting: the page runs with its default); empty: chosen from the kind.
        key: the widget's key suffix (default: the name); may name other settings (``iters_{method}``) so that
            each of their values keeps its own widget state.
        url: the permalink parameter (default: the name).
        scale: the function's value is the user's value times ``scale`` (an L∞ budget of 4/255 is 4 on the
            widget and 4 · (1/255) in the function).
        format: how a choice is shown on the page (e.g. ``str.upper``), or a printf format for a number box
            (``"%.3f"``).
        advanced: drawn in the form's "Advanced" expander.
        number_input: a number box rather than a slider (the attribution package's spelling of ``widget``).
        strict: values outside ``low``..``high`` (or, for a number, not ``among`` its stops) are refused; False:
            the range and the stops bound the widget only and the function checks what it can take (the CLI
            accepts a larger budget than the slider shows).
        cli_default: the command line's default where it differs from the page's (a one-shot command may ask
            for less than the page's interactive run); None: the function's own default. Shown in ``--help``.
        sep: a ``tuple`` setting's flag takes one argument joined by ``sep`` (``--metrics deletion,insertion``)
            rather than one argument per element.
    """

    name: str
    kind: type
    help: str
    label: Bound = ""
    low: Bound = None
    high: Bound = None
    step: Bound = None
    default: Bound = None
    among: Bound = None
    flag: str = ""
    metavar: str | None = None
    cli: bool = True
    required: bool = False
    layer: bool = False
    target: bool = False
    optional: str = ""
    visible: Callable[[Mapping[str, object]], bool] | None = None
    widget: str = ""
    key: str = ""
    url: str = ""
    scale: float = 1.0
    format: Callable[[object], str] | str | None = None
    advanced: bool = False
    number_input: bool = False
    strict: bool = True
    cli_default: Bound = AS_PAGE
    sep: str = ""

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        """The argparse destination of :attr:`cli_flag`."""
        return self.cli_flag.lstrip("-").replace("-", "_")

    @property
    def choices(self) -> tuple:
        """The choices known without a context: an Enum's values, or a fixed ``among`` sequence."""
        if isinstance(self.kind, type) and issubclass(self.kind, enum.Enum):
            return tuple(m.value for m in self.kind)
        if self.among is not None and not callable(self.among):
            return tuple(self.among)
        return ()

    def options(self, context: Context) -> tuple:
        """The choices in ``context`` (an Enum's values, ``choices`` evaluated), empty for free values."""
        return self.choices or tuple(evaluate(self.among, context) or ())

    @property
    def title(self) -> str:
        return self.label if isinstance(self.label, str) and self.label else self.name.replace("_", " ").capitalize()

    def label_in(self, context: Context) -> str:
        return str(evaluate(self.label, context)) if self.label else self.title

    def shown(self, chosen: Mapping[str, object]) -> bool:
        return self.visible is None or bool(self.visible(chosen))

    def widget_key(self, prefix: str, chosen: Mapping[str, object]) -> str:
        """``{prefix}_{key}`` with other settings' values filled in (``iters_{method}``)."""
        suffix = (self.key or self.name).format(**{k: getattr(v, "value", v) for k, v in chosen.items()}) \
            if "{" in (self.key or "") else (self.key or self.name)
        return f"{prefix}_{suffix}" if prefix else suffix

    def start(self, context: Context, *, cli: bool = False) -> object:
        """The declared default in ``context``, kept inside the range (an Enum member as its value)."""
        value = evaluate(self.cli_default if cli and self.cli_default is not AS_PAGE else self.default, context)
        value = value.value if isinstance(value, enum.Enum) else value
        if self.layer and value is None and self.kind is not tuple:
            value = context.get("layer")
        if self.kind in (int, float) and value is not None and not isinstance(value, bool):
            cast = self.kind
            low, high = (evaluate(b, context) for b in (self.low, self.high))
            value = cast(value)
            value = value if low is None else max(value, cast(low))
            value = value if high is None else min(value, cast(high))
        if self.kind is tuple and value is not None:
            value = tuple(value)
        return value

    @staticmethod
    def value(bound: Bound, context: Context):
        """A :data:`Bound` evaluated in ``context`` (kept for the attribution package's callers)."""
        return evaluate(bound, context)


def plain(value):
    """A value as it goes into a key, a link or a command line: Enum members as their values, tuples kept."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) for v in value)
    return value


def canonical(values: Mapping[str, object]) -> str:
    """One string per set of values, independent of their order (the part of a result key they make)."""
    return json.dumps({k: plain(v) for k, v in values.items()}, sort_keys=True, default=str)
