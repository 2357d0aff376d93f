"""Faithfulness and sanity on the attribution page under AppTest (embedded model, offline, few curve steps).

The sanity check recomputes Grad-CAM 12 times (seconds on a quiet machine): its run gets a longer timeout, so a
loaded shared machine does not fail the test."""
from __future__ import annotations

from tests.test_attribution_page import PAGE, _open


def test_map_shows_curves_aucs_and_the_sanity_badge(app):
    app = _open(app, attr_method="gradcam", faith_steps=4)
    app.button(key="attr_run").click().run(timeout=600)
    assert not app.error
    labels = [m.label for m in app.metric]
    assert {"Deletion AUC", "Insertion AUC", "Insertion − deletion"} <= set(labels)
    assert any("Sanity (randomisation): not run" in c.value for c in app.caption)
    app.button(key="faith_sanity").click().run(timeout=600)
    assert not app.exception and not app.error
    badges = [m for m in app.markdown if "sanity pass" in m.value or "sanity fail" in m.value]
    assert len(badges) == 1 and "Spearman" in badges[0].value


def test_compare_methods_ranks_every_method_with_a_mask(app, tmp_path):
    app = _open(app, attr_method="saliency", faith_steps=2, faith_cmp_steps=2,
                faith_methods=["saliency", "gradcam"], faith_metrics=["deletion", "insertion"])
    assert not app.exception
    app.button(key="faith_go").click().run(timeout=600)
    assert not app.exception and not app.error
    table = app.dataframe[0].value
    assert list(table.columns[:4]) == ["method", "insertion − deletion", "deletion AUC", "insertion AUC"]
    assert set(table["method"]) == {"Saliency", "Grad-CAM"}
    diff = table["insertion − deletion"].tolist()
    assert diff == sorted(diff, reverse=True)
    assert any("pointing game needs" in c.value for c in app.caption)
    assert not [b for b in app.button if str(b.key).startswith("lens_stop_")]  # finished: its bar and Stop went


def test_drawing_every_metric_from_tiny_results():
    """The table, overlaid curves, thumbnails and badges with ROAD, sanity and pointing present (a tiny model,
    so every metric is cheap)."""
    from streamlit.testing.v1 import AppTest

    def page():
        import numpy as np
        import streamlit as st
        import torch

        from core.evaluation import evaluate
        from core.model import wrap
        from tests.test_faithfulness import SIDE, SmallCNN
        from ui import faithfulness

        torch.manual_seed(0)
        model = wrap(SmallCNN(), input_size=SIDE)
        x = torch.rand(3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
        mask = np.zeros((SIDE, SIDE), bool)
        mask[8:16, 8:16] = True
        results = {name: evaluate(model, x, 0, method=name, mask=mask, steps=8) for name in ("saliency", "input-x-gradient")}
        faithfulness.evidence(results["saliency"])
        faithfulness.comparison(results, {"saliency": "Saliency", "input-x-gradient": "Input x gradient"},
                                {"gradcam": "no spatial feature stage"})
        st.session_state["n_thumbnails"] = len(results["saliency"].randomisation.groups) + 1

    at = AppTest.from_function(page, default_timeout=300).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert {"ROAD", "sanity", "pointing", "energy in mask"} <= set(table.columns)
    assert table["insertion − deletion"].tolist() == sorted(table["insertion − deletion"], reverse=True)
    assert any("gradcam not evaluated: no spatial feature stage" in c.value for c in at.caption)
    assert any("chance:" in c.value for c in at.caption)
    assert len(at.get("image")) == 2  # one row of randomisation thumbnails per method (one st.image each)
    assert any(c.value.startswith("Each thumbnail on its own colour bar") for c in at.caption)


def test_compare_methods_ranks_both_models_in_one_table(app):
    """The ranking with a second model (a random ViT-Tiny next to the embedded CNN): one table with a model and a
    class column, the CNN's rollout named as not evaluated, and a report item whose command runs both."""
    import shlex

    from core.cli import build_parser
    from tests.test_attribution_page import EMBEDDED_NAME, SECOND_VIT, VIT_NAME

    app = _open(app, attr_method="saliency", faith_steps=2, faith_cmp_steps=2, faith_methods=["saliency", "rollout"],
                faith_metrics=["deletion", "insertion"], **SECOND_VIT)
    app.button(key="faith_go").click().run(timeout=600)
    assert not app.exception and not app.error
    table = app.dataframe[0].value
    assert list(table.columns[:5]) == ["model", "class", "method", "insertion − deletion", "deletion AUC"]
    assert set(zip(table["model"], table["method"])) == {(EMBEDDED_NAME, "Saliency"), (VIT_NAME, "Saliency"),
                                                         (VIT_NAME, "Attention rollout")}
    assert set(table[table["model"] == EMBEDDED_NAME]["class"]) == {"tiger cat (282)"}
    diff = table["insertion − deletion"].tolist()
    assert diff == sorted(diff, reverse=True)
    assert all(0 <= v <= 1 for v in table["deletion AUC"]) and all(0 <= v <= 1 for v in table["insertion AUC"])
    assert any(c.value.startswith(f"Attention rollout not evaluated on {EMBEDDED_NAME}: ") and "no attention" in c.value
               for c in app.caption)
    [b for b in app.button if str(b.key).startswith("report_faith_")][0].click().run()
    assert not app.exception
    item = app.session_state["lens_report_items"][-1]
    assert item.title == f"Compare methods: {EMBEDDED_NAME} and {VIT_NAME}" and len(item.table) == 3
    assert {row["model"] for row in item.table} == {EMBEDDED_NAME, VIT_NAME}
    args = build_parser()[0].parse_args(shlex.split(item.command)[3:])
    assert (args.command, args.method, args.target) == ("evaluate", ["saliency", "rollout"], None)
    assert (args.model, args.other_model, args.other_weights, args.steps) == ("embedded", "vit_tiny_patch16_224",
                                                                              "random", 2)
