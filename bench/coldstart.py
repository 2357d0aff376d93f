"""Sleep and wake: from launching ``streamlit run dashboard.py`` to the first picture on the home page and to the
Attribution page's default map, as a visitor's Chromium sees them. Prints ONE JSON object.

A hosted app is stopped when idle and started again by the next visit. Each round starts the server (offline,
loopback, headless) twice:

- **cold**: an empty ``LENS_CACHE_DIR``: every result is computed;
- **warm**: the ``LENS_CACHE_DIR`` the cold start left: the Attribution page's map comes from the result store
  (``jobs_run`` says how many jobs the server computed: 0 when everything came from the store).

The clock starts when ``streamlit run`` is launched (Chromium is already running, as a visitor's browser is). A
fresh browser context (an empty browser cache: a first visit, Streamlit's JavaScript included) polls the health
endpoint every 0.05 s, opens the home page as soon as the server answers, and records:

- ``listening_s``: the server answers ``/_stcore/health``;
- ``first_picture_s``: the first image element with its pixels loaded (the sample photo, drawn in the sidebar once
  the model is loaded), and where it is (``first_picture_in``);
- ``home_top5_s``: the home page's top-5 table;
- ``attribution_map_s``: then the same tab opens the Attribution page with its default view (default model,
  image and method: SmoothGrad for the predicted class) and ``run=attr_run``, the link of a visitor who had
  pressed "Compute the map"; the map is drawn when its download button shows. ``attribution_after_home_s`` is the
  part after the home page.

The cold start then waits until the page has settled (the faithfulness curves under the map computed and stored
too) before the server is stopped, so the warm start finds everything. Medians over the rounds; the load average
before and after, the CPU model. The operating system's file cache is warm in both (PyTorch's libraries are read
from memory after the first round): a host that wakes on another machine also reads them from disk.

    python bench/coldstart.py                 # 3 rounds
    python bench/coldstart.py --rounds 5 --timeout 300
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from bench.load import CHROMIUM, cpu_model, free_port, launch, settled  # noqa: E402

TARGET_WARM_FIRST_PICTURE_S = 15.0
ATTRIBUTION = "/attribution?run=attr_run"
MAP_DRAWN = "Download raw map (.npy)"
# the first <img> whose pixels have arrived (icons are fonts, not images), and whether it is in the sidebar
FIRST_PICTURE = """() => {
  const img = [...document.images].find(i => i.complete && i.naturalWidth > 0);
  return img ? (img.closest('[data-testid="stSidebar"]') ? 'sidebar' : 'main') : null;
}"""
FIGURES = ("listening_s", "first_picture_s", "home_top5_s", "attribution_map_s", "attribution_after_home_s")


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)
    except (OSError, ValueError, IndexError):
        return None


def _jobs_run(cache_dir: Path, pid: int) -> int:
    """Jobs the server ``pid`` finished (its scheduler writes jobs.json when a job starts or ends; a file left by
    the previous server in the same cache has another pid)."""
    try:
        status = json.loads((cache_dir / "jobs.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(status.get("finished", 0)) if status.get("pid") == pid else 0


def start(browser, cache_dir: Path, timeout: float, settle: bool) -> dict:
    """One start of the server with ``cache_dir`` as its ``LENS_CACHE_DIR``; the seconds from the launch to each
    milestone (see the module's doc)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LENS_OFFLINE": "1", "LENS_CACHE_DIR": str(cache_dir)}
    env.pop("LENS_GC_FREEZE", None)  # the app's default, as deployed
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict = {}
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(timeout * 1000)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with status {proc.returncode}")
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                if time.perf_counter() - t0 > timeout:
                    raise TimeoutError("streamlit did not answer")
                time.sleep(0.05)
        out["listening_s"] = time.perf_counter() - t0
        page = context.new_page()
        page.goto(url + "/", wait_until="commit")
        where = page.wait_for_function(FIRST_PICTURE, polling=50)
        out["first_picture_s"] = time.perf_counter() - t0
        out["first_picture_in"] = where.json_value()
        out["server_cpu_at_first_picture_s"] = _cpu_seconds(proc.pid)
        page.get_by_text("Top-5 classes").first.wait_for()
        page.locator('[data-testid="stTable"]').first.wait_for()
        out["home_top5_s"] = time.perf_counter() - t0
        home = time.perf_counter()
        page.goto(url + ATTRIBUTION, wait_until="commit")
        page.get_by_text(MAP_DRAWN).first.wait_for()
        out["attribution_map_s"] = time.perf_counter() - t0
        out["attribution_after_home_s"] = time.perf_counter() - home
        if settle:  # the curves under the map are computed and stored too, for the warm start
            settled(page, timeout)
        out["problems"] = [t.strip().splitlines()[0] for t in page.locator(
            "[data-testid='stException'], [data-testid='stAlertContentError']").all_inner_texts() if t.strip()]
        out["jobs_run"] = _jobs_run(cache_dir, proc.pid)
        out["server_cpu_s"] = _cpu_seconds(proc.pid)
    finally:
        context.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


def _medians(runs: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in FIGURES if all(k in r for r in runs)}


def run(rounds: int = 3, timeout: float = 600, cache_root: str | Path | None = None) -> dict:
    """``rounds`` cold starts, each followed by a warm start on the cache it left; figures as a dict."""
    if CHROMIUM is None:
        raise RuntimeError("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    figures: dict = {"rounds": rounds, "cores": os.cpu_count(), "cpu": cpu_model(),
                     "load_average_before": [round(v, 2) for v in os.getloadavg()]}
    cold, warm = [], []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            for i in range(rounds):
                cache = Path(tempfile.mkdtemp(prefix="lens-coldstart-", dir=cache_root))
                try:
                    cold.append(start(browser, cache, timeout, settle=True))
                    print(json.dumps({"round": i, "cold": cold[-1]}), file=sys.stderr, flush=True)
                    warm.append(start(browser, cache, timeout, settle=False))
                    print(json.dumps({"round": i, "warm": warm[-1]}), file=sys.stderr, flush=True)
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
        finally:
            browser.close()
    figures.update({
        "cold": {"median": _medians(cold), "runs": cold},
        "warm": {"median": _medians(warm), "runs": warm},
        "target_warm_first_picture_s": TARGET_WARM_FIRST_PICTURE_S,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    })
    figures["warm_first_picture_under_target"] = figures["warm"]["median"]["first_picture_s"] < TARGET_WARM_FIRST_PICTURE_S
    figures["warm_map_from_store"] = all(r["jobs_run"] == 0 for r in warm)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="cold + warm starts (default 3)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per milestone (default 600)")
    args = ap.parse_args()
    if args.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(run(args.rounds, args.timeout)))


if __name__ == "__main__":
    main()
