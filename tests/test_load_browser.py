"""Many users at once, with real browsers against the real server on loopback (Debian Chromium via Playwright):
Stop, a closed tab, and a small version of bench/load.py (a failing job: tests/test_app_faults.py).

The server's scheduler writes its status to ``LENS_CACHE_DIR/jobs.json`` whenever a job starts or ends; the tests
read it (and the server's CPU time from /proc) to see what the server computes. Skipped without Chromium or
Playwright unless LENS_REQUIRE_BROWSER=1.
"""
from __future__ import annotations

import threading
import time

import pytest

from bench import load
from tests.test_browser import CHROMIUM, _require, browser  # noqa: F401 (the fixture: Debian Chromium)

LATE_RESULTS = {"Evaluation"}  # stored after the session's own result is on the page (see the small load test)
STOP = "[class*='st-key-lens_stop_'] button"  # the Stop button of a progress bar (by its widget key)
LONG_JOB = "/attribution?model=embedded&sample=astronaut.jpg&method=smoothgrad&samples=200&converge=0&run=attr_run"


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory):
    s = load.Server({}, tmp_path_factory.mktemp("cache"))
    try:
        yield s
    finally:
        s.close()


def _wait(condition, timeout: float, what: str, poll: float = 0.05) -> float:
    """Seconds until ``condition()`` holds (fails after ``timeout``)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not after {timeout:.0f} s")
        time.sleep(poll)
    return time.monotonic() - start


def _running(server) -> int:
    return server.jobs().get("running", 0)


def _start_long_job(browser, server, path: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(server.url + path, wait_until="domcontentloaded")
    stop = page.locator(STOP).first
    stop.wait_for(timeout=300_000)  # the job reports progress: it is computing
    _wait(lambda: _running(server) == 1, 10, "the job in the status file")
    time.sleep(1.0)
    assert _running(server) == 1  # still computing: a long job
    return context, page, stop


def test_stop_stops_the_job_and_the_page_does_not_restart_it(browser, server):
    context, page, stop = _start_long_job(browser, server, LONG_JOB.replace("samples=200", "samples=199"))
    try:
        finished = server.jobs()["finished"]
        stop.click()
        freed = _wait(lambda: _running(server) == 0, 5, "the stopped job's slot")
        page.get_by_text("Stopped. Press Compute the map to compute.").wait_for(timeout=30_000)
        time.sleep(3.0)  # the rerun has long happened: nothing started again
        status = server.jobs()
        assert status["running"] == 0 and status["queued"] == 0 and status["finished"] == finished + 1
        assert page.locator(STOP).count() == 0
        assert page.locator("[data-testid='stException']").count() == 0
        assert "run=attr_run" not in page.url  # a link copied now does not restart it either
        print(f"Stop freed the slot in {freed:.2f} s")
    finally:
        context.close()


def test_a_progress_bar_jumps_without_a_transition(browser, server):
    """dashboard.py's style: the bar's width changes without a CSS transition, which made the browser repaint at
    its frame rate after every report (twice the CPU of a waiting tab, measured)."""
    context, page, stop = _start_long_job(browser, server, LONG_JOB.replace("samples=200", "samples=198"))
    try:
        def durations():
            return page.locator("[data-testid='stProgress']").first.evaluate(
                "bar => [...bar.querySelectorAll('*')].map(e => getComputedStyle(e).transitionDuration)")
        # the page's style sheet may reach the browser a moment after the bar's first paint: the bar must settle
        # without a transition within a second, and stay so
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not all(set(d.split(", ")) == {"0s"} for d in durations()):
            time.sleep(0.1)
        found = durations()
        assert found and all(set(d.split(", ")) == {"0s"} for d in found), found
        stop.click()
        _wait(lambda: _running(server) == 0, 5, "the stopped job's slot")
    finally:
        context.close()


def test_a_closed_tab_frees_its_job_within_two_seconds(browser, server):
    context, _page, _stop = _start_long_job(browser, server, LONG_JOB)
    context.close()  # the tab goes: its websocket closes
    freed = _wait(lambda: _running(server) == 0, 10, "the closed tab's job")
    cpu = server.cpu_seconds()
    time.sleep(2.0)
    idle = server.cpu_seconds() - cpu
    print(f"closed tab: job freed in {freed:.2f} s; server CPU afterwards {idle / 2:.2f} s/s")
    assert freed <= 2.0
    assert idle < 0.5 * 2.0  # no orphan computation keeps burning a core (one job used 2 cores: 2 s/s)


def test_small_load_same_numbers_as_serial_no_exception_inside_the_budget():
    """bench/load.py's small version: three short jobs and a home-page reloader at once, against the same three
    sessions one after another on a fresh server."""
    _require(CHROMIUM is not None, "Debian chromium is not installed (apt-get install chromium)")
    figures: dict = {}
    # on a thread of its own: this module's browser fixture holds Playwright's sync API on the main thread
    runner = threading.Thread(target=lambda: figures.update(load.run(load.SMALL, timeout=600, serial=True)))
    runner.start()
    runner.join(1800)
    assert figures, "the load run did not finish"
    print(figures)
    assert [r["error"] for r in figures["concurrent"]] == [""] * len(load.SMALL)
    assert figures["exceptions"] == 0, figures["concurrent"]
    assert figures["peak_rss_under_budget"], (figures["peak_rss_mb"], figures["memory_budget_mb"])
    # the figures say where the CPU went and whether memory had to be shed (read from the scheduler's jobs.json)
    assert figures["concurrent_client_cpu_s"] > 0 and figures["concurrent_server_cpu_s"] > 0, figures
    assert isinstance(figures["memory_sheds"], int) and figures["memory_shed_mb"] >= 0, figures
    # the home page keeps rendering while the jobs run: its median within the 3 s or three times its own
    # render time alone on this machine (the floor, measured in the same run), its p95 within ten times that (a
    # page blocked for the whole run, as before the scheduler, takes the run's full length). These are reloads:
    # the reloading browser loaded the app before the clock started (bench/load.py: a first visit's empty cache
    # costs Chromium ~5 CPU-s, and four of them at once on two cores measured the browsers, 9-13 s)
    alone = figures["home_alone_p50_s"]
    assert figures["home_renders"] >= 3 and figures["home_cold_alone_s"] >= alone
    # the first render shares the cores with the three pages' own start (their scripts and first jobs at once):
    # the bound is on the renders after it, which the scheduler decides
    later = [seconds for _start, seconds in figures["home_timeline"][1:]]
    assert figures["home_p50_s"] <= max(3.0, 3 * alone) and later and max(later) <= 10 * alone, figures
    same = figures["same_as_serial"]
    # every session's result is there, and every result both runs stored holds the same numbers (a result a page
    # stores after its session's result is shown, such as a preview, may be cut short when the tab closes)
    assert same["serial_results"] >= len(load.SMALL) and same["concurrent_results"] >= len(load.SMALL), same
    # every job runs on cores // LENS_MAX_JOBS threads alone or not (core.serve.scheduler): the same numbers as serial;
    # only the faithfulness panel's evaluation, which the Attribution page starts after its map is shown, may be
    # missing from a run whose tab closed first
    assert not same["differences"] and set(same["missing_types"]) <= LATE_RESULTS, same
