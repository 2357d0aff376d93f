"""Many users at once against the real server: Debian Chromium sessions (Playwright) on heavy pages while one
more session keeps reloading the home page. Prints ONE JSON object.

The server runs on 127.0.0.1 only, with a fresh ``LENS_CACHE_DIR`` (so everything is computed), offline. Each
heavy session opens one page's URL (the default sample photo, the page's default settings) and waits until the
script has finished (Streamlit's status widget gone for 2 s); the home session reloads the home page and times
until the top-5 table shows. Figures: each session's seconds and whether its page shows an exception or a
"failed" message, the home page's render times (median, p95), the server's peak RSS (polled every 0.2 s) against
``LENS_MEMORY_MB``, and the wall time against the sum of the same sessions run one at a time (``--serial``).

    python bench/load.py                      # the full run: 8 heavy pages + the home reloader
    python bench/load.py --pages attribution --serial --timeout 300
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEAVY = ["attribution", "attack", "perturbation", "featurevis", "similarity", "net2vec", "activation_index"]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
BAD = ("Traceback", "failed:", "Error:", "does not apply here")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamlit run dashboard.py`` on loopback, with its peak RSS sampled."""

    def __init__(self, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.peak_rss = 0
        self._stop = threading.Event()
        for _ in range(240):
            try:
                urllib.request.urlopen(self.url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            self.close()
            raise RuntimeError("streamlit did not start")
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()

    def rss(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.rss())
            time.sleep(0.2)

    def close(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def _settled(page, timeout: float) -> float:
    """Seconds until the script run is over (status widget absent for 2 s in a row)."""
    start = time.perf_counter()
    quiet = None
    while time.perf_counter() - start < timeout:
        running = ("Sample photo" not in page.inner_text("body")
                   or page.locator('[data-testid="stStatusWidget"]').count() > 0)
        if running:
            quiet = None
        elif quiet is None:
            quiet = time.perf_counter()
        elif time.perf_counter() - quiet >= 2.0:
            return quiet - start
        time.sleep(0.25)
    raise TimeoutError(f"page still running after {timeout:.0f} s")


def heavy_session(url: str, name: str, timeout: float) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.perf_counter()
            page.goto(f"{url}/{name}", wait_until="domcontentloaded")
            try:
                seconds = _settled(page, timeout)
                error = ""
            except Exception as e:  # noqa: BLE001 - reported in the figures
                seconds, error = time.perf_counter() - start, f"{type(e).__name__}: {str(e).splitlines()[0]}"
            body = page.inner_text("body")
            bad = [b for b in BAD if b in body]
            return {"page": name, "seconds": round(seconds, 2), "error": error, "bad_text": bad}
        finally:
            browser.close()


def home_session(url: str, stop: threading.Event, timeout: float) -> list[float]:
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            while not stop.is_set():
                start = time.perf_counter()
                page.goto(url, wait_until="domcontentloaded")
                while "Top-5 classes" not in page.inner_text("body") or page.locator(
                        '[data-testid="stTable"]').count() == 0:
                    if time.perf_counter() - start > timeout:
                        raise TimeoutError("home page did not render")
                    time.sleep(0.05)
                times.append(time.perf_counter() - start)
        finally:
            browser.close()
    return times


def run(pages: list[str], *, timeout: float = 600, serial: bool = False, memory_mb: int | None = None) -> dict:
    """The load run (and the serial one when asked); figures as a dict."""
    if CHROMIUM is None:
        raise RuntimeError("Debian chromium is not installed (apt-get install chromium)")
    env = {"LENS_OFFLINE": "1"}
    if memory_mb:
        env["LENS_MEMORY_MB"] = str(memory_mb)
    figures: dict = {"pages": pages, "cores": os.cpu_count()}
    if serial:
        with tempfile.TemporaryDirectory() as cache:
            server = Server({**env, "LENS_CACHE_DIR": cache})
            try:
                figures["serial"] = [heavy_session(server.url, name, timeout) for name in pages]
                figures["serial_sum_s"] = round(sum(s["seconds"] for s in figures["serial"]), 2)
            finally:
                server.close()
    with tempfile.TemporaryDirectory() as cache:
        server = Server({**env, "LENS_CACHE_DIR": cache})
        try:
            results: dict[str, dict] = {}
            stop = threading.Event()
            home: dict[str, list] = {}
            home_thread = threading.Thread(target=lambda: home.setdefault("t", home_session(server.url, stop, timeout)))
            threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, heavy_session(server.url, n, timeout)))
                       for n in pages]
            start = time.perf_counter()
            home_thread.start()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            stop.set()
            home_thread.join(timeout + 30)
            times = sorted(home.get("t", []))
            figures.update({
                "sessions": [results[n] for n in pages], "wall_s": round(wall, 2),
                "home_renders": len(times),
                "home_median_s": round(statistics.median(times), 2) if times else None,
                "home_p95_s": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2) if times else None,
                "peak_rss_mb": round(server.peak_rss / 2**20),
                "memory_budget_mb": memory_mb or int(os.environ.get("LENS_MEMORY_MB", 2400)),
                "exceptions": sum(bool(r["error"] or r["bad_text"]) for r in results.values()),
            })
        finally:
            server.close()
    if serial:
        figures["wall_over_serial_sum"] = round(figures["wall_s"] / figures["serial_sum_s"], 3)
    figures["load_average"] = os.getloadavg()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", nargs="+", default=HEAVY, choices=HEAVY)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--serial", action="store_true", help="also run the pages one at a time (the floor)")
    ap.add_argument("--memory-mb", type=int, default=None)
    args = ap.parse_args()
    print(json.dumps(run(args.pages, timeout=args.timeout, serial=args.serial, memory_mb=args.memory_mb)))


if __name__ == "__main__":
    main()
