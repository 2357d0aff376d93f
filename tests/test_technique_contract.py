"""The settings contract: every registered technique's declaration gives the page's widgets, the CLI flags (with
the defaults in --help), the result key and the report's command line, and they agree; a toy technique registered
from a test appears on its page, in --help, in the warm-up and in the report with no other edit."""
from __future__ import annotations

import argparse
import enum
import json
import shlex
from dataclasses import replace

import pytest
import torch

from core.cli import build_parser, main
from core.spec import AS_PAGE, Setting, Technique, canonical, model_context
from core.techniques import TECHNIQUES, register, unregister

from tests.conftest import SAMPLES


class Flavour(str, enum.Enum):
    PLAIN = "plain"
    SQUARED = "squared"


def toy_run(model, x, values, *, progress=None):
    """The mean pixel of ``x`` (3, H, W) times ``scale`` (squared when ``flavour`` says so): a known output."""
    value = float(x.mean()) * values["scale"]
    return {"value": value * value if values["flavour"] == Flavour.SQUARED.value else value}


TOY = Technique(
    "toy-mean", "Toy mean pixel", "the mean pixel times a constant",
    (Setting("scale", float, "factor applied to the mean", low=0.5, high=4.0, step=0.5, default=2.0),
     Setting("flavour", Flavour, "plain or squared", default=Flavour.PLAIN),
     Setting("exponent", int, "unused unless squared", low=1, high=3, default=2,
             visible=lambda v: v.get("flavour") == "squared")),
    toy_run, command="toy-mean", warm=True, describe=lambda r: {"value": r["value"]})


@pytest.fixture
def toy():
    register(TOY)
    try:
        yield TOY
    finally:
        unregister(TOY.name)


CONTEXT = {"side": 224, "classes": 1000, "labels": tuple(f"class {i}" for i in range(1000)), "layer": "stages.3",
           "target": 281}


# flags a command requires that are not settings of the technique (where its files go)
COMMAND_ONLY = {"visualize": ["--out-dir", "out"], "report": ["--out", "r.html"], "similarity": ["--at", "3,4"],
                "fit-head": ["--out", "h.safetensors"]}


def _subject_args(spec: Technique) -> list[str]:
    return {"image": ["x.jpg"], "folder": ["photos"], "model": []}[spec.subject] + COMMAND_ONLY.get(spec.command, [])


def _command_parser(spec: Technique) -> argparse.ArgumentParser:
    """The argparse parser of ``spec``'s subcommand, as ``python -m core`` builds it."""
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[spec.command.split()[0]]


def test_every_technique_declares_each_setting_once_with_a_valid_default():
    for spec in TECHNIQUES.values():
        values = spec.defaults(CONTEXT)
        assert spec.complete(values, CONTEXT) == values, spec.name  # the defaults are inside their own ranges
        for s in spec.settings:
            assert s.help, (spec.name, s.name)


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_cli_without_flags_gives_the_page_defaults_and_help_shows_them(name):
    """Page (``defaults``) and CLI (``from_args`` of no flags) start at the same values, so they build the same
    result key; ``--help`` states every fixed default."""
    spec = TECHNIQUES[name]
    if not spec.command:
        pytest.skip(f"{name} has no command line")
    p = _command_parser(spec)
    defaults = _with_required(spec, spec.defaults(CONTEXT))
    required = [a for s in spec.settings if s.required and s.name in defaults
                for a in (s.cli_flag, *_cli_words(s, defaults[s.name]))]  # given, at the page's value
    args = p.parse_args(_subject_args(spec) + required)
    # the command line starts where the page does, except where a setting declares its own cli_default
    assert spec.from_args(args, CONTEXT) == spec.complete({k: v for k, v in defaults.items()
                                                           if k in dict(zip(required[::2], required[1::2]))
                                                           or spec.setting(k).cli_flag in required},
                                                          CONTEXT, cli=True)
    if all(s.cli_default is AS_PAGE for s in spec.settings):  # then CLI and page build the same result key
        assert spec.from_args(args, CONTEXT) == defaults
        assert spec.key("m", "i", spec.from_args(args, CONTEXT)) == spec.key("m", "i", defaults)
    text = " ".join(p.format_help().split())
    for s in spec.settings:
        if s.cli:
            assert s.cli_flag in text, (name, s.cli_flag)
        if s.cli and s.kind not in (bool,) and s.default is not None and not callable(s.default) and not s.required:
            assert "(default" in text and s.help.split()[0] in text, (name, s.name)


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_the_report_command_line_parses_back_to_the_same_values(name, embedded):
    spec = TECHNIQUES[name]
    if not spec.command:
        pytest.skip(f"{name} has no command line")
    context = model_context(embedded, target=1)
    for values in _variants(spec, context):
        subject = {"image": "x.jpg", "folder": "photos", "model": None}[spec.subject]
        line = spec.command_line(subject, embedded.card, values, extra=COMMAND_ONLY.get(spec.command, []))
        assert line.startswith(f"python -m core {spec.command}")
        parser, _ = build_parser()
        args = parser.parse_args(shlex.split(line)[3:])
        # what the command line can say comes back (a page-only setting, cli=False, is the page's alone)
        assert _on_the_command_line(spec, spec.from_args(args, context)) == _on_the_command_line(spec, values), (
            name, line)


def _with_required(spec: Technique, values: dict, context=CONTEXT) -> dict:
    """``values`` with a required setting that has no page default given its first choice."""
    def first(s: Setting):
        options = s.options(context)
        return tuple(options[:1]) if s.kind is tuple else options[0]
    return {k: (v if v is not None or not spec.setting(k).required else first(spec.setting(k)))
            for k, v in values.items()}


def _cli_words(s: Setting, value) -> list[str]:
    if s.kind is tuple:
        return [s.sep.join(map(str, value))] if s.sep else [str(v) for v in value]
    return [str(value)]


def _on_the_command_line(spec: Technique, values: dict) -> dict:
    return {k: v for k, v in values.items() if spec.setting(k).cli}


def _variants(spec: Technique, context) -> list[dict]:
    """The defaults, and each choice and bool of each setting flipped once (visibility follows)."""
    base = _with_required(spec, spec.defaults(context), context)
    out = [base]
    for s in spec.settings:
        if s.name not in base:
            continue
        if s.kind is bool:
            out.append(spec.complete({**base, s.name: not base[s.name]}, context))
        for choice in s.choices:
            value = (choice,) if s.kind is tuple else choice
            if value != base[s.name]:
                out.append(spec.complete({**{k: v for k, v in base.items() if k == s.name or not
                                             spec.setting(k).visible}, s.name: value}, context))
    return out


def test_a_shared_flag_goes_to_the_visible_setting():
    spec = TECHNIQUES["attack"]
    p = _command_parser(spec)
    linf = spec.from_args(p.parse_args(["x.jpg", "--eps", "8"]), CONTEXT)
    l2 = spec.from_args(p.parse_args(["x.jpg", "--eps", "0.7", "--norm", "l2"]), CONTEXT)
    assert linf["eps"] == 8.0 and "eps_l2" not in linf
    assert l2["eps_l2"] == 0.7 and "eps" not in l2 and l2["step_l2"] == spec.setting("step_l2").default


def test_values_outside_a_strict_range_or_choices_are_refused_with_the_flag(toy):
    with pytest.raises(ValueError, match=r"--scale \(toy-mean\) must be between 0.5 and 4"):
        toy.complete({"scale": 9.0}, CONTEXT)
    with pytest.raises(ValueError, match="has no setting nonsense"):
        toy.complete({"nonsense": 1}, CONTEXT)
    with pytest.raises(TypeError, match="declared twice"):
        replace(toy, settings=toy.settings + toy.settings[:1])


def test_hidden_settings_are_neither_kept_nor_in_the_key(toy):
    plain = toy.defaults(CONTEXT)
    squared = toy.complete({"flavour": "squared"}, CONTEXT)
    assert "exponent" not in plain and squared["exponent"] == 2
    assert toy.complete({"exponent": 3}, CONTEXT) == plain  # not visible with the plain flavour: dropped
    assert toy.key("m", "i", plain) != toy.key("m", "i", squared)
    assert toy.key("m", "i", plain) == ("toy-mean", "m", "i", canonical(plain))


def test_toy_technique_is_a_cli_subcommand_with_its_defaults_in_help(toy, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "toy-mean" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["toy-mean", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--scale SCALE factor applied to the mean (default 2)" in text
    assert "--flavour {plain,squared} plain or squared (default plain)" in text
    image = str(SAMPLES / "chelsea.jpg")
    assert main(["toy-mean", image, "--model", "embedded", "--scale", "3", "--flavour", "squared", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["technique"] == "toy-mean" and payload["values"] == {"scale": 3.0, "flavour": "squared",
                                                                       "exponent": 2}
    assert payload["results"][0]["value"] > 0
    assert main(["toy-mean", image, "--model", "embedded", "--scale", "9"]) == 2
    assert "--scale (toy-mean) must be between 0.5 and 4" in capsys.readouterr().err


def test_toy_technique_is_warmed_under_the_key_its_page_reads(toy, app, monkeypatch, tmp_path, capsys):
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SAMPLES / "chelsea.jpg", folder / "chelsea.jpg")
    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["warm", str(folder), "--pages", "toy-mean", "--model", "embedded", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(w["page"], w["status"]) for w in out["written"]] == [("toy-mean", "computed")]

    from ui import cache

    calls = []
    monkeypatch.setitem(TECHNIQUES, "toy-mean", replace(toy, run=lambda *a, **k: calls.append(1) or {"value": 0}))
    cache.results.clear()  # a restarted server
    app.run()
    app.switch_page("pages/techniques.py").run()
    app.selectbox(key="tech_name").set_value("toy-mean").run()
    app.button(key="tech_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert not calls and cache.results().hits["disk"] == 1  # read from what warm wrote, not computed
    cache.results.clear()


def test_toy_technique_gets_generated_widgets_a_result_and_a_report_line_on_the_page(toy, app):
    app.run()
    app.switch_page("pages/techniques.py").run()
    assert not app.exception, app.exception
    assert "Toy mean pixel" in app.selectbox(key="tech_name").options
    app.selectbox(key="tech_name").set_value("toy-mean").run()
    scale = app.slider(key="toy-mean_scale")
    assert (scale.min, scale.max, scale.value) == (0.5, 4.0, 2.0)
    assert app.selectbox(key="toy-mean_flavour").options == ["plain", "squared"]
    scale.set_value(3.0).run()
    app.selectbox(key="toy-mean_flavour").set_value("squared").run()
    assert app.slider(key="toy-mean_exponent").value == 2  # shown once squared
    app.button(key="tech_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    command = next(c.value for c in app.code)
    assert command.startswith("python -m core toy-mean assets/samples/") and "--scale 3 --flavour squared" in command
    report_button = next(b for b in app.button if b.key and b.key.startswith("report_tech_"))
    report_button.click().run()
    from ui.report import KEY

    item = app.session_state[KEY][-1]
    assert item.command == command and item.settings["scale"] == 3.0 and "value" in item.figures
