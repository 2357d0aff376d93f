"""Many users at once against the real server: Debian Chromium sessions (Playwright) on heavy pages while one
more session keeps reloading the home page. Prints ONE JSON object.

The server runs on 127.0.0.1 only, offline, with a fresh ``LENS_CACHE_DIR`` (so everything is computed) and a
``LENS_PROFILE_DIR`` of the bench's run (unless set: the run's servers share what they measure). Each heavy
session opens one page's link (its own sample photo, settings and ``run=`` keys, so the page computes at once;
Feature visualisation and Net2Vec then press their button) and waits until the script has finished (Streamlit's
status widget gone for 2 s); the home session reloads the home page and times until the top-5 table shows.

Figures: each session's seconds, alone (``--serial``: the same sessions one after another on a fresh server, the
floor) and at once, and whether its page showed an exception box or a failure message; the results each run
stored compared (``same_as_serial``: every result file of the serial run exists in the concurrent run and holds the
same numbers, see :func:`compare_stores`); the home page's render times (p50, p95) while the jobs run, and alone (p50 of 5 renders before the jobs start:
the floor on this machine, Chromium included). Every browser has opened the app once before its clock starts (in
the serial runs too), as a user's has once the dashboard is open: a first visit with an empty browser cache costs
about 5 CPU-seconds of Chromium parsing Streamlit's 5.6 MB of JavaScript, against 1.8 for a reload (measured), and
nine of them at once on the server's two cores measured the browsers, not the server (a home reload then took
8-13 s). The home page's cold visit alone is reported apart (``home_cold_alone_s``). The
server's peak RSS (polled every 0.2 s) against ``LENS_MEMORY_MB``; the wall time against the sum of the serial
sessions; where the CPU went while the jobs ran (the server, the clients: Chromium, Playwright and this script, and
other processes); the load average before and after and the CPU model.

The hosted tier's limit (``--memory-cap-mb``, default 2700; 0: off): every server the bench starts runs in a
memory cgroup of its own, capped at that size with swap included (cgroup v2 ``memory.max`` and ``memory.swap.max``
= 0, or v1 ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``), made under the cgroup the bench runs in
and removed afterwards; the server is in it from its first instruction. Reported per server in ``memory_cap``:
the peak the kernel charged to the group against the cap (page cache included: see docs/deploying.md) and
whether it reached the cap, its anonymous part, OOM kills and whether the server was killed; on top,
``server_killed``, ``oom_kills``, ``cgroup_peak_mb`` and ``every_session_result``. Where no group can be written
(not root, no memory controller) it runs without one and ``memory_cap.skipped`` says why.

    python bench/load.py --serial                 # the full run: 8 heavy sessions + the home reloader, 2.7 GB cap
    python bench/load.py --serial --serial-with-home   # also the serial floor with the home reloader beside it
    python bench/load.py --sessions smoothgrad gradcam_grid --serial --timeout 300
    python bench/load.py --serial --slice 0          # first in first out, as before the jobs took turns

With ``--serial``, ``time_to_result`` lists each page's seconds to its result alone and under load and their
ratio (the scheduler's time slices: a short job beside a long one should stay within about 3 x alone).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: core/ is imported to read the stored results
    sys.path.insert(0, str(ROOT))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
# an exception box, an error message (st.error: a job that failed, a method refused), a traceback in the text
PROBLEMS = "[data-testid='stException'], [data-testid='stAlertContentError']"


@dataclasses.dataclass(frozen=True)
class Session:
    """One heavy session: the link it opens, the button it then presses (if any), and a text that shows only
    once its result is drawn."""

    name: str
    path: str
    done: str
    press: str | None = None


# The eight heavy sessions, each on its own sample photo with the page's default settings.
FULL = [
    Session("smoothgrad", "/attribution?model=embedded&sample=chelsea.jpg&method=smoothgrad&run=attr_run",
            "Download raw map (.npy)"),
    Session("pgd_smoothgrad", "/attack?model=embedded&sample=coffee.jpg&method=pgd&run=atk_run,atk_sg_run",
            "clean class:"),
    Session("gradcam_grid", "/attribution?model=embedded&sample=rocket.jpg&method=gradcam&run=attr_run,attr_grid_run",
            "Grad-CAM ("),
    # extremal with 40 iterations instead of the page's 300 (three areas at once): 100 took 390 s alone on the
    # shared 2-core machine, longer than the other seven together
    Session("extremal", "/perturbation?model=embedded&sample=clock_motion.jpg&method=extremal&iterations=40"
            "&run=lens_pert_run", "Convergence"),
    Session("featurevis", "/featurevis?model=embedded&sample=china.jpg", "Objective at the model's input size",
            press="Visualise"),
    Session("similarity", "/similarity?model=embedded&sample=flower.jpg", "best match"),
    Session("net2vec", "/net2vec?model=embedded&sample=grace_hopper.jpg", "Predicted masks", press="Learn concepts"),
    Session("dataset_examples", "/activation_index?model=embedded&sample=opencv_squirrel_cls.jpg", "excites in"),
]
# The CI version (tests/test_load_browser.py): three short jobs.
SMALL = [
    Session("smoothgrad", "/attribution?model=embedded&sample=chelsea.jpg&method=smoothgrad&samples=8&run=attr_run",
            "Download raw map (.npy)"),
    Session("fgsm", "/attack?model=embedded&sample=coffee.jpg&method=fgsm&run=atk_run", "Confidence over the steps"),
    Session("perturbation", "/perturbation?model=embedded&sample=rocket.jpg&areas=0.1&iterations=20&run=lens_pert_run",
            "Convergence"),
]


# ------------------------------------------------------------------------------------------ the memory cap

class CgroupUnavailable(RuntimeError):
    """No memory cgroup can be made here; the message is the one-line reason."""


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(file system type, mount point, the hierarchy's path mounted there, super options) of every cgroup mount."""
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, after = left.split(), right.split()
                if len(after) >= 3 and after[0] in ("cgroup", "cgroup2"):
                    found.append((after[0], fields[4], fields[3], set(after[2].split(","))))
    except OSError:
        pass
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _number(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:  # "max"
        return None


def _mb(n: int | None) -> int | None:
    return round(n / 2**20) if n is not None else None


def _keyed(path: Path) -> dict[str, int]:
    """A ``key value`` file (memory.stat, memory.events, v1's memory.oom_control) as a dict."""
    out = {}
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


class MemoryCgroup:
    """A memory cgroup capped at ``cap_mb`` (the hosted tier's limit, swap included) for one server process.

    Made as a child of the cgroup this script runs in (so any limit above it still holds), else at the
    hierarchy's root; cgroup v2 first (``memory.max``, ``memory.swap.max`` = 0), else v1's memory controller
    (``memory.limit_in_bytes``, and ``memory.memsw.limit_in_bytes`` where swap is accounted, so swap cannot hide
    the cap). Raises :class:`CgroupUnavailable` with the reasons where neither can be written. The kernel counts
    the group's anonymous memory, its page cache (files it read or wrote, tmpfs included) and kernel memory;
    under the cap it reclaims cache first and kills a process of the group (the OOM killer) when nothing more
    can be reclaimed. :meth:`remove` kills what is left in it and deletes it.
    """

    def __init__(self, cap_mb: int, name: str = "server") -> None:
        self.cap_bytes = int(cap_mb) * 2**20
        reasons = []
        from core.serve.memory import own_cgroups

        mounts, own = _mounts(), own_cgroups()
        candidates = []
        for kind, point, root, options in mounts:
            if kind == "cgroup2" and "2" in own:
                candidates.append((2, Path(point), root, own["2"]))
            elif kind == "cgroup" and "memory" in options and "memory" in own:
                candidates.append((1, Path(point), root, own["memory"]))
        candidates.sort(key=lambda c: c[0], reverse=True)
        if not candidates:
            raise CgroupUnavailable("no cgroup memory controller is mounted (neither v2 nor v1's memory)")
        leaf = f"lens-{name}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        for version, point, root, own_path in candidates:
            inside = own_path[len(root):] if root != "/" and own_path.startswith(root) else own_path
            for parent in dict.fromkeys([point / inside.lstrip("/"), point]):
                why = self._make(version, parent / leaf)
                if why is None:
                    return
                reasons.append(f"v{version} {parent}: {why}")
        raise CgroupUnavailable("no memory cgroup can be made: " + "; ".join(reasons))

    def _make(self, version: int, path: Path) -> str | None:
        """Make and cap the group at ``path``; None, or why it cannot be."""
        if version == 2:
            enabled = (_read(path.parent / "cgroup.subtree_control") or "").split()
            if "memory" not in enabled:
                return "the memory controller is not enabled for its child groups"
        try:
            path.mkdir()
        except OSError as e:
            return f"cannot make a group ({e.strerror or e})"
        self.path, self.version = path, version
        try:
            if version == 2:
                (path / "memory.max").write_text(str(self.cap_bytes))
                if (path / "memory.swap.max").exists():
                    (path / "memory.swap.max").write_text("0")
                limit = _number(path / "memory.max")
            else:
                (path / "memory.limit_in_bytes").write_text(str(self.cap_bytes))
                if (path / "memory.memsw.limit_in_bytes").exists():  # memory + swap: no swapping past the cap
                    (path / "memory.memsw.limit_in_bytes").write_text(str(self.cap_bytes))
                limit = _number(path / "memory.limit_in_bytes")
            if limit is None or abs(limit - self.cap_bytes) > 2**20:
                raise OSError(f"the cap reads back as {limit}")
        except OSError as e:
            self.remove()
            return f"cannot set the cap ({e.strerror or e})"
        self.limit_bytes = limit
        self.swap_capped = (path / ("memory.swap.max" if version == 2 else "memory.memsw.limit_in_bytes")).exists()
        self.peak_polled = self.peak_anon = self.file_at_peak = 0
        return None

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the group from its first instruction: a shell writes its own pid into the group,
        then becomes ``argv`` (exec keeps the pid; no Python code runs between fork and exec in this threaded
        process, as a ``preexec_fn`` would)."""
        return ["/bin/sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "sh", str(self.path / "cgroup.procs"),
                *argv]

    def pids(self) -> list[int]:
        return [int(p) for p in (_read(self.path / "cgroup.procs") or "").split()]

    def usage(self) -> int:
        """The bytes the kernel charges to the group now (memory.current / memory.usage_in_bytes)."""
        return _number(self.path / ("memory.current" if self.version == 2 else "memory.usage_in_bytes")) or 0

    def poll(self) -> None:
        """Record the usage now, and its anonymous part (what cannot be reclaimed without swap)."""
        used = self.usage()
        stat = _keyed(self.path / "memory.stat")
        if self.version == 2:
            anon, file = stat.get("anon", 0), stat.get("file", 0)
        else:
            anon, file = stat.get("total_rss", 0) + stat.get("total_shmem", 0), stat.get("total_cache", 0)
        if used > self.peak_polled:
            self.peak_polled, self.file_at_peak = used, file
        self.peak_anon = max(self.peak_anon, anon)

    def figures(self) -> dict:
        """The cap, the peak the kernel recorded (v1 memory.max_usage_in_bytes, v2 memory.peak, else the polled
        peak), whether it reached the cap, the polled peaks, how often the cap was hit (v2 memory.events max, v1
        memory.failcnt), and OOM kills (None where the kernel does not count them)."""
        self.poll()
        if self.version == 2:
            events = _keyed(self.path / "memory.events")
            peak = _number(self.path / "memory.peak") if (self.path / "memory.peak").exists() else None
            kills, hits = events.get("oom_kill"), events.get("max")
        else:
            peak = _number(self.path / "memory.max_usage_in_bytes")
            kills, hits = _keyed(self.path / "memory.oom_control").get("oom_kill"), _number(self.path / "memory.failcnt")
        peak = peak if peak is not None else self.peak_polled
        return {"cgroup_version": self.version, "cap_mb": _mb(self.limit_bytes), "swap_capped": self.swap_capped,
                "peak_mb": _mb(peak), "peak_over_cap": round(peak / self.limit_bytes, 3),
                # the charge reached the cap (the kernel reclaimed, or killed): v1's failcnt stays 0 on some kernels
                "cap_reached": peak >= self.limit_bytes - 2**20,
                "peak_polled_mb": _mb(self.peak_polled), "page_cache_at_polled_peak_mb": _mb(self.file_at_peak),
                "peak_anon_mb": _mb(self.peak_anon), "cap_hits": hits, "oom_kills": kills}

    def remove(self) -> None:
        """Kill whatever is left in the group (only the server and its children are in it) and delete it."""
        path = getattr(self, "path", None)
        if path is None or not path.exists():
            return
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            for pid in self.pids():
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
            time.sleep(0.1)
        while True:
            try:
                path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamlit run dashboard.py`` on loopback with its own ``LENS_CACHE_DIR``; peak RSS sampled every 0.2 s
    (and the usage of its memory cgroup, when it runs in one: ``group``, a :class:`MemoryCgroup`)."""

    def __init__(self, env: dict[str, str], cache_dir: str | Path, group: MemoryCgroup | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cache_dir = Path(cache_dir)
        self.group = group
        argv = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(self.port),
                "--server.address", "127.0.0.1", "--server.headless", "true"]
        self.proc = subprocess.Popen(
            group.command(argv) if group is not None else argv,
            cwd=ROOT, env={**os.environ, "LENS_OFFLINE": "1", "LENS_GC_FREEZE": "1", **env, "LENS_CACHE_DIR": str(cache_dir)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.peak_rss = 0
        # [seconds since start, resident MB, ["kind:state:batch:estimate MB/measured peak MB" of each started job]]
        self.timeline: list = []
        self.exit_code: int | None = None  # the server's exit status if it ended before close() (-9: killed)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()
        for _ in range(240):
            if self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"streamlit exited with status {self.proc.returncode} while starting")
            try:
                urllib.request.urlopen(self.url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            self.close()
            raise RuntimeError("streamlit did not start")

    def rss(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def jobs(self) -> dict:
        """The scheduler's status file (core/serve/scheduling.py writes it when a job starts or ends); {} before any
        job."""
        try:
            return json.loads((self.cache_dir / "jobs.json").read_text())
        except (OSError, ValueError):
            return {}

    def _poll(self) -> None:
        start, last = time.monotonic(), float("-inf")
        while not self._stop.is_set():
            rss = self.rss()
            self.peak_rss = max(self.peak_rss, rss)
            if self.group is not None:
                self.group.poll()
            now = time.monotonic()
            if now - last >= 1.0:  # where the memory went: the resident size beside the jobs in flight, each second
                last = now
                jobs = self.jobs().get("jobs", [])
                self.timeline.append([round(now - start, 1), round(rss / 2**20),
                                      [f"{j.get('kind')}:{j.get('state')}:{j.get('batch')}:"
                                       f"{j.get('estimate_mb')}/{j.get('peak_mb')}" for j in jobs]])
            time.sleep(0.2)

    @property
    def killed(self) -> bool:
        """Whether the server ended before :meth:`close` (the OOM killer's SIGKILL, or a crash)."""
        return self.exit_code is not None

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self.exit_code is None:
            self.exit_code = self.proc.poll()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy so far (Linux /proc/stat; 0 where unknown)."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in f.readline().split()[1:8])
    except (OSError, ValueError):
        return 0.0
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class ClientCpu:
    """CPU seconds used by the clients from now on: this script plus every Chromium and Playwright-driver process,
    read from /proc every 0.25 s (a process that exits loses at most its last 0.25 s: the renderers are not
    children of this script, so their time never reaches its ``os.times()``)."""

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK")
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._own0 = self._own()
        self._scan(first=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    def _scan(self, first: bool = False) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
                if b"chromium" not in cmd and not (b"node" in cmd and b"playwright" in cmd):
                    continue
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / self._tick
            self._start.setdefault(int(pid), cpu if first else 0.0)
            self._last[int(pid)] = cpu

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self._scan()

    def seconds(self) -> float:
        """Client CPU seconds since this object was made."""
        self._scan()
        return self._own() - self._own0 + sum(self._last[p] - self._start[p] for p in self._last)

    def close(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.seconds()


def launch(p):
    """Debian's Chromium (never a downloaded browser)."""
    return p.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def settled(page, timeout: float) -> float:
    """When (``time.perf_counter()``) the script run ended: the page drawn and Streamlit's status widget absent
    from then on for 2 s."""
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
            return quiet
        time.sleep(0.25)
    raise TimeoutError(f"page still running after {timeout:.0f} s")


def problems(page) -> list[str]:
    """The first line of every exception box and error message on the page (and a traceback in its text)."""
    found = [t.strip().splitlines()[0] if t.strip() else "(empty)" for t in page.locator(PROBLEMS).all_inner_texts()]
    return found + (["Traceback in the page"] if "Traceback (most recent call last)" in page.inner_text("body") else [])


def _home_visit(page, url: str, timeout: float) -> float:
    """Load the home page; seconds until the top-5 table shows."""
    start = time.perf_counter()
    page.goto(url + "/?model=embedded", wait_until="domcontentloaded")
    while "Top-5 classes" not in page.inner_text("body") or page.locator('[data-testid="stTable"]').count() == 0:
        if time.perf_counter() - start > timeout:
            raise TimeoutError("home page did not render")
        time.sleep(0.05)
    return time.perf_counter() - start


def heavy_session(browser, url: str, session: Session, timeout: float, ready: threading.Barrier | None = None) -> dict:
    """Open the app (untimed: the browser's cache filled, as a user's is once the app is open), wait at ``ready``,
    then open the session's link (and press its button), wait until its result is drawn and the page has settled;
    seconds and problems."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(timeout * 1000)  # nine browsers starting at once on two cores: slow first loads
    try:
        page = context.new_page()
        try:
            _home_visit(page, url, timeout)
            if ready is not None:
                ready.wait()
        except BaseException:
            if ready is not None:
                ready.abort()  # the others stop waiting (BrokenBarrierError) instead of hanging
            raise
        start = time.perf_counter()
        error = ""
        try:
            page.goto(url + session.path, wait_until="domcontentloaded")
            if session.press:
                button = page.get_by_role("button", name=session.press).first
                button.wait_for(timeout=timeout * 1000)
                button.click()
            page.get_by_text(session.done).first.wait_for(timeout=timeout * 1000)
            seconds = settled(page, timeout) - start
        except Exception as e:  # noqa: BLE001 - reported in the figures
            seconds, error = time.perf_counter() - start, f"{type(e).__name__}: {str(e).splitlines()[0]}"
        result = {"session": session.name, "seconds": round(seconds, 2), "error": error, "problems": problems(page)}
        print(json.dumps(result), file=sys.stderr, flush=True)  # a long run's progress
        return result
    finally:
        context.close()


def home_session(browser, url: str, stop: threading.Event, timeout: float, out: list[float],
                 renders: int | None = None, started: list[float] | None = None, cold: list[float] | None = None,
                 ready: threading.Barrier | None = None) -> None:
    """Reload the home page until ``stop`` (or ``renders`` times); each render's seconds (until the top-5 table
    shows) go to ``out``, and when it started (``time.perf_counter()``) to ``started``. The browser context's first
    visit (an empty cache) is not among them: its seconds go to ``cold``; then it waits at ``ready``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(timeout * 1000)
    try:
        page = context.new_page()
        first = _home_visit(page, url, timeout)
        if cold is not None:
            cold.append(first)
        if ready is not None:
            ready.wait()
        while not stop.is_set() and (renders is None or len(out) < renders):
            start = time.perf_counter()
            out.append(_home_visit(page, url, timeout))
            if started is not None:
                started.append(start)
    except BaseException:
        if ready is not None:
            ready.abort()  # the others stop waiting (BrokenBarrierError) instead of hanging
        raise
    finally:
        context.close()


def warm_up(browser, url: str, timeout: float) -> None:
    """One visit to the home page on a fresh server (PyTorch and the model load on the first run), not timed."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url + "/?model=embedded", wait_until="domcontentloaded")
        page.get_by_text("Top-5 classes").first.wait_for(timeout=timeout * 1000)
    finally:
        context.close()


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 2)


# ---------------------------------------------------------------------------------------- same numbers

RELATIVE = 1e-2  # float32 results whose batch the memory budget lowered (other sums): measured ≤ 1.6e-3 of the largest
NOT_RESULTS = ("seconds", "batch_size")  # how long a run took, and the batch the memory budget allowed


def _differences(a, b, where: str, out: list[str]) -> None:
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor):
        a = a.detach().float().numpy() if a.is_floating_point() else a.numpy()
    if isinstance(b, torch.Tensor):
        b = b.detach().float().numpy() if b.is_floating_point() else b.numpy()
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        if type(a) is not type(b):
            out.append(f"{where}: {type(a).__name__} vs {type(b).__name__}")
            return
        for f in dataclasses.fields(a):
            if f.name not in NOT_RESULTS:
                _differences(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}", out)
    elif isinstance(a, dict):
        if set(a) != set(b):
            out.append(f"{where}: keys differ")
            return
        for k in a:
            if k not in NOT_RESULTS:
                _differences(a[k], b[k], f"{where}[{k!r}]", out)
    elif isinstance(a, (list, tuple)):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} vs {len(b)} items")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            _differences(x, y, f"{where}[{i}]", out)
    elif isinstance(a, np.ndarray):
        if a.shape != b.shape:
            out.append(f"{where}: shape {a.shape} vs {b.shape}")
        elif a.dtype.kind == "f":
            scale = float(np.abs(a).max()) if a.size else 0.0
            worst = float(np.abs(a - b).max()) if a.size else 0.0
            if worst > RELATIVE * scale:
                out.append(f"{where}: differs by {worst:.3g} (largest value {scale:.3g})")
        elif not np.array_equal(a, b):
            out.append(f"{where}: values differ")
    elif isinstance(a, float):
        if not math.isclose(a, b, rel_tol=RELATIVE, abs_tol=1e-6):
            out.append(f"{where}: {a} vs {b}")
    elif a != b:
        out.append(f"{where}: {a!r} vs {b!r}")


def stored_results(cache_dir: str | Path) -> dict[str, object]:
    """Every result a server stored under ``cache_dir`` (file digest -> value)."""
    from core.serve.store import MAGIC, _HASH

    found = {}
    for path in Path(cache_dir).glob("results/*/*/*.pkl"):
        data = path.read_bytes()
        found[path.stem] = pickle.loads(data[len(MAGIC) + _HASH:])
    return found


def compare_stores(serial_dir: str | Path, concurrent_dir: str | Path) -> dict:
    """Whether the concurrent run stored every result of the serial run, with the same numbers (float arrays
    within ``RELATIVE`` of their largest value: every job runs on the same threads alone or not, but the memory
    budget may lower a batch, which splits float32 sums differently; integers, classes and strings exactly;
    ``seconds`` and ``batch_size`` ignored)."""
    serial, concurrent = stored_results(serial_dir), stored_results(concurrent_dir)
    differences: list[str] = []
    missing = sorted(set(serial) - set(concurrent))
    for digest in sorted(set(serial) & set(concurrent)):
        _differences(serial[digest], concurrent[digest], f"{type(serial[digest]).__name__}", differences)
    return {"serial_results": len(serial), "concurrent_results": len(concurrent), "missing": len(missing),
            "missing_types": sorted(type(serial[d]).__name__ for d in missing),
            "differences": differences[:20], "same": not missing and not differences}


# ---------------------------------------------------------------------------------------------- the run

def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        return ""


def prepare_index() -> None:
    """The Dataset-examples page queries the index of the sample photos: build it once (not timed)."""
    subprocess.run([sys.executable, "-m", "core", "index", "build", "assets/samples", "--json"], cwd=ROOT,
                   env={**os.environ, "LENS_OFFLINE": "1"}, check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def reloader(url: str, stop: threading.Event, timeout: float, out: list[float],
             started: list[float] | None, ready: threading.Barrier | None = None) -> threading.Thread:
    """A thread (not started) with its own browser running :func:`home_session` until ``stop``; with ``ready``,
    it launches its browser and loads the app once first, and then waits there (the clock starts when every
    browser is up)."""
    from playwright.sync_api import sync_playwright

    def reload() -> None:  # one browser per thread: Playwright's sync objects belong to the thread that made them
        with sync_playwright() as q:
            try:
                b = launch(q)
            except BaseException:
                if ready is not None:
                    ready.abort()
                raise
            try:
                home_session(b, url, stop, timeout, out, started=started, ready=ready)
            finally:
                b.close()

    return threading.Thread(target=reload)


def time_to_result(alone: list[dict], loaded: list[dict]) -> list[dict]:
    """Each session's seconds to its result alone and under load, and under load over alone."""
    by_name = {r["session"]: r for r in loaded}
    return [{"session": a["session"], "alone_s": a["seconds"], "under_load_s": by_name[a["session"]]["seconds"],
             "ratio": round(by_name[a["session"]]["seconds"] / max(1e-9, a["seconds"]), 2)}
            for a in alone if a["session"] in by_name]


def start_server(env: dict[str, str], cache_dir: Path, cap_mb: int | None, figures: dict) -> Server:
    """A :class:`Server`, inside a fresh :class:`MemoryCgroup` of ``cap_mb`` when ``cap_mb`` (where no group can
    be made, it runs without one and ``figures["memory_cap"]["skipped"]`` says why)."""
    group = None
    if cap_mb:
        try:
            group = MemoryCgroup(cap_mb, cache_dir.name)
        except CgroupUnavailable as e:
            figures["memory_cap"] = {"cap_mb": cap_mb, "skipped": str(e)}
            print(f"memory cap skipped: {e}", file=sys.stderr, flush=True)
    try:
        return Server(env, cache_dir, group)
    except BaseException:
        if group is not None:
            group.remove()
        raise


def stop_server(server: Server, phase: str, figures: dict) -> None:
    """Stop ``server``; when it ran in a memory cgroup, its figures go to ``figures["memory_cap"][phase]`` (with
    whether the server had been killed before it was stopped) and the group is removed."""
    server.close()
    figures.setdefault("memory_timeline", {})[phase] = server.timeline
    if server.group is not None:
        try:
            figures.setdefault("memory_cap", {})[phase] = {
                **server.group.figures(), "server_killed": server.killed, "server_exit": server.exit_code}
        finally:
            server.group.remove()


def run(sessions: list[Session], *, timeout: float = 900, serial: bool = True, memory_mb: int | None = None,
        cache_root: str | Path | None = None, with_home: bool = False, job_slice: float | None = None,
        memory_cap_mb: int | None = None) -> dict:
    """The concurrent run (after the serial one when ``serial``, and the serial one with the home reloader
    beside it when ``with_home`` too); figures as a dict (see the module's doc). With ``memory_cap_mb`` every
    server runs in its own memory cgroup of that size (:class:`MemoryCgroup`), as on a hosted tier that kills
    an app over its limit."""
    if CHROMIUM is None:
        raise RuntimeError("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    env = {"LENS_MEMORY_MB": str(memory_mb)} if memory_mb else {}
    if job_slice is not None:
        env["LENS_JOB_SLICE"] = str(job_slice)
    budget = memory_mb or float(os.environ.get("LENS_MEMORY_MB", 2400))
    figures: dict = {"sessions": [s.name for s in sessions], "cores": os.cpu_count(), "cpu": cpu_model(),
                     "load_average_before": [round(v, 2) for v in os.getloadavg()], "memory_budget_mb": budget}
    root = Path(tempfile.mkdtemp(prefix="lens-load-", dir=cache_root))
    try:
        with sync_playwright() as p:
            browser = launch(p)
            try:
                if serial:
                    server = start_server(env, root / "serial", memory_cap_mb, figures)
                    try:
                        warm_up(browser, server.url, timeout)
                        cpu0 = server.cpu_seconds()
                        alone = [heavy_session(browser, server.url, s, timeout) for s in sessions]
                        figures["serial_server_cpu_s"] = round(server.cpu_seconds() - cpu0, 1)
                    finally:
                        stop_server(server, "serial", figures)
                    figures["serial"] = alone
                    figures["serial_sum_s"] = round(sum(s["seconds"] for s in alone), 2)
                if serial and with_home:
                    # the same jobs one after another, with the ninth session reloading the home page throughout:
                    # the floor with the same background as the concurrent run
                    server = start_server(env, root / "serial_home", memory_cap_mb, figures)
                    stop, renders = threading.Event(), []
                    try:
                        warm_up(browser, server.url, timeout)
                        ready = threading.Barrier(2, timeout=timeout)
                        home_thread = reloader(server.url, stop, timeout, renders, None, ready)
                        home_thread.start()
                        ready.wait()
                        cpu0, busy0, clients = server.cpu_seconds(), machine_busy_seconds(), ClientCpu()
                        try:
                            figures["serial_home"] = [heavy_session(browser, server.url, s, timeout)
                                                      for s in sessions]
                            # the same accounts as the concurrent run's: where the two runs' CPU differs
                            figures["serial_home_server_cpu_s"] = round(server.cpu_seconds() - cpu0, 1)
                            figures["serial_home_machine_cpu_s"] = round(machine_busy_seconds() - busy0, 1)
                        finally:
                            stop.set()
                            home_thread.join(timeout + 30)
                            figures["serial_home_client_cpu_s"] = round(clients.close(), 1)
                    finally:
                        stop_server(server, "serial_home", figures)
                    figures["serial_home_sum_s"] = round(sum(s["seconds"] for s in figures["serial_home"]), 2)
                    figures["serial_home_renders"] = len(renders)
                server = start_server(env, root / "concurrent", memory_cap_mb, figures)
                try:
                    warm_up(browser, server.url, timeout)
                    alone: list[float] = []  # the floor: the home page with nothing else running
                    cold_alone: list[float] = []
                    home_session(browser, server.url, threading.Event(), timeout, alone, renders=5, cold=cold_alone)
                    results: dict[str, dict] = {}
                    home: list[float] = []
                    home_started: list[float] = []
                    stop = threading.Event()
                    # one browser per thread: Playwright's sync objects belong to the thread that made them. Every
                    # browser is launched before the clock starts (the serial runs' browser is too; the users'
                    # browsers are running already): nine Chromium start-ups on the same two cores are the
                    # harness's cost, not the server's
                    ready = threading.Barrier(len(sessions) + 2, timeout=timeout)

                    def heavy(s: Session) -> None:
                        with sync_playwright() as q:
                            try:
                                b = launch(q)
                            except BaseException:
                                ready.abort()  # the others stop waiting (BrokenBarrierError) instead of hanging
                                raise
                            try:
                                results[s.name] = heavy_session(b, server.url, s, timeout, ready)
                            finally:
                                b.close()

                    home_thread = reloader(server.url, stop, timeout, home, home_started, ready)
                    threads = [threading.Thread(target=heavy, args=(s,)) for s in sessions]
                    home_thread.start()
                    for t in threads:
                        t.start()
                    ready.wait()
                    start = time.perf_counter()
                    cpu0, busy0, clients = server.cpu_seconds(), machine_busy_seconds(), ClientCpu()
                    for t in threads:
                        t.join()
                    wall = time.perf_counter() - start
                    server_cpu, busy = server.cpu_seconds() - cpu0, machine_busy_seconds() - busy0
                    stop.set()
                    home_thread.join(timeout + 30)
                    client_cpu = clients.close()
                    figures.update({
                        "concurrent": [results[s.name] for s in sessions], "wall_s": round(wall, 2),
                        "home_alone_p50_s": percentile(alone, 0.5), "home_cold_alone_s": round(cold_alone[0], 2),
                        "home_renders": len(home), "home_p50_s": percentile(home, 0.5),
                        "home_p95_s": percentile(home, 0.95), "home_max_s": percentile(home, 1.0),
                        # [seconds after the jobs started, render seconds] for each render: when the slow ones were
                        "home_timeline": [[round(t - start, 1), round(h, 2)] for t, h in zip(home_started, home)],
                        "peak_rss_mb": round(server.peak_rss / 2**20),
                        # where the CPU went while the jobs ran: the server (jobs, pages) against the whole machine
                        # (the nine Chromium instances and Playwright share these cores in this bench)
                        "concurrent_server_cpu_s": round(server_cpu, 1), "concurrent_machine_cpu_s": round(busy, 1),
                        "server_share_of_cpu": round(server_cpu / max(1e-9, busy), 3),
                        # the nine Chromium instances, their Playwright drivers and this script (until the home
                        # reloader stopped); the rest of the machine's CPU is other processes
                        "concurrent_client_cpu_s": round(client_cpu, 1),
                        "concurrent_other_cpu_s": round(busy - server_cpu - client_cpu, 1),
                        "exceptions": sum(len(r["problems"]) + bool(r["error"]) for r in results.values()),
                        # the scheduler's own record (jobs.json): how often memory was shed to admit a job
                        "memory_sheds": server.jobs().get("memory_sheds"),
                        "memory_shed_mb": round(server.jobs().get("memory_shed", 0) / 2**20, 1),
                        # kinds measured above their estimate, with what this run's profile folder held before
                        "memory_learned": server.jobs().get("memory_learned"),
                    })
                finally:
                    stop_server(server, "concurrent", figures)
            finally:
                browser.close()
        if serial and with_home:
            figures["wall_over_serial_home_sum"] = round(figures["wall_s"] / max(1e-9, figures["serial_home_sum_s"]), 3)
            # the same two accounts at once against one after another, both with the home reloader beside them
            for part in ("server", "client", "machine"):
                figures[f"{part}_cpu_over_serial_home"] = round(
                    figures[f"concurrent_{part}_cpu_s"] / max(1e-9, figures[f"serial_home_{part}_cpu_s"]), 3)
        if serial:
            figures["same_as_serial"] = compare_stores(root / "serial", root / "concurrent")
            figures["time_to_result"] = time_to_result(figures["serial"], figures["concurrent"])
            figures["wall_over_serial_sum"] = round(figures["wall_s"] / max(1e-9, figures["serial_sum_s"]), 3)
            # the server's own work at once against one after another (with the home page's renders on top)
            figures["server_cpu_over_serial"] = round(
                figures["concurrent_server_cpu_s"] / max(1e-9, figures["serial_server_cpu_s"]), 3)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures["peak_rss_under_budget"] = figures["peak_rss_mb"] <= budget
    ran = [r for part in ("serial", "serial_home", "concurrent") for r in figures.get(part, [])]
    figures["every_session_result"] = bool(ran) and all(not r["error"] and not r["problems"] for r in ran)
    capped = {phase: v for phase, v in figures.get("memory_cap", {}).items() if isinstance(v, dict)}
    if capped:  # the tier's limit: was any server killed, how close did the group come to the cap
        figures["memory_cap"]["cap_mb"] = memory_cap_mb
        figures["server_killed"] = any(v["server_killed"] for v in capped.values())
        figures["oom_kills"] = sum(v["oom_kills"] or 0 for v in capped.values())
        figures["cgroup_peak_mb"] = max(v["peak_mb"] for v in capped.values())
    figures["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = {s.name: s for s in FULL + SMALL}
    ap.add_argument("--sessions", nargs="+", default=[s.name for s in FULL], choices=sorted(names))
    ap.add_argument("--timeout", type=float, default=900, help="seconds per session (default 900)")
    ap.add_argument("--serial", action="store_true", help="also run the sessions one at a time first (the floor)")
    ap.add_argument("--serial-with-home", action="store_true",
                    help="with --serial: also run them one at a time while a ninth session reloads the home page")
    ap.add_argument("--memory-mb", type=int, default=None, help="LENS_MEMORY_MB for the server")
    ap.add_argument("--slice", type=float, default=None,
                    help="LENS_JOB_SLICE for the server (seconds; 0: first in first out)")
    ap.add_argument("--memory-cap-mb", type=int, default=2700,
                    help="run each server in a memory cgroup of this size, swap included, as a hosted tier that "
                         "kills an app over its limit (default 2700; 0: no cgroup)")
    args = ap.parse_args()
    # a terminated bench still stops its servers and removes their cgroups (the finally blocks run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # the run's servers share choices and memory ratios measured in this run (core.profile), none from before
    os.environ.setdefault("LENS_PROFILE_DIR", tempfile.mkdtemp(prefix="lens-bench-profile-"))
    chosen = [names[n] for n in args.sessions]
    if any(s.name == "dataset_examples" for s in chosen):
        prepare_index()
    print(json.dumps(run(chosen, timeout=args.timeout, serial=args.serial, memory_mb=args.memory_mb,
                         with_home=args.serial_with_home, job_slice=args.slice,
                         memory_cap_mb=args.memory_cap_mb or None)))


if __name__ == "__main__":
    main()
