"""The command line of a technique, generated from its settings: flags with their defaults in ``--help``,
values read back from parsed arguments, and the exact command that reproduces a run (:class:`CommandLine`, a
part of :class:`core.spec.Technique`)."""
from __future__ import annotations

import argparse
import shlex
from typing import Mapping, Sequence

from .settings import AS_PAGE, Context, Setting, plain


class CommandLine:
    """The command-line methods of a :class:`core.spec.Technique` (which supplies ``name``, ``command``,
    ``settings``, ``setting()`` and ``complete()``)."""


    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One flag per setting (settings that share a flag share one), each with its default in the help
        (a ``required`` setting's flag must be given, and shows none)."""
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
            if s.kind is tuple and s.sep:
                kwargs = {"type": str}
            elif s.kind is tuple:
                kwargs = {"nargs": "+", "type": _element_type(s)}
                if choices:
                    kwargs["choices"] = list(choices)
            elif s.kind in (int, float) and not s.target:
                kwargs = {"type": s.kind, **({"choices": list(choices)} if choices and s.strict else {})}
            elif choices and not s.target:
                kwargs = {"choices": list(choices)}
            if s.metavar:
                kwargs["metavar"] = s.metavar
            parser.add_argument(flag, dest=s.dest, default=None, help=help_, required=s.required, **kwargs)

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
                value = tuple(v.strip() for v in value.split(s.sep) if v.strip()) if s.sep else tuple(value)
            given[s.name] = value
        return self.complete(given, context, cli=True)

    def command_line(self, subject: str | None, card, values: Mapping[str, object], *,
                     extra: Sequence[str] = ()) -> str:
        """The exact ``python -m core`` command that reproduces a run with ``values``: every setting written out
        with the value used, so a later change of a default does not change the result."""
        args = ["python", "-m", "core", *self.command.split(), *([subject] if subject is not None else [])]
        args += self.flags(values)
        args += list(extra) + (model_args(card) if card is not None else [])
        return " ".join(shlex.quote(a) for a in args)

    def flags(self, values: Mapping[str, object]) -> list[str]:
        """The command-line arguments that give ``values`` (what :meth:`command_line` writes after the subject),
        for a command that combines them with other flags."""
        args: list[str] = []
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
                items = [str(v) for v in value]
                if items:  # an empty choice is the flag left out (nargs="+" takes at least one value)
                    args += [s.cli_flag, *([s.sep.join(items)] if s.sep else items)]
                continue
            args += [s.cli_flag, _number(value)]
        return args

    def _flags(self) -> dict[str, list[Setting]]:
        flags: dict[str, list[Setting]] = {}
        for s in self.settings:
            if s.cli:
                flags.setdefault(s.cli_flag, []).append(s)
        return flags


def _bool_default(s: Setting) -> bool:
    """The default of a flag-switched bool: a declared callable default counts as False."""
    default = s.default if s.cli_default is AS_PAGE else s.cli_default
    return bool(default) if not callable(default) else False


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
    default = s.default if s.cli_default is AS_PAGE else s.cli_default
    if s.required:
        shown = ""
    elif callable(default) or default is None:
        shown = "" if default is None else " (default: depends on the model)"
    elif s.kind is bool:
        shown = ""
    else:
        text_ = (s.sep or " ").join(map(str, plain(default))) if isinstance(default, tuple) else _number(plain(default))
        shown = f" (default {text_})"
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


def other_model_args(card) -> list[str]:
    """:func:`model_args` as ``--other-model``/``--other-weights``: the second model of a comparison."""
    flags = {"--model": "--other-model", "--weights": "--other-weights"}
    return [flags.get(a, a) if i % 2 == 0 else a for i, a in enumerate(model_args(card))]


def repo_path(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (commands run from its root), else as given."""
    from pathlib import Path

    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[1]))
    except (ValueError, OSError):
        return path
