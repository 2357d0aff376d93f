"""One real-browser test: Debian's Chromium (never a downloaded browser) loads the running app.

Skipped when Chromium or Playwright is missing, unless LENS_REQUIRE_BROWSER=1 (CI sets it), where it fails.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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
    env = {**os.environ, "LENS_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
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


def test_predictions_appear_in_chromium(server):
    _require(CHROMIUM is not None, "Debian chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # The first visitor of a fresh server opens a page's own URL (a shared link): the router must run,
            # not Streamlit's old pages-directory mode (that showed the page alone, without the sidebar).
            page.goto(server + "/activation_index", wait_until="domcontentloaded")
            page.get_by_text("Sample photo").first.wait_for(timeout=120_000)
            page.get_by_role("heading", name="Dataset examples").wait_for(timeout=60_000)
            body = page.inner_text("body")
            assert "Choose a model and an image" not in body and "Net2Vec concepts" in body
            page.goto(server, wait_until="domcontentloaded")
            page.get_by_text("Top-5 classes").wait_for(timeout=120_000)
            page.get_by_text("Egyptian cat (285)").first.wait_for(timeout=60_000)
            body = page.inner_text("body")
            assert "tiger cat (282)" in body and "tabby (281)" in body
            assert "Traceback" not in body
            if os.environ.get("LENS_SCREENSHOT"):
                page.screenshot(path=os.environ["LENS_SCREENSHOT"], full_page=True)
        finally:
            browser.close()
