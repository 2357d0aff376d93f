"""The settings contract: every technique declares its user-facing settings once, beside its function.

A :class:`Setting` says what one setting is (name, kind, range, step, default, help, label, CLI flag). A
:class:`Technique` names a computation, lists its settings and says how to run it. Everything else follows from
that one declaration:

- the page's widgets (``ui/options.py``: :func:`ui.options.technique_form`), starting at the declared defaults;
- the CLI flags of its subcommand with the default in ``--help`` (:meth:`Technique.add_arguments`,
  :meth:`Technique.from_args`);
- the result-store key (:meth:`Technique.key`) and the warm-up job (``core/warm.py`` runs every technique that
  declares ``warm``): page and ``python -m core warm`` build the same key by construction;
- the report's "reproduce this" command line (:meth:`Technique.command_line`).

Values are in the units the user sees (an L∞ budget in 1/255); :attr:`Setting.scale` converts to the function's
units in :meth:`Technique.arguments`. A *context* carries what a default or a range may depend on: ``side`` (the
model's input side in pixels), ``classes`` (its number of classes), ``labels``, ``layer`` (the default layer's
name), ``target`` (the predicted class) and the settings chosen so far.

This module stays light (no torch): technique modules import it, and :mod:`core.techniques` lists them.
"""
from __future__ import annotations

import argparse
import enum
import json
import shlex
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

Bound = Union[float, int, str, bool, tuple, Callable[[Mapping[str, object]], object], None]
"""A value, or a function of the context for what depends on the model or on another setting."""

Context = Mapping[str, object]


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
            of the context, e.g. the model's layers).
        flag: the command-line flag (default ``--name`` with dashes); settings of one technique may share a flag
            when at most one of them is visible at a time (ε of L∞ and of L2).
        metavar: the flag's metavar in ``--help``.
        cli: False when the setting has no flag (a page-only choice).
        layer: the value is a layer name from the model's catalogue (its default: the context's ``layer``).
        target: the value is a class index (the page shows the class names; the CLI takes an index or a name);
            ``optional`` labels the choice None ("untargeted").
        optional: the label of the value None, for a setting that may be left unset.
        visible: a predicate on the settings chosen so far; the setting is shown (and passed) only when it holds.
        widget: ``slider`` (numbers with a range), ``number`` (a number box), ``radio``, ``select``, ``checkbox``,
            ``toggle``, ``multiselect``; empty: chosen from the kind.
        key: the widget's key suffix (default: the name); may name other settings (``iters_{method}``) so that
            each of their values keeps its own widget state.
        url: the permalink parameter (default: the name).
        scale: the function's value is the user's value times ``scale`` (an L∞ budget of 4/255 is 4 on the
            widget and 4 · (1/255) in the function).
        format: how a choice is shown on the page (e.g. ``str.upper``).
        advanced: drawn in the form's "Advanced" expander.
        number_input: a number box rather than a slider (the attribution package's spelling of ``widget``).
        strict: values outside ``low``..``high`` are refused; False: the range bounds the widget only and the
            function checks what it can take (the CLI accepts a larger budget than the slider shows).
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
    layer: bool = False
    target: bool = False
    optional: str = ""
    visible: Callable[[Mapping[str, object]], bool] | None = None
    widget: str = ""
    key: str = ""
    url: str = ""
    scale: float = 1.0
    format: Callable[[object], str] | None = None
    advanced: bool = False
    number_input: bool = False
    strict: bool = True

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

    def start(self, context: Context) -> object:
        """The declared default in ``context``, kept inside the range (an Enum member as its value)."""
        value = evaluate(self.default, context)
        value = value.value if isinstance(value, enum.Enum) else value
        if self.layer and value is None:
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


@dataclass(frozen=True)
class Technique:
    """One technique: a computation and its settings, declared once.

    Attributes:
        name: the registry key and the first element of its result keys.
        title: the display name. summary: one line on what it shows.
        settings: the user-facing settings, in display order.
        run: ``run(model, subject, values, *, progress=None, preview=None)``: the computation, with ``values`` as
            :meth:`defaults` or a form returns them (user units); ``subject`` is what the technique works on
            (see ``subject``).
        subject: ``image`` (one image, RGB (3, H, W) in [0, 1]), ``folder`` (a sequence of image paths) or
            ``model`` (nothing besides the model).
        command: the ``python -m core`` subcommand that reproduces a result ("" when none).
        prefix: the prefix of its widgets' keys on the page (``atk`` → ``atk_eps``).
        page: the page that draws it; empty: the generic Techniques page lists it with a form and a summary.
        warm: ``python -m core warm`` computes its page defaults for every image (or once per model or folder).
        samples: images a run holds in memory at once, for the memory budget (a number or a function of the
            values).
        describe: the result as a few rows (name → value) for the generic page and the report.
    """

    name: str
    title: str
    summary: str
    settings: tuple[Setting, ...]
    run: Callable[..., object]
    subject: str = "image"
    command: str = ""
    prefix: str = ""
    page: str = ""
    warm: bool = False
    samples: Union[int, Callable[[Mapping[str, object]], int]] = 1
    describe: Callable[[object], Mapping[str, object]] | None = None

    def __post_init__(self) -> None:
        names = [s.name for s in self.settings]
        if len(set(names)) != len(names):
            raise TypeError(f"{self.name}: a setting is declared twice")
        if self.subject not in ("image", "folder", "model"):
            raise TypeError(f"{self.name}: subject must be image, folder or model, not {self.subject!r}")

    def setting(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        raise KeyError(f"{self.name} has no setting {name!r}")

    # ---------------------------------------------------------------------------------------------- values

    def defaults(self, context: Context, **chosen) -> dict[str, object]:
        """The values a page starts with (what its widgets show before anyone touches them), in order: each
        visible setting at its declared default, or at ``chosen[name]`` where given."""
        return self.complete(chosen, context)

    def complete(self, given: Mapping[str, object], context: Context) -> dict[str, object]:
        """``given`` values completed with the defaults of the settings it leaves out; settings that are not
        visible with these values are dropped (they are neither shown nor passed).

        Raises:
            ValueError: a value outside its range or choices, or a setting this technique does not have.
        """
        unknown = sorted(set(given) - {s.name for s in self.settings})
        if unknown:
            raise ValueError(f"{self.name} has no setting {', '.join(unknown)} "
                             f"(it takes {', '.join(s.name for s in self.settings) or 'none'})")
        chosen: dict[str, object] = {}
        for s in self.settings:
            if not s.shown(chosen):
                continue
            ctx = {**context, **chosen}
            value = plain(given[s.name]) if s.name in given and given[s.name] is not None else s.start(ctx)
            if s.name in given and given[s.name] is not None:
                value = self._checked(s, value, ctx)
            chosen[s.name] = value
        return chosen

    def _checked(self, s: Setting, value, context: Context):
        where = f"{s.cli_flag} ({self.name})"
        if s.kind is bool:
            return bool(value)
        if s.kind in (int, float):
            try:
                value = s.kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where} takes a number, not {value!r}") from None
            low, high = (evaluate(b, context) for b in (s.low, s.high)) if s.strict else (None, None)
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"{where} must be between {low:g} and {high:g}, not {value:g}"
                                 if low is not None and high is not None else
                                 f"{where} must be at least {low:g}" if low is not None else
                                 f"{where} must be at most {high:g}")
            return value
        options = s.options(context)
        if s.kind is tuple:
            value = tuple(value)
            bad = [v for v in value if options and v not in options]
            if bad:
                raise ValueError(f"{where}: {', '.join(map(str, bad))} not among {', '.join(map(str, options))}")
            return value
        if options and value not in options and not s.target:
            raise ValueError(f"{where} must be one of {', '.join(map(str, options))}, not {value!r}")
        return value

    def arguments(self, values: Mapping[str, object]) -> dict[str, object]:
        """``values`` in the function's units (each times its setting's ``scale``)."""
        out = {}
        for name, value in values.items():
            s = self.setting(name)
            out[name] = value * s.scale if s.scale != 1.0 and value is not None else value
        return out

    def samples_for(self, values: Mapping[str, object]) -> int:
        return max(1, int(self.samples(values) if callable(self.samples) else self.samples))

    # -------------------------------------------------------------------------------------- result store

    def key(self, model_key: str, subject_key: object, values: Mapping[str, object]) -> tuple:
        """The result-store key of one run: the technique, the model, what it ran on and its values."""
        return (self.name, model_key, subject_key, canonical(values))

    # ----------------------------------------------------------------------------------------- command line

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One flag per setting (settings that share a flag share one), each with its default in the help."""
        for flag, users in self._flags().items():
            s = users[0]
            kinds = {u.kind for u in users}
            if len(kinds) > 1:
                raise TypeError(f"{self.name}: {flag} is declared with different kinds")
            help_ = "; ".join(_help(u) for u in users).replace("%", "%%")
            if s.kind is bool:
                parser.add_argument(flag, dest=s.dest, action="store_true", default=None, help=help_)
                continue
            kwargs: dict = {}
            choices = s.choices
            if s.kind is tuple:
                kwargs = {"nargs": "+", "type": _element_type(s)}
                if choices:
                    kwargs["choices"] = list(choices)
            elif choices and not s.target:
                kwargs = {"choices": list(choices)}
            elif s.kind in (int, float) and not s.target:
                kwargs = {"type": s.kind}
            if s.metavar:
                kwargs["metavar"] = s.metavar
            parser.add_argument(flag, dest=s.dest, default=None, help=help_, **kwargs)

    def from_args(self, args: argparse.Namespace, context: Context) -> dict[str, object]:
        """The values given on the command line, completed with the defaults (as the page starts).

        Raises:
            ValueError: a value outside its range or choices (the message names the flag).
        """
        given: dict[str, object] = {}
        for s in self.settings:  # settings that share a flag all see its value; only the visible one keeps it
            value = getattr(args, s.dest, None) if s.cli else None
            if value is None:
                continue
            if s.kind is bool:  # a switch: given means the opposite of the default
                value = not _bool_default(s)
            elif s.target:
                value = class_index(value, context)
            elif s.kind is tuple:
                value = tuple(value)
            given[s.name] = value
        return self.complete(given, context)

    def command_line(self, subject: str | None, card, values: Mapping[str, object], *,
                     extra: Sequence[str] = ()) -> str:
        """The exact ``python -m core`` command that reproduces a run with ``values``: every setting written out
        with the value used, so a later change of a default does not change the result."""
        args = ["python", "-m", "core", *self.command.split(), *([subject] if subject is not None else [])]
        for name, value in values.items():
            s = self.setting(name)
            if not s.cli or value is None:
                continue
            value = plain(value)
            if s.kind is bool:
                if bool(value) != _bool_default(s):
                    args.append(s.cli_flag)
                continue
            if s.kind is tuple:
                if value:  # an empty choice is the flag left out (nargs="+" takes at least one value)
                    args += [s.cli_flag, *(str(v) for v in value)]
                continue
            args += [s.cli_flag, _number(value)]
        args += list(extra) + (model_args(card) if card is not None else [])
        return " ".join(shlex.quote(a) for a in args)

    def _flags(self) -> dict[str, list[Setting]]:
        flags: dict[str, list[Setting]] = {}
        for s in self.settings:
            if s.cli:
                flags.setdefault(s.cli_flag, []).append(s)
        return flags



def _bool_default(s: Setting) -> bool:
    """The default of a flag-switched bool: a declared callable default counts as False."""
    return bool(s.default) if not callable(s.default) else False


def _element_type(s: Setting):
    fixed = s.choices
    return type(fixed[0]) if fixed else str


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)
    return str(value)


def _help(s: Setting) -> str:
    text = s.help
    if s.visible is not None and s.label and isinstance(s.label, str):
        text = f"{s.label}: {text}"
    default = s.default
    if callable(default) or default is None:
        shown = "" if default is None else " (default: depends on the model)"
    elif s.kind is bool:
        shown = ""
    else:
        shown = f" (default {_number(plain(default)) if not isinstance(default, tuple) else ' '.join(map(str, default))})"
    return text + shown


def class_index(value: object, context: Context) -> int:
    """A class given as an index or an exact label (case-insensitive), checked against ``context``'s classes.

    Raises:
        ValueError: neither an index nor a label, or out of range.
    """
    labels = list(context.get("labels") or ())
    n = int(context.get("classes") or len(labels) or 0)
    try:
        index = int(value)
    except (TypeError, ValueError):
        matches = [i for i, name in enumerate(labels) if name.lower() == str(value).strip().lower()]
        if not matches:
            raise ValueError(f"--target {value!r} is neither a class index nor a label of the model") from None
        index = matches[0]
    if n and not 0 <= index < n:
        raise ValueError(f"--target must be between 0 and {n - 1} for this model")
    return index


def model_context(model, *, target: int | None = None) -> dict[str, object]:
    """The context of ``model``: its input side, classes, labels and default layer (and ``target``)."""
    from .catalogue import default_layer

    try:
        layer = default_layer(model).name
    except (ValueError, AttributeError):
        layer = None
    return {"side": int(model.card.input_size[-1]), "classes": int(model.card.num_classes),
            "labels": tuple(model.labels), "layer": layer, "target": target}


def model_args(card) -> list[str]:
    """``--model``/``--weights`` arguments that load the model described by ``card`` (a ModelCard)."""
    source = getattr(card.weights, "value", card.weights)
    if source == "embedded":
        return ["--model", "embedded"]
    name = card.name
    if source == "hub":
        detail = str(card.weights_detail)
        if "." not in name and detail.startswith("timm/"):
            name = detail.split("/", 1)[1]
        return ["--model", name]
    if source == "random":
        return ["--model", name, "--weights", "random"]
    path = str(card.weights_detail).split(" (head on ", 1)[0]  # a head-only file names its backbone after it
    return ["--model", name, "--weights", repo_path(path)]


def repo_path(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (commands run from its root), else as given."""
    from pathlib import Path

    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[1]))
    except (ValueError, OSError):
        return path
