"""The method contract: a method declared once (function + spec) appears in the CLI and on the page."""
from __future__ import annotations

import enum
import json
import time

import pytest
import torch

from core.attribution.base import Attribution, from_raw, input_gradient
from core.attribution.registry import REGISTRY, attribute, register, unregister
from core.attribution.spec import MethodSpec, Option
from core.cli import main

from tests.conftest import SAMPLES


class Flavour(str, enum.Enum):
    PLAIN = "plain"
    SQUARED = "squared"


def toy_scaled_gradient(model, x, target, *, scale: float = 2.0, flavour: Flavour | str = Flavour.PLAIN,
                        progress=None) -> Attribution:
    """The input gradient times ``scale`` (squared when ``flavour`` says so): a toy with known output."""
    started = time.perf_counter()
    grad = input_gradient(model, x, target) * scale
    if Flavour(flavour) is Flavour.SQUARED:
        grad = grad * grad
    return from_raw(grad, "toy-scaled", target.tolist(), started,
                    options={"scale": scale, "flavour": Flavour(flavour).value})


TOY = MethodSpec("toy-scaled", toy_scaled_gradient, "Toy scaled gradient", "the gradient times a constant",
                 options=(Option("scale", float, "factor applied to the gradient", low=0.5, high=4.0, step=0.5),
                          Option("flavour", Flavour, "plain or squared")))


@pytest.fixture
def toy():
    register(TOY)
    try:
        yield TOY
    finally:
        unregister(TOY.name)


def test_spec_refuses_an_option_the_function_does_not_take():
    with pytest.raises(TypeError, match="not a keyword"):
        MethodSpec("bad", toy_scaled_gradient, "Bad", "", options=(Option("nonsense", int, ""),))


def test_register_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register(MethodSpec("saliency", toy_scaled_gradient, "Saliency again", ""))


def test_every_declared_default_is_the_function_default():
    """The spec reads defaults from the signature, so the CLI help, the widgets and the library agree."""
    for spec in REGISTRY.values():
        keywords = spec.keywords()
        for opt in spec.options:
            if opt.default is None:
                assert spec.default(opt, {"side": 224}) == getattr(keywords[opt.name], "value", keywords[opt.name])
            if opt.choices:
                default = spec.default(opt, {"side": 224})
                assert default is None or default in opt.choices, (spec.name, opt.name)


def test_a_method_that_measures_its_batch_declares_the_kind_of_pass_it_measures(monkeypatch, resnet_tiny):
    """The memory budget (ui/cache.py) counts a measured batch by the declared kind: a method whose batch_size
    defaults to None (measured at run time) must declare the kind of pass it measures (seen here at run time),
    and only such a method may."""
    import inspect

    from core.attribution import base

    kinds = []

    class Recording(base.MeasuredBatches):
        def __init__(self, model, shape, kind, fixed, first):
            kinds.append(kind)
            super().__init__(model, shape, kind, fixed, first)

    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for spec in REGISTRY.values():
        fixed = spec.keywords().get("batch_size", 1)
        assert bool(spec.measured_passes) == (fixed is None), spec.name
        if fixed is None:
            monkeypatch.setattr(inspect.getmodule(spec.fn), "MeasuredBatches", Recording)
            kinds.clear()
            spec.fn(resnet_tiny, x, 0)
            assert kinds == [spec.measured_passes], spec.name
        want = fixed if fixed is not None else base.TRIAL_BATCHES[-1] if spec.measured_passes == "gradient" else 1
        assert spec.gradient_passes_at_once({}) == want, spec.name
        if "batch_size" in spec.keywords():
            assert spec.gradient_passes_at_once({"batch_size": 3}) == 3, spec.name


def test_toy_method_is_in_the_cli_help_and_runs_with_its_generated_flags(toy, capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["attribute", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "toy-scaled" in help_text and "--scale" in help_text and "--flavour {plain,squared}" in help_text
    assert "toy-scaled (default 2.0): factor applied to the gradient" in help_text
    image = str(SAMPLES / "chelsea.jpg")
    assert main(["attribute", image, "--model", "embedded", "--weights", "embedded", "--method", "toy-scaled",
                 "--scale", "3", "--flavour", "squared", "--out-dir", str(tmp_path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["method"] == "toy-scaled" and payload["options"] == {"scale": 3.0, "flavour": "squared"}
    # a flag of another method is refused with the methods that take it
    assert main(["attribute", image, "--model", "embedded", "--method", "toy-scaled", "--samples", "3"]) == 2
    assert "--samples does not apply to --method toy-scaled (only smoothgrad)" in capsys.readouterr().err


def test_toy_method_output_follows_its_options(toy, embedded, cat_input):
    x = cat_input.batch
    one = attribute(embedded, x, 281, method="toy-scaled", scale=1.0)
    three = attribute(embedded, x, 281, method="toy-scaled", scale=3.0, flavour="squared")
    torch.testing.assert_close(three.raw, (3 * one.raw) ** 2)


def test_toy_method_gets_generated_widgets_on_the_page(toy, app):
    app.run()
    app.session_state["attr_method"] = "toy-scaled"
    app.switch_page("pages/attribution.py").run()
    assert not app.exception, app.exception
    assert "Toy scaled gradient" in app.selectbox(key="attr_method").options
    scale = app.slider(key="attr_toy-scaled_scale")
    assert (scale.min, scale.max, scale.value) == (0.5, 4.0, 2.0)
    assert app.selectbox(key="attr_toy-scaled_flavour").options == ["plain", "squared"]
    scale.set_value(3.0).run()
    app.selectbox(key="attr_toy-scaled_flavour").set_value("squared").run()
    app.button(key="attr_run").click().run()  # nothing is computed before the button
    assert not app.exception and not app.error
    assert any(c.value == "the gradient times a constant" for c in app.caption)  # the spec's summary
    assert len(app.get("download_button")) == 2  # the map was computed and drawn
