"""The Report page: pinned results are listed and written as one HTML file."""
from __future__ import annotations

import numpy as np

from core.report import ReportItem


def test_report_page_empty_then_with_pinned_results(app):
    app.switch_page("pages/report.py").run()
    assert not app.exception
    assert any("Nothing pinned yet" in i.value for i in app.info)
    item = ReportItem(title="Saliency for tabby (281)", figure=np.zeros((20, 30, 3), np.uint8), caption="blue -",
                      command="python -m core attribute assets/samples/chelsea.jpg --method saliency", seconds=0.5)
    app.session_state["lens_report_items"] = [item, item]
    app.run()
    assert not app.exception
    assert [m.value for m in app.markdown if m.value.startswith("**")][:2] == [
        "**1. Saliency for tabby (281)**", "**2. Saliency for tabby (281)**"]
    assert len(app.code) == 2 and "--method saliency" in app.code[0].value
    downloads = app.get("download_button")
    assert len(downloads) == 1 and "2 results" in downloads[0].proto.label
    app.button(key="report_remove_0").click().run()
    assert len(app.session_state["lens_report_items"]) == 1
    app.button(key="report_clear").click().run()
    assert any("Nothing pinned yet" in i.value for i in app.info)
