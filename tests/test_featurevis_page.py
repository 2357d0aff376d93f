"""The feature visualisation page under AppTest (embedded model, small settings)."""
from __future__ import annotations

import re

import pytest

from core.index.build import channel_map


def _open(app):
    app.run()
    app.switch_page("pages/featurevis.py").run()
    assert not app.exception
    return app


def test_page_visualises_a_channel_and_shows_filters(app, embedded, cat_input):
    app = _open(app)
    assert app.title[0].value == "Feature visualisation"
    app.selectbox(key="fv_layer").set_value("blocks.2").run()
    app.slider(key="fv_steps").set_value(8).run()
    app.selectbox(key="fv_size").set_value(64).run()
    app.button(key="fv_go").click().run()
    assert not app.exception and not app.error
    [said] = [m.value for m in app.markdown if m.value.startswith("Objective at the model's input size")]
    assert re.fullmatch(r"Objective at the model's input size: \*\*(\S+)\*\* \(mid-grey image: \S+\)\. 8 steps "
                        r"in \d+\.\d s\.", said)
    value = re.search(r"\*\*(\S+)\*\*", said).group(1)
    captions = [c for image in app.main.get("image") for c in image.captions]
    assert captions[0].startswith("objective ")  # the one optimised image, then the channel on the user's image
    assert float(captions[0].split()[1]) == pytest.approx(float(value), rel=1e-2)  # .3g against .4g of one value
    assert any("This channel on your image" == s.value for s in app.subheader)
    amap = channel_map(embedded, cat_input.batch, "blocks.2", 0)
    assert any(c.startswith(f"activation of channel 0 (mean {float(amap.mean()):.3g}, max {float(amap.max()):.3g}); "
                            "dark ") and "activation" in c.split(";")[1] for c in captions)
    # the filters tab: patchify/3x3 stem tiles and the statistics table
    assert any(s.value.startswith("First layer: conv_stem") for s in app.subheader)
    stats = app.dataframe[-1].value
    assert "conv_stem" in set(stats["layer"]) and (stats["params"] > 0).all()


def test_page_reports_bad_requests_as_messages(app):
    app = _open(app)
    app.slider(key="mix_steps").set_value(8).run()
    app.selectbox(key="mix_size").set_value(64).run()
    app.number_input(key="mix_batch").set_value(2).run()
    app.button(key="mix_go").click().run()  # channels 0 and 1 by default: runs
    assert not app.exception and not app.error
    frames = [c for image in app.main.get("image") for c in image.captions if " A + " in c]
    assert [f.split(":")[0] for f in frames] == ["1.00 A + 0.00 B", "0.00 A + 1.00 B"]
    app.number_input(key="mix_b").set_value(0).run()
    app.button(key="mix_go").click().run()
    assert not app.exception
    assert [e.value for e in app.error] == ["Choose two different channels."]


def test_one_layer_picker_a_link_and_add_to_report(app):
    # a link with the page's settings and run= opens the visualisation computed
    app.query_params.update({"layer": "blocks.3", "objective": "unit", "channel": "5", "fv_steps": "8",
                             "fv_size": "64", "run": "fv_go"})
    app = _open(app)
    layer_boxes = [s for s in app.selectbox if s.label == "Layer" or "layer" in s.label.lower()]
    assert [s.key for s in layer_boxes] == ["fv_layer"]  # one layer picker for the whole page
    assert app.selectbox(key="fv_layer").value == "blocks.3" and app.radio(key="fv_objective").value == "unit"
    assert app.number_input(key="fv_channel").value == 5
    assert any(m.value.startswith("Objective at the model's input size") for m in app.markdown)
    # the neuron-interaction tab and the depthwise kernels follow the same layer
    assert app.number_input(key="mix_a").label.startswith("Channel A of blocks.3")
    assert any(c.value.startswith("blocks.3.0.conv_dw: ") for c in app.caption)
    [pin] = [b for b in app.button if b.key and b.key.startswith("report_fv_")]
    pin.click().run()
    assert not app.exception
    [item] = app.session_state["lens_report_items"]
    assert item.title == "Feature visualisation: blocks.3 channel 5, unit (centre)"
    assert item.command.startswith("python -m core visualize --objective unit --layer blocks.3 --channel 5 "
                                   "--steps 8 --size 64 --seed 0") and "--model embedded" in item.command
    assert item.seed == 0 and item.settings["steps"] == 8 and "image" not in item.settings
    assert item.figure.shape[0] == 64 + 22  # the one 64-pixel image under its caption line
    # a narrower layer never keeps a channel it does not have: clamped, and the page says so
    app.number_input(key="fv_channel").set_value(70).run()
    app.selectbox(key="fv_layer").set_value("blocks.0").run()
    assert not app.exception and app.number_input(key="fv_channel").value == 15
    assert "70 does not exist here (0-15): clamped to 15." in [c.value for c in app.caption]


def test_changing_the_layer_keeps_a_channel_the_new_layer_has(app):
    app = _open(app)
    app.selectbox(key="fv_layer").set_value("blocks.5").run()
    app.number_input(key="fv_channel").set_value(9).run()
    app.number_input(key="mix_b").set_value(12).run()
    for layer in ("blocks.3", "blocks.6"):  # 80 and 320 channels: 9 and 12 exist in both
        app.selectbox(key="fv_layer").set_value(layer).run()
        assert not app.exception
        assert app.number_input(key="fv_channel").label == f"Channel of {layer} (0-{79 if layer == 'blocks.3' else 319})"
        assert (app.number_input(key="fv_channel").value, app.number_input(key="mix_b").value) == (9, 12)
        assert not any("does not exist here" in c.value for c in app.caption)
    assert app.query_params["channel"] == "9" and app.query_params["layer"] == "blocks.6"


def test_a_link_naming_a_channel_the_layer_lacks_is_clamped(app):
    app.query_params.update({"layer": "blocks.0", "channel": "999", "a": "-3"})
    app = _open(app)
    assert not app.exception and not app.error
    assert app.number_input(key="fv_channel").value == 15 and app.number_input(key="mix_a").value == 0
    assert "999 does not exist here (0-15): clamped to 15." in [c.value for c in app.caption]


def test_filters_tab_adds_kernels_and_weight_statistics_to_the_report(app, monkeypatch):
    import html
    import shlex

    import core.report
    from core.cli import build_parser

    app = _open(app)
    app.selectbox(key="fv_layer").set_value("blocks.1").run()  # a stage that holds depthwise convolutions
    for prefix in ("report_filters_", "report_filters_", "report_filters_"):
        pins = [b for b in app.button if b.key and b.key.startswith(prefix) and not b.disabled]
        pins[0].click().run()
        assert not app.exception, app.exception
    items = app.session_state["lens_report_items"]
    assert sorted(i.title.split(":")[0] for i in items) == ["Depthwise kernels", "First-layer kernels",
                                                            "Weight statistics per layer"]
    by_title = {i.title.split(":")[0]: i for i in items}
    stats = by_title["Weight statistics per layer"]
    assert stats.figure is None and stats.table[0]["layer"] == "conv_stem" and stats.table[0]["near zero"].endswith("%")
    parser, _ = build_parser()
    args = parser.parse_args(shlex.split(by_title["Depthwise kernels"].command)[3:])
    assert args.command == "filters" and args.depthwise.startswith("blocks.1.") and args.model == "embedded"
    args = parser.parse_args(shlex.split(by_title["First-layer kernels"].command)[3:])
    assert args.depthwise is None and args.out_dir == "lens-out/filters"
    pages = []
    real = core.report.render_html
    monkeypatch.setattr(core.report, "render_html", lambda **kw: pages.append(real(**kw)) or pages[-1])
    app.switch_page("pages/report.py").run()
    assert not app.exception, app.exception
    page = html.unescape(pages[-1])
    assert "Weight statistics per layer" in page and "<th>dead outputs</th>" in page
    assert page.count("<pre><code>python -m core filters") == 3 and page.count("<img ") == 3  # image, two grids
