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

import inspect
from dataclasses import dataclass
from typing import Callable, Mapping, Union

from .commandline import CommandLine, class_index, model_args, repo_path  # noqa: F401 (the contract's names)
from .settings import AS_PAGE, Bound, Context, Setting, canonical, evaluate, plain  # noqa: F401


@dataclass(frozen=True)
class Technique(CommandLine):
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
            values). A ``run`` that takes a ``batch`` keyword can hold fewer at once (the scheduler passes the
            batch that fits: :attr:`takes_batch`); the others wait until all of them fit.
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

    @property
    def takes_batch(self) -> bool:
        """Whether ``run`` takes ``batch`` (how many of its samples to hold at once; the same result for any)."""
        return "batch" in inspect.signature(self.run).parameters

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

    def complete(self, given: Mapping[str, object], context: Context, *, cli: bool = False) -> dict[str, object]:
        """``given`` values completed with the defaults of the settings it leaves out; settings that are not
        visible with these values are dropped (they are neither shown nor passed). ``cli``: the command line's
        defaults (:attr:`Setting.cli_default`) instead of the page's.

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
            value = plain(given[s.name]) if s.name in given and given[s.name] is not None else s.start(ctx, cli=cli)
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
            stops = s.options(context) if s.strict else ()
            if stops and value not in stops:
                raise ValueError(f"{where} must be one of {', '.join(map(str, stops))}, not {value:g}")
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


def model_context(model, *, target: int | None = None) -> dict[str, object]:
    """The context of ``model``: its input side, classes, labels and default layer (and ``target``)."""
    from .catalogue import default_layer

    try:
        layer = default_layer(model).name
    except (ValueError, AttributeError):
        layer = None
    return {"side": int(model.card.input_size[-1]), "classes": int(model.card.num_classes),
            "labels": tuple(model.labels), "layer": layer, "target": target}
