"""Real browser: clicking a cell of the confusion heat map shows that cell's images (AppTest cannot click a chart)."""
from __future__ import annotations

from tests.test_browser import CHROMIUM, _require, server  # noqa: F401  (the running-app fixture)


def test_clicking_a_confusion_cell_shows_its_images(server):  # noqa: F811
    _require(CHROMIUM is not None, "Debian chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server + "/error_analysis", timeout=180_000)
            page.get_by_text("Demo: coarse head", exact=False).click(timeout=180_000)
            page.get_by_text("Most confident mistakes").wait_for(timeout=240_000)
            # the most frequent confusion is chosen first (animal -> interior); click food -> object instead
            page.get_by_text("3 images of animal predicted interior", exact=False).wait_for(timeout=120_000)
            cells = page.locator("[data-testid='stVegaLiteChart'] path[role='graphics-symbol']")
            cells.first.wait_for(timeout=60_000)
            assert cells.count() == 36  # 6 x 6 classes, drawn row by row (true class major)
            cells.nth(1 * 6 + 3).click(force=True)
            page.get_by_text("1 image of food predicted object", exact=False).wait_for(timeout=120_000)
        finally:
            browser.close()
