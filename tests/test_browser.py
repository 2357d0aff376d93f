"""Real-browser tests: Debian's Chromium (never a downloaded browser) drives the running app.

Skipped when Chromium or Playwright is missing, unless LENS_REQUIRE_BROWSER=1 (CI sets it), where they fail.
Every request the page makes is recorded: anything not served by the app (loopback) is blocked and fails the
test, as does any failed request or HTTP error.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _require(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("LENS_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    # the server as deployed (conftest sets LENS_GC_FREEZE=0), run by its operator (the Server panel shown)
    env = {**os.environ, "LENS_OFFLINE": "1", "LENS_GC_FREEZE": "1", "LENS_ADMIN": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    _require(CHROMIUM is not None, "Debian chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Requests:
    """Every request of a browser context: external ones are blocked and recorded, failures recorded."""

    def __init__(self, context, origin: str) -> None:
        self.origin, self.external, self.failed, self.errors = origin, [], [], []
        context.route("**/*", self._route)
        context.on("requestfailed", self._failed)
        context.on("response", self._response)

    def _failed(self, request) -> None:
        # net::ERR_ABORTED is the browser cancelling what was still loading when the test navigated to the next
        # page (Streamlit loads its widgets' code on demand); every other failure counts
        if "ERR_ABORTED" not in (request.failure or ""):
            self.failed.append(f"{request.url} ({request.failure})")

    def _response(self, response) -> None:
        # On a deep link (/page) Streamlit's frontend first probes /page/_stcore/{health,host-config} to find the
        # app's base path, and falls back to / on the 404: its own discovery, not a failure.
        probe = response.url.endswith(("/_stcore/health", "/_stcore/host-config"))
        # A picture's file is served for ORPHAN_GRACE_SECONDS after its last reference (ui/media.py), so no fetch
        # of a picture the page shows or has just replaced may fail: a 404 on /media/ is an error.
        if response.status >= 400 and not (probe and response.status == 404):
            self.errors.append(f"{response.status} {response.url}")

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith((self.origin, "data:", "blob:")):
            route.continue_()
        else:
            self.external.append(url)
            route.abort()

    def check(self) -> None:
        assert self.external == [], f"requests outside the app: {self.external}"
        failed = [f for f in self.failed if f not in {e for e in self.external}]
        assert failed == [] and self.errors == [], f"failed: {failed}, HTTP errors: {self.errors}"


def _no_exception_box(page, wait: int = 300_000) -> None:
    """Once the page's run has ended: no exception box, no traceback, and every picture on the page loaded
    (within 30 s: a replaced one's newer file is on its way)."""
    _idle(page, wait)
    assert page.locator("[data-testid='stException']").count() == 0
    assert "Traceback" not in page.inner_text("body")
    try:
        page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
    except Exception:
        broken = page.eval_on_selector_all(
            "img", "els => els.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => "
                   "[i.src.slice(0, 120), i.complete, i.naturalWidth, i.loading, i.getBoundingClientRect().top])")
        raise AssertionError(f"pictures not loaded after 30 s (src, complete, width, loading, top): {broken}")


def test_cold_start_deep_link_real_navigation_and_no_external_request(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    requests = Requests(context, server)
    page = context.new_page()
    try:
        # The first visitor of a fresh server opens a page's own URL (a shared link): the router must run,
        # not Streamlit's old pages-directory mode (that showed the page alone, with raw file names).
        started = time.monotonic()
        page.goto(server + "/activation_index", wait_until="domcontentloaded")
        nav = page.locator("[data-testid='stSidebarNav']")
        nav.get_by_text("Dataset examples").wait_for(timeout=60_000)
        nav_seconds = time.monotonic() - started
        assert nav.get_by_text("activation index", exact=True).count() == 0  # no raw file names
        page.get_by_text("Sample photo").first.wait_for(timeout=180_000)
        page.get_by_role("heading", name="Dataset examples").wait_for(timeout=60_000)
        body = page.inner_text("body")
        assert "Choose a model and an image" not in body and "Net2Vec concepts" in body
        page.goto(server, wait_until="domcontentloaded")
        page.get_by_text("Top-5 classes").wait_for(timeout=120_000)
        page.get_by_text("Egyptian cat (285)").first.wait_for(timeout=60_000)
        body = page.inner_text("body")
        assert "tiger cat (282)" in body and "tabby (281)" in body
        page.get_by_text("Server: memory, jobs, heap (LENS_ADMIN)").first.click()  # the operator's panel
        frozen = page.get_by_text(re.compile("start-up objects frozen")).first
        frozen.wait_for(timeout=60_000)  # the panel's row: the server's own heap, frozen once
        assert re.match(r"[\d,]{6,} start-up objects frozen \(LENS_GC_FREEZE\)", frozen.inner_text()), frozen.inner_text()
        _no_exception_box(page)
        icon = page.locator("link[rel*='icon']").first.get_attribute("href")
        assert icon and not icon.startswith("http") or icon.startswith(server)
        if os.environ.get("LENS_SCREENSHOT"):
            page.screenshot(path=os.environ["LENS_SCREENSHOT"], full_page=True)
        print(f"real navigation after {nav_seconds:.1f} s; {frozen.inner_text()}")
    finally:
        context.close()
    requests.check()


def test_permalink_opens_the_same_view(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    requests = Requests(context, server)
    page = context.new_page()
    try:
        page.goto(server + "/?model=embedded&sample=coffee.jpg", wait_until="domcontentloaded")
        page.get_by_text("espresso (967)").first.wait_for(timeout=180_000)
        _no_exception_box(page)
        assert "sample=coffee.jpg" in page.url and "model=embedded" in page.url
    finally:
        context.close()
    requests.check()


def test_report_opens_offline_with_every_image(browser, tmp_path, embedded, cat_input):
    from core.attribution.registry import attribute
    from core.model.predict import predict
    from core.report import attribution_item, render_html

    attr = attribute(embedded, cat_input.batch, None, method="saliency")
    item = attribution_item(embedded, cat_input.tensor, attr, image_arg="assets/samples/chelsea.jpg")
    top = [c.as_dict() for c in predict(embedded, cat_input.batch)[0]]
    path = tmp_path / "report.html"
    path.write_text(render_html(card=embedded.card, image=cat_input.tensor, image_name="chelsea.jpg",
                                prediction=top, items=[item]), encoding="utf-8")
    context = browser.new_context(offline=True)
    requests = Requests(context, path.as_uri())
    page = context.new_page()
    try:
        page.goto(path.as_uri())
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
        assert len(images) == 2 and all(done and width > 0 for done, width in images)
        assert "python -m core attribute" in page.inner_text("body")
    finally:
        context.close()
    requests.check()


def test_every_page_runs_its_main_action_in_chromium(server, browser):
    """A person's walk through the app: each page opened from a link with small settings, its main action run,
    no exception box, and no failed or external request. The dataset-examples and Net2Vec pages are opened but
    not built (their main action reads a whole folder: minutes on a loaded CI machine; AppTest covers them)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    requests = Requests(context, server)
    page = context.new_page()
    wait = 300_000

    def visit(path: str, *texts: str) -> None:
        page.goto(server + path, wait_until="domcontentloaded")
        for text in texts:
            page.get_by_text(text).first.wait_for(timeout=wait)
        _no_exception_box(page)

    try:
        visit("/?model=embedded", "Top-5 classes", "Egyptian cat (285)")
        # the caption sits under an image, which the browser may draw after the headings below it
        visit("/attack?model=embedded&method=fgsm&run=atk_run", "Confidence over the steps",
              "perturbation δ amplified ×")
        assert page.get_by_text("perturbation δ amplified ×").count() == 1
        visit("/activation_index", "Dataset examples")
        visit("/featurevis?fv_steps=8&fv_size=64", "This channel on your image")
        page.get_by_role("button", name="Visualise").click()
        page.get_by_text("Objective at the model's input size").wait_for(timeout=wait)
        _no_exception_box(page)
        visit("/perturbation?areas=0.1&iterations=20&run=lens_pert_run", "Convergence")
        visit("/similarity", "best match")
        visit("/net2vec", "Learn concepts")
        # last, so the pin stays in this browser session: attribution, Add to report, then the Report page
        visit("/attribution?method=saliency&run=attr_run", "Colours: blue negative")
        page.get_by_role("button", name="Add to report").click()
        page.get_by_text("Add to report (added)").first.wait_for(timeout=wait)
        page.locator("[data-testid='stSidebarNav']").get_by_text("Report").click()
        page.get_by_text("Download the report (1 result, HTML)").wait_for(timeout=wait)
        _no_exception_box(page)
        if os.environ.get("LENS_SCREENSHOT"):
            page.screenshot(path=os.environ["LENS_SCREENSHOT"].replace(".png", "_report.png"), full_page=True)
    finally:
        context.close()
    requests.check()


def _fresh_page(browser, server):
    """A new browser context (a new visitor: a new session) with its requests recorded, and its page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    return context, Requests(context, server), context.new_page()


def _texts(page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def _to_report(page, title: str, command: str) -> None:
    """Open the Report page from the navigation (the same session) and see the one pinned result: its title, its
    figure and the command that reproduces it."""
    page.locator("[data-testid='stSidebarNav']").get_by_text("Report").click()
    page.get_by_text("Download the report (1 result, HTML)").wait_for(timeout=120_000)
    page.get_by_text(f"1. {title}").first.wait_for(timeout=60_000)
    page.locator("[data-testid='stCode']").get_by_text(command).wait_for(timeout=60_000)
    assert page.locator("[data-testid='stMain'] img").count() == 1  # the item's figure
    _no_exception_box(page)


def _concepts_drawn(page, wait: int) -> None:
    """Wait for the Concepts page's deletion curves (its last panel), the run's end and the third map's caption
    (a caption is drawn with its picture), then check the page."""
    page.get_by_text("A faithful ranking drops the logit").first.wait_for(timeout=wait)
    _idle(page, wait)
    page.get_by_text(re.compile(r"^channel \d+: [\d.]+% of the relevance")).nth(2).wait_for(timeout=wait)
    _no_exception_box(page)


def test_concepts_page_in_chromium_ranks_maps_deletes_links_and_reports(server, browser):
    """The Concepts page on the embedded model (chelsea.jpg, 3 channels, 2 random draws): the ranked bar chart of
    relevance shares, the conditional heat maps, the deletion curves; its link opened by a new visitor shows the
    same view; Add to report puts it on the Report page."""
    wait = 300_000
    heat = "[data-testid='stMain'] [data-testid='stImageCaption']"
    verdict = re.compile(r"tiger cat: relevance at blocks\.6 totals \S+ \(explained output \S+\)\.")
    context, requests, page = _fresh_page(browser, server)
    try:
        page.goto(server + "/concepts?model=embedded&top=3&draws=2", wait_until="domcontentloaded")
        page.get_by_role("button", name="Explain with concepts").click(timeout=wait)
        page.get_by_text(verdict).first.wait_for(timeout=wait)
        page.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=wait)  # the ranked shares
        page.get_by_text("Where each channel looked").first.wait_for(timeout=wait)
        page.get_by_role("button", name="Delete channels").click(timeout=wait)
        _concepts_drawn(page, wait)
        charts = page.locator("[data-testid='stVegaLiteChart']")
        assert charts.count() == 2 and all(charts.nth(i).bounding_box()["height"] > 100 for i in range(2))
        bars = [b.bounding_box()["height"] for b in charts.first.locator("g.mark-rect path").all()]
        assert len(bars) == 3 and min(bars) >= 18, bars  # the ranked shares: one bar a channel, each drawn
        captions = [c for c in _texts(page, heat) if c.startswith("channel ")]
        assert len(captions) == 3, captions
        assert all(re.match(r"channel \d+: [\d.]+% of the relevance\. Colours: ", c) for c in captions), captions
        line = page.get_by_text(verdict).first.inner_text()
        link = page.url
        assert "top=3" in link and "cpt_run" in link and "cpt_del_run" in link, link
        page.get_by_role("button", name="Add to report").click()
        page.get_by_text("Add to report (added)").first.wait_for(timeout=wait)
        _to_report(page, "Concepts at blocks.6: tiger cat", "python -m core concepts assets/samples/chelsea.jpg")
    finally:
        context.close()
    requests.check()

    context, requests, page = _fresh_page(browser, server)  # the link, as a colleague opens it
    try:
        page.goto(link, wait_until="domcontentloaded")
        _concepts_drawn(page, wait)
        assert page.get_by_text(verdict).first.inner_text() == line
        assert [c for c in _texts(page, heat) if c.startswith("channel ")] == captions
        assert page.locator("[data-testid='stVegaLiteChart']").count() == 2
    finally:
        context.close()
    requests.check()


def _idle(page, wait: int) -> None:
    """Wait until the script run of the page's session has ended (a widget redrawn by a rerun closes its popup)."""
    page.wait_for_function("document.querySelector(\"[data-testid='stApp']\")"
                           "?.getAttribute('data-test-script-state') === 'notRunning'", timeout=wait)


def _opened(page, clusters: int, wait: int) -> None:
    """Wait for the audit page's last cluster (its opener is the page's last element) and the run's end, then
    check the page."""
    page.get_by_role("button", name="Open on the Attribution page").nth(clusters - 1).wait_for(timeout=wait)
    _idle(page, wait)
    _no_exception_box(page)


def _cluster_lines(page) -> list[str]:
    """Each cluster's line of numbers (size, outlier score, border and centre shares, accuracy), in page order."""
    return [t for t in _texts(page, "[data-testid='stMarkdown']") if re.match(r"Cluster \d+: \d+ images · outlier", t)]


def _open_list(page, combo, attempts: int = 6) -> None:
    """Open a select box's list: neither a click nor ArrowDown on the combobox opens it every time (the first
    may land while the page still reruns), so try both in turn until an option shows."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(attempts):
        combo.scroll_into_view_if_needed()
        if attempt % 2:
            combo.click()
        else:
            combo.focus()
            combo.press("ArrowDown")
        try:
            page.get_by_role("option").first.wait_for(timeout=10_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    pytest.fail(f"the select box's list did not open in {attempts} attempts")


def test_audit_page_in_chromium_finds_the_watermark_opens_an_image_links_and_reports(server, browser):
    """The Dataset audit page on the shipped shortcut demo (class stamped): the eigengap plot, the embedding, the
    flag in words, each cluster's mean map and strip; an image of the flagged cluster opened on the Attribution
    page (with the demo head); the page's link opened by a new visitor shows the same clusters; Add to report puts
    the audit on the Report page."""
    from playwright.sync_api import expect

    from core.audit.demo import MARKED

    wait = 300_000
    flagged = re.compile(r"^\d+ of 20 images of stamped: the evidence sits in the lower-left corner")
    context, requests, page = _fresh_page(browser, server)
    try:
        page.goto(server + "/audit?model=embedded&classes=stamped", wait_until="domcontentloaded")
        page.get_by_text(re.compile(r"^stamped: 20 images, \d clusters?$")).first.wait_for(timeout=wait)
        page.get_by_text(flagged).first.wait_for(timeout=wait)
        heading = page.get_by_text(re.compile(r"^stamped: 20 images")).first.inner_text()
        n = int(re.search(r"(\d) clusters?", heading).group(1))
        assert n >= 2, heading  # the marked images apart from the rest
        _opened(page, n, wait)
        charts = page.locator("[data-testid='stVegaLiteChart']")  # the eigengap bars and the embedding
        assert charts.count() == 2 and all(charts.nth(i).bounding_box()["height"] > 100 for i in range(2))
        captions = _texts(page, "[data-testid='stMain'] [data-testid='stImageCaption']")
        assert sum(c.startswith("Cluster ") for c in captions) == n, captions  # the mean maps
        assert sum(c.startswith("Each image, then its map") for c in captions) == n, captions  # the strips
        clusters = _cluster_lines(page)
        assert len(clusters) == n, clusters
        words = page.get_by_text(flagged).first.inner_text()
        link = page.url
        assert "classes=stamped" in link, link
        page.get_by_role("button", name="Add to report").click()
        page.get_by_text("Add to report (added)").first.wait_for(timeout=wait)
        _idle(page, wait)

        # an image of the flagged cluster (the first), chosen in its picker, opened on the Attribution page
        combo = page.get_by_role("combobox", name="Image").first
        _open_list(page, combo)
        names = page.get_by_role("option").all_inner_texts()
        marked = {f"stamped/{i:02d}.png" for i in range(MARKED)}  # core/audit/demo.py: the first photos marked
        assert len(names) >= 2 and sum(name in marked for name in names) >= 0.9 * len(names), names
        name = names[-1]
        page.get_by_role("option", name=name, exact=True).click()
        expect(combo).to_have_value(name, timeout=60_000)
        page.get_by_role("button", name="Open on the Attribution page").first.click()
        page.get_by_role("heading", name="Attribution", exact=True).wait_for(timeout=wait)
        sidebar = page.locator("[data-testid='stSidebar']")
        sidebar.locator("[data-testid='stImageCaption']").get_by_text(name.split("/")[-1], exact=True).wait_for(
            timeout=wait)
        page.get_by_text(re.compile(r"^Predicted: (plain \(0\)|stamped \(1\)), ")).first.wait_for(timeout=wait)
        expect(sidebar.get_by_role("combobox", name="Model")).to_have_value("Watermark demo head")
        _no_exception_box(page)
        _to_report(page, "Dataset audit of shortcut-demo", "python -m core audit ")
    finally:
        context.close()
    requests.check()

    context, requests, page = _fresh_page(browser, server)  # the audit's link, as a colleague opens it
    try:
        page.goto(link, wait_until="domcontentloaded")
        page.get_by_text(flagged).first.wait_for(timeout=wait)
        _opened(page, n, wait)
        assert page.get_by_text(re.compile(r"^stamped: 20 images")).first.inner_text() == heading
        assert page.get_by_text(flagged).first.inner_text() == words
        assert _cluster_lines(page) == clusters
        assert page.locator("[data-testid='stVegaLiteChart']").count() == 2
    finally:
        context.close()
    requests.check()
