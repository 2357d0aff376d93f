"""The app-wide scheduler (issue 12): bounded, FIFO, identical requests once, cancellable, memory budget."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from core import serve as core_serve
from core.serve import JobCancelled, Scheduler, per_sample_bytes


def run_threads(*targets):
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
        time.sleep(0.05)  # arrival order
    for t in threads:
        t.join(30)
    return threads


def test_bounded_fifo_with_queue_positions_and_shared_threads():
    sched = Scheduler(max_jobs=1, cores=2, memory_bytes=1 << 30)
    order, seen_threads, positions = [], [], {i: [] for i in range(3)}
    gate = threading.Event()

    def job(i):
        def compute(job, progress):
            order.append(i)
            seen_threads.append(torch.get_num_threads())
            assert sched.status()["running"] == 1
            if i == 0:
                gate.wait(10)
            progress(1.0, "done")
            return i
        return lambda: sched.run(("job", i), compute, wait=positions[i].append, poll=0.01)

    def release():
        time.sleep(0.3)
        gate.set()
    run_threads(job(0), job(1), job(2), release)
    assert order == [0, 1, 2]
    assert 1 in positions[2] and 0 in positions[1] and positions[0] == []  # queued ahead (the running one not counted)
    assert seen_threads == [2, 2, 2]  # one job at a time on 2 cores: both threads
    assert sched.status()["running"] == 0 and sched.status()["queued"] == 0

    two = Scheduler(max_jobs=2, cores=2, memory_bytes=1 << 30)
    before = torch.get_num_threads()
    in_use, peak = [], []

    def record(job, p):
        in_use.append(job.threads)
        peak.append(sum(in_use))
        time.sleep(0.2)
        in_use.remove(job.threads)
        return torch.get_num_threads()
    out = []
    run_threads(*[lambda i=i: out.append(two.run(("t", i), record, poll=0.01)) for i in range(3)])
    assert out == [1, 1, 1] and max(peak) <= 2  # cores // max_jobs each, alone or not; never more than the cores
    assert torch.get_num_threads() == before


def test_a_job_gets_the_same_threads_alone_or_sharing():
    # the number of threads decides the order of float sums: a result must not depend on who else is computing
    sched = Scheduler(max_jobs=2, cores=4, memory_bytes=1 << 30)
    alone = sched.run(("alone",), lambda job, p: job.threads)
    gate, seen = threading.Event(), []

    def held(job, p):
        seen.append(job.threads)
        gate.wait(10)
        return job.threads

    def release():
        while sched.status()["running"] < 2:
            time.sleep(0.01)
        gate.set()
    run_threads(lambda: sched.run(("a",), held, poll=0.01), lambda: sched.run(("b",), held, poll=0.01), release)
    assert alone == 2 and seen == [2, 2]


def test_memory_outside_jobs_is_counted_live():
    live = [0]
    sched = Scheduler(max_jobs=2, cores=2, memory_bytes=100, base_bytes=lambda: 10, live_bytes=lambda: live[0])
    assert sched.run(("small",), lambda job, p: job.batch, bytes_per_sample=10, samples=8) == 8  # 10 + 80 fit
    live[0] = 60  # sessions and caches grew since start-up: 40 left
    assert sched.run(("grown",), lambda job, p: job.batch, bytes_per_sample=10, samples=8) == 4


def test_identical_requests_are_computed_once():
    sched = Scheduler(max_jobs=2, cores=2, memory_bytes=1 << 30)
    calls, out = [], []

    def compute(job, progress):
        calls.append(1)
        time.sleep(0.3)
        return object()

    run_threads(lambda: out.append(sched.run(("same",), compute, poll=0.01)),
                lambda: out.append(sched.run(("same",), compute, poll=0.01)))
    assert len(calls) == 1 and len(out) == 2 and out[0] is out[1]


def test_a_failure_reaches_only_its_own_caller():
    sched = Scheduler(max_jobs=2, cores=2, memory_bytes=1 << 30)
    results, errors = [], []

    def failing(job, progress):
        time.sleep(0.2)
        raise RuntimeError("injected fault\nsecond line")

    def first():
        try:
            sched.run(("k",), failing, poll=0.01)
        except RuntimeError as e:
            errors.append(str(e))

    def second():
        results.append(sched.run(("k",), lambda job, p: "mine", poll=0.01))

    run_threads(first, second)
    assert errors == ["injected fault\nsecond line"] and results == ["mine"]
    assert sched.status() | {"finished": 0} == {**sched.status(), "running": 0, "queued": 0, "finished": 0}


def test_cancel_stops_a_running_job_at_its_next_report_and_a_queued_one_at_once():
    sched = Scheduler(max_jobs=1, cores=2, memory_bytes=1 << 30)
    jobs, outcome, stop = [], {}, threading.Event()

    def long(job, progress):
        jobs.append(job)
        for i in range(1000):
            progress(i / 1000, "step")
            time.sleep(0.01)
        return "finished"

    def running():
        started = time.perf_counter()
        try:
            sched.run(("long",), long)
        except JobCancelled:
            outcome["running"] = time.perf_counter() - started

    def queued():
        try:
            sched.run(("other",), lambda job, p: "ran", cancel=stop.is_set, poll=0.01)
        except JobCancelled:
            outcome["queued"] = True

    def canceller():
        time.sleep(0.3)
        stop.set()          # the queued job's session ends
        time.sleep(0.2)
        jobs[0].cancel()    # Stop pressed on the running one

    run_threads(running, queued, canceller)
    assert outcome["queued"] is True and outcome["running"] < 2.0
    assert sched.status()["running"] == 0 and sched.status()["queued"] == 0


def test_memory_budget_lowers_the_batch_or_queues():
    sched = Scheduler(max_jobs=3, cores=3, memory_bytes=100, max_threads=1)
    gate, batches = threading.Event(), {}

    def hold(name):
        def compute(job, progress):
            batches[name] = job.batch
            if name == "a":
                gate.wait(10)
            return name
        return compute

    def c():
        sched.run(("c",), hold("c"), bytes_per_sample=50, samples=1, poll=0.01)
        batches["c_done"] = time.perf_counter()

    def release():
        time.sleep(0.4)
        batches["released"] = time.perf_counter()
        gate.set()

    run_threads(lambda: sched.run(("a",), hold("a"), bytes_per_sample=60, samples=1, poll=0.01),
                lambda: sched.run(("b",), hold("b"), bytes_per_sample=10, samples=8, poll=0.01),
                c, release)
    assert batches["a"] == 1 and batches["b"] == 4   # 40 of the 100 left: 4 samples of 10 at once
    assert batches["c"] == 1 and batches["c_done"] > batches["released"]  # 50 did not fit beside a: it waited
    alone = Scheduler(max_jobs=1, cores=1, memory_bytes=10)
    assert alone.run(("big",), lambda job, p: job.batch, bytes_per_sample=1000, samples=5) == 1


def test_a_job_that_does_not_fit_sheds_the_stored_results_first(tmp_path, monkeypatch):
    """The store holds N bytes that count in the live size; a job that does not fit beside a running one makes the
    scheduler shed the store's least recently used results (one of them never reached the disk: written first)
    and is admitted at once, whole, while the other still runs. Both shed results are read back from disk."""
    import numpy as np

    from core.serve.store import ResultStore

    store = ResultStore(1 << 20, tmp_path, version="v")
    lost = ("lost spill",)
    with monkeypatch.context() as m:  # its spill failed (a full disk): in memory only
        m.setattr(store, "_write", lambda digest, blob: None)
        store.put(lost, np.full(1000, 4.0, dtype=np.float32))
    for i in range(3):
        store.put(("spilled", i), np.full(1000, float(i), dtype=np.float32))
    n, size = store.memory_used, store.memory_used // 4
    assert lost not in ResultStore(1 << 20, tmp_path, version="v")  # not on disk yet
    base = 1000
    sched = Scheduler(max_jobs=2, cores=2, max_threads=1, memory_bytes=base + n + 500, base_bytes=lambda: base,
                      live_bytes=lambda: base + store.memory_used)
    sched.shed_from(store)
    gate, started, batches = threading.Event(), threading.Event(), {}

    def blocker(job, progress):
        started.set()
        gate.wait(10)
        return "a"

    def big(job, progress):
        batches["big"] = job.batch
        batches["other running"] = not gate.is_set()
        return "big"

    a = threading.Thread(target=lambda: sched.run(("a",), blocker, poll=0.01))
    a.start()
    assert started.wait(5)
    try:  # 500 bytes free, the job needs 2 x size: without shedding it would wait for "a"
        assert sched.run(("big",), big, bytes_per_sample=size, samples=2, poll=0.01) == "big"
    finally:
        gate.set()
        a.join(10)
    assert batches == {"big": 2, "other running": True}
    assert store.memory_used == n - 2 * size and store.shed_bytes == 2 * size
    status = sched.status()
    assert status["memory_shed"] == 2 * size and status["memory_sheds"] == 1
    restarted = ResultStore(1 << 20, tmp_path, version="v")
    assert np.array_equal(restarted.get(lost), np.full(1000, 4.0, dtype=np.float32))  # written before dropping
    assert np.array_equal(store.get(("spilled", 0)), np.zeros(1000, dtype=np.float32))
    assert store.hits["disk"] == 1 and store.hits["memory"] == 0  # reread, not kept in memory


def test_per_sample_bytes_is_measured_from_the_model(embedded):
    grad, fwd = per_sample_bytes(embedded, "gradient"), per_sample_bytes(embedded, "forward")
    first = 32 * 112 * 112 * 4  # EfficientNet-Lite0's stem output alone, float32
    assert grad > 10 * first and first < fwd < grad
    with pytest.raises(ValueError, match="kind"):
        per_sample_bytes(embedded, "other")


def test_a_session_rerun_mid_job_frees_its_slot_and_stores_nothing(tmp_path):
    """Streamlit stops a rerunning or closed session's script with a BaseException raised at its next element
    call (the progress bar): the job counts as cancelled, the next job runs, the store keeps nothing."""
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    from core.serve.store import ResultStore

    sched = Scheduler(max_jobs=1, cores=2, memory_bytes=1 << 30)
    store = ResultStore(1 << 20, tmp_path, version="v")

    def progress(fraction, _message):
        if fraction >= 0.5:
            raise StopException()

    def compute(job, report):
        for i in range(10):
            report(i / 10, "step")
        return "done"

    with pytest.raises(StopException):
        store.get_or_compute(("k",), lambda: sched.run(("k",), compute, progress=progress))
    assert ("k",) not in store and sched.status()["running"] == 0 and sched.status()["queued"] == 0
    assert sched.run(("k",), compute) == "done"


def test_the_status_file_follows_jobs_starting_and_ending(tmp_path):
    import json

    path = tmp_path / "jobs.json"
    sched = Scheduler(max_jobs=2, cores=2, memory_bytes=1 << 30, status_path=path)
    seen = []

    def compute(job, report):
        report(0.5, "half")
        seen.append(json.loads(path.read_text()))
        return 1

    sched.run(("attribution", "m", "i"), compute)
    during, after = seen[0], json.loads(path.read_text())
    assert during["running"] == 1 and [j["kind"] for j in during["jobs"]] == ["attribution"]
    assert after["running"] == 0 and after["jobs"] == [] and after["finished"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name != "jobs.json"]  # no temporary file left


def test_heartbeat_beats_inside_forward_and_backward_and_can_stop_a_pass(embedded, cat_input):
    """The beat runs from inside the caller's own passes (forward and backward), changes no number, leaves no
    hook, never fires in another thread's pass, and a raising beat ends the pass there."""
    from core.attribution.registry import attribute
    from core.hooks import hook_count
    from core.serve import heartbeat

    x = cat_input.batch
    convs = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in embedded.modules())
    hooks = hook_count(embedded)
    plain = attribute(embedded, x, 285, method="saliency").map
    beats, others = [], []
    with heartbeat(embedded, lambda: beats.append(threading.get_ident()), every=0.0):
        other = threading.Thread(target=lambda: others.append(embedded(x)))  # another session's forward
        other.start()
        other.join(30)
        beat = attribute(embedded, x, 285, method="saliency").map
    assert torch.equal(plain, beat) and hook_count(embedded) == hooks
    assert len(beats) == 2 * convs and set(beats) == {threading.get_ident()}  # every layer, both passes

    class Stopped(BaseException):  # as Streamlit's StopException: not an Exception
        pass

    def stop_at_the_tenth():
        beats.append(0)
        if len(beats) == 10:
            raise Stopped

    beats.clear()
    with pytest.raises(Stopped), heartbeat(embedded, stop_at_the_tenth, every=0.0):
        attribute(embedded, x, 285, method="saliency")
    assert len(beats) == 10 and hook_count(embedded) == hooks


def _nice(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not hasattr(os, "setpriority") or not os.path.exists("/proc/self/task"),
                    reason="per-thread priorities are read from Linux /proc")
def test_a_job_runs_on_a_niced_worker_and_its_progress_is_drawn_on_the_asking_thread():
    sched = Scheduler(max_jobs=1, cores=2, memory_bytes=1 << 30, job_nice=7)
    me, base = threading.get_ident(), _nice(threading.get_native_id())
    seen, drawn, previews = {}, [], []

    def compute(job, progress):
        seen["thread"] = threading.get_ident()
        seen["threads"] = torch.get_num_threads()
        before = set(os.listdir("/proc/self/task"))
        torch.mm(torch.randn(512, 512), torch.randn(512, 512))  # starts this thread's OpenMP workers
        seen["new"] = {int(t): _nice(int(t)) for t in set(os.listdir("/proc/self/task")) - before}
        seen["nice"] = _nice(threading.get_native_id())
        show = job.relay(lambda frame: previews.append((frame, threading.get_ident())))
        for i in range(3):
            show(i)
            progress((i + 1) / 3, f"step {i + 1}")
            time.sleep(0.35)  # the asking thread draws every 0.25 s (the latest call of each callback)
        return 42

    out = sched.run(("niced",), compute, progress=lambda f, m: drawn.append((f, m, threading.get_ident())))
    assert out == 42 and seen["thread"] != me and seen["threads"] == 2
    assert seen["nice"] == min(19, base + 7)
    assert seen["new"] and all(n == min(19, base + 7) for n in seen["new"].values())  # OpenMP workers inherit it
    assert _nice(threading.get_native_id()) == base  # the asking thread keeps its priority
    assert [d[:2] for d in drawn if d[1].startswith("step")] == [(1 / 3, "step 1"), (2 / 3, "step 2"), (1.0, "step 3")]
    assert {d[2] for d in drawn} == {me} and previews == [(0, me), (1, me), (2, me)]
    assert sched.status()["running"] == 0


def test_a_stop_raised_while_drawing_ends_the_worker_and_frees_the_slot():
    """Streamlit raises its stop or rerun at the page's element call (here: the relayed progress): the job is
    cancelled, the asking thread waits for the worker to end at its next report, and nothing runs on."""
    class Stop(BaseException):
        pass

    sched = Scheduler(max_jobs=1, cores=2, memory_bytes=1 << 30, job_nice=0)
    reports, ended = [], threading.Event()

    def compute(job, progress):
        try:
            for i in range(1000):
                progress(i / 1000, "working")
                reports.append(i)
                time.sleep(0.01)
        finally:
            ended.set()
        return "finished"

    def draw(fraction, message):
        if fraction >= 0.02:
            raise Stop()

    start = time.perf_counter()
    with pytest.raises(Stop):
        sched.run(("stopped",), compute, progress=draw)
    # drawn every 0.25 s, it stops after the first draw at 2 %: well under 500 reports (5 s) on a loaded machine
    assert ended.is_set() and len(reports) < 500 and time.perf_counter() - start < 10
    done = len(reports)
    time.sleep(0.1)
    assert len(reports) == done  # the worker is gone, not running on
    assert sched.status()["running"] == 0 and sched.run(("next",), lambda job, p: "free") == "free"


def test_a_worker_failure_reaches_its_caller_with_its_own_exception():
    sched = Scheduler(max_jobs=1, cores=2, memory_bytes=1 << 30, job_nice=0)

    def compute(job, progress):
        raise ValueError("bad layer name")

    with pytest.raises(ValueError, match="bad layer name"):
        sched.run(("fails",), compute)
    assert sched.status()["running"] == 0


def test_job_nice_is_read_from_the_environment(monkeypatch):
    from core.serve import default_job_nice
    monkeypatch.setenv("LENS_JOB_NICE", "3")
    assert default_job_nice() == 3
    monkeypatch.delenv("LENS_JOB_NICE")
    assert default_job_nice() == 10
    for bad in ("x", "25", "-1"):
        monkeypatch.setenv("LENS_JOB_NICE", bad)
        with pytest.raises(ValueError, match="LENS_JOB_NICE"):
            default_job_nice()


def test_heap_arenas_from_the_environment(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("LENS_MALLOC_ARENAS", raising=False)
    assert core_serve.default_heap_arenas() == 2
    monkeypatch.setenv("LENS_MALLOC_ARENAS", "0")
    assert core_serve.default_heap_arenas() == 0 and core_serve.limit_heap_arenas() is False
    for bad in ("two", "-1"):
        monkeypatch.setenv("LENS_MALLOC_ARENAS", bad)
        with pytest.raises(ValueError, match="LENS_MALLOC_ARENAS"):
            core_serve.default_heap_arenas()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # glibc has applied it at start-up: left alone
    assert core_serve.limit_heap_arenas(2) is False


def test_heap_arenas_are_capped_through_mallopt():
    """In a fresh process (the cap is process-wide): glibc's mallopt accepts it, and threads started afterwards
    still allocate and free normally."""
    code = ("import threading; from core.serve import tuning; ok = tuning.limit_heap_arenas(2); "
            "ts = [threading.Thread(target=lambda: [bytearray(1 << 20) for _ in range(20)]) for _ in range(8)]; "
            "[t.start() for t in ts]; [t.join() for t in ts]; print(ok)")
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "LENS_MALLOC_ARENAS")}
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(platform.libc_ver()[0] == "glibc")]


def test_a_batch_command_keeps_freed_memory_for_its_next_batch():
    """In fresh processes (mallopt is process-wide): a 48 MB block (above glibc's largest dynamic mapping
    threshold, 32 MB) allocated, written and freed six times. With glibc's own policy every round maps fresh
    memory and faults it in (12,288 small pages, or a few dozen where the kernel backs it with huge pages); kept
    (``keep_freed_memory``), only the first round does, so the later rounds fault almost nothing."""
    code = """
import resource, sys
from core.serve import tuning
ok = tuning.keep_freed_memory(int(sys.argv[1])) if sys.argv[1] != "off" else False
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = bytearray(48 << 20)  # zero-filled: every page written
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del block
print(ok, sum(faults[1:]))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LENS_HEAP_KEEP_MB"}
    runs = {}
    for setting in ("off", "256"):
        done = subprocess.run([sys.executable, "-c", code, setting], cwd=Path(__file__).resolve().parent.parent,
                              env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        ok, faults = done.stdout.split()
        runs[setting] = (ok == "True", int(faults))
    if platform.libc_ver()[0] != "glibc":
        assert runs["256"][0] is False
        return
    # each later round faults its 48 MB in: 12,288 faults with 4 KB pages, 24 with 2 MB huge pages
    assert runs["off"][0] is False and runs["off"][1] >= 5 * 24
    assert runs["256"][0] is True and runs["256"][1] <= runs["off"][1] / 20


def test_keeping_freed_memory_is_a_setting(monkeypatch):
    monkeypatch.delenv("LENS_HEAP_KEEP_MB", raising=False)
    assert core_serve.tuning.default_heap_keep_mb() == 1024
    monkeypatch.setenv("LENS_HEAP_KEEP_MB", "0")
    assert core_serve.tuning.keep_freed_memory() is False
    monkeypatch.setenv("LENS_HEAP_KEEP_MB", "-5")
    with pytest.raises(ValueError, match="LENS_HEAP_KEEP_MB"):
        core_serve.tuning.keep_freed_memory()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # glibc has applied it at start-up: left alone
    assert core_serve.tuning.keep_freed_memory(256) is False


def test_freeze_heap_takes_the_start_up_objects_out_of_full_collections():
    """In a fresh process (freezing is process-wide): 300,000 long-lived objects, frozen, are no longer traversed
    by a full collection (Streamlit's after every script run); a frozen object dropped later is still freed by
    reference counting; cyclic garbage made after the freeze is still collected."""
    code = """
import gc, json, time, weakref
from core.serve import tuning
class Node: pass
keep = [[i] for i in range(300_000)]  # lists are always tracked (a dict of ints is not)
first = Node(); probe = weakref.ref(first)
traversed_before = len(gc.get_objects())  # what a full collection visits (the frozen generation is not listed)
f = tuning.freeze_heap()
del first
freed_by_refcount = probe() is None
a, b = Node(), Node(); a.other, b.other = b, a; cycle = weakref.ref(a); del a, b
gc.collect()
start = time.perf_counter()
for _ in range(5):
    gc.collect()
print(json.dumps({"objects": f.objects, "frozen": gc.get_freeze_count(), "before_ms": f.full_collection_ms_before,
                  "after_ms": (time.perf_counter() - start) / 5 * 1e3, "refcount": freed_by_refcount,
                  "cycle": cycle() is None, "traversed_before": traversed_before,
                  "traversed_after": len(gc.get_objects())}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["objects"] >= 300_000 and out["frozen"] >= 300_000  # (one frozen object was freed since)
    assert out["refcount"] and out["cycle"]
    # a full collection visited the 300,000 lists before the freeze and only what was made since afterwards:
    # counted, not timed (its milliseconds, reported on the model card, follow the count on any CPU)
    assert out["traversed_before"] >= 300_000 and out["traversed_after"] < 5_000, out


def test_gc_freeze_knob(monkeypatch):
    monkeypatch.delenv("LENS_GC_FREEZE", raising=False)
    assert core_serve.default_gc_freeze() is True
    monkeypatch.setenv("LENS_GC_FREEZE", "0")
    assert core_serve.default_gc_freeze() is False
    monkeypatch.setenv("LENS_GC_FREEZE", "yes")
    with pytest.raises(ValueError, match="LENS_GC_FREEZE"):
        core_serve.default_gc_freeze()


# ------------------------------------------------------------------------------------ time slices

def batches(n: int, seed: int, log: list | None = None, seconds: float = 0.02):
    """A job of ``n`` counted batches, each a small seeded matmul and a sleep, reporting after each; returns the
    sum of the products (its float sums depend on the thread count) and the threads it saw."""
    def compute(job, progress):
        g = torch.Generator().manual_seed(seed)
        total, threads = torch.zeros(64, 64), set()
        for i in range(n):
            total += torch.mm(torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g))
            threads.add(torch.get_num_threads())
            time.sleep(seconds)
            if log is not None:
                log.append(seed)
            progress((i + 1) / n, f"batch {i + 1}/{n}")
        return total, threads
    return compute


def timed(sched, key, compute, out, **kw):
    def go():
        started = time.perf_counter()
        out[key] = sched.run((key,), compute, poll=0.01, **kw)
        out[key + " s"] = time.perf_counter() - started
        out[key + " end"] = time.perf_counter()
    return go


@pytest.mark.parametrize("job_nice", [None, 0])
def test_a_short_job_is_not_stuck_behind_a_long_one(job_nice):
    """One slot on 2 cores: a long job (120 batches) runs; a short one (20 batches) submitted after it finishes
    within 3 x its time alone, long before the long one; both give what they give alone, on the same threads."""
    alone = {}
    solo = Scheduler(max_jobs=1, cores=2, memory_bytes=1 << 30, slice_seconds=0.2, job_nice=job_nice)
    timed(solo, "short", batches(20, 1), alone)()
    timed(solo, "long", batches(120, 2), alone)()
    sched = Scheduler(max_jobs=1, cores=2, memory_bytes=1 << 30, slice_seconds=0.2, job_nice=job_nice)
    log, out = [], {}

    def short_later():
        while len(log) < 30:  # the long job is well under way
            time.sleep(0.005)
        timed(sched, "short", batches(20, 1, log), out)()
    run_threads(timed(sched, "long", batches(120, 2, log), out), short_later)
    assert out["short s"] < 3 * alone["short s"], (out["short s"], alone["short s"])
    assert out["short end"] < out["long end"] - 1.0  # the long one had more than a second left
    first_short = log.index(1)
    assert log[first_short:first_short + 20] == [1] * 20  # the short one ran at once and to its end
    for key in ("short", "long"):
        assert torch.equal(out[key][0], alone[key][0]) and out[key][1] == alone[key][1] == {2}
    assert sched.status() | {"finished": 0} == {**sched.status(), "running": 0, "paused": 0, "queued": 0,
                                                  "memory_reserved": 0, "finished": 0}


def test_equal_jobs_take_turns_and_first_in_first_out_without_slices():
    log, out = [], {}
    sched = Scheduler(max_jobs=1, cores=2, memory_bytes=1 << 30, slice_seconds=0.1)
    run_threads(timed(sched, "a", batches(40, 1, log), out), timed(sched, "b", batches(40, 2, log), out))
    switches = sum(x != y for x, y in zip(log, log[1:]))
    assert switches >= 4 and abs(out["a end"] - out["b end"]) < 0.5 * out["a s"]  # in turns, ending close
    log.clear()
    fifo = Scheduler(max_jobs=1, cores=2, memory_bytes=1 << 30, slice_seconds=0)
    run_threads(timed(fifo, "a", batches(20, 1, log), out), timed(fifo, "b", batches(5, 2, log), out))
    assert log == [1] * 20 + [2] * 5


def test_a_paused_job_is_cancelled_at_once_and_keeps_its_memory():
    """The paused job stops within a second of its Stop while the short one runs; a new job whose memory does
    not fit beside a paused one is not given the cores (it waits for the long one to end)."""
    sched = Scheduler(max_jobs=1, cores=2, memory_bytes=100, slice_seconds=0.1)
    log, out, jobs, stopped = [], {}, {}, {}

    def long(job, progress):
        jobs["long"] = job
        return batches(500, 2, log)(job, progress)

    def running_long():
        started = time.perf_counter()
        try:
            sched.run(("long",), long, bytes_per_sample=60, poll=0.01)
        except JobCancelled:
            stopped["after"] = time.perf_counter() - started

    def short_then_stop():
        while len(log) < 10:
            time.sleep(0.005)
        threading.Thread(target=timed(sched, "short", batches(40, 1, log), out, bytes_per_sample=30)).start()
        # the long job pauses, then the short one's thread wakes and starts: wait for both
        deadline = time.monotonic() + 10
        while (lambda s: s["paused"] < 1 or s["running"] < 1)(sched.status()) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert sched.status()["memory_reserved"] == 90  # the paused job's 60 still counted
        stopped["at"] = time.perf_counter()
        jobs["long"].cancel()
    start = time.perf_counter()
    run_threads(running_long, short_then_stop)
    while "short" not in out:
        time.sleep(0.01)
    assert time.perf_counter() - start < 10 and stopped["after"] < stopped["at"] - start + 1.0
    assert torch.equal(out["short"][0], sched.run(("short again",), batches(40, 1))[0])

    log.clear()
    run_threads(timed(sched, "long2", batches(60, 2, log), out, bytes_per_sample=60),
                lambda: (time.sleep(0.3), timed(sched, "big", batches(5, 1, log), out, bytes_per_sample=50)()))
    assert log == [2] * 60 + [1] * 5  # 60 + 50 do not fit: no turns


def holding(sched, key: tuple, bytes_per_sample: int) -> tuple[threading.Event, threading.Thread]:
    """A job of ``key`` started on a thread of its own and running (holding its memory) until the returned event
    is set; returns (that event, the thread)."""
    started, release = threading.Event(), threading.Event()

    def hold(job, progress):
        started.set()
        release.wait(5)
        return "held"
    t = threading.Thread(target=lambda: sched.run(key, hold, bytes_per_sample=bytes_per_sample))
    t.start()
    started.wait(5)
    return release, t


def test_a_job_that_holds_more_than_its_estimate_is_measured_and_its_kind_is_charged_the_ratio():
    """The resident size is a counter the jobs move: a job estimated at 10 bytes that grows it by 50 while it
    runs alone has a measured peak of 50, reserves 50 while it is started, and the next job of its kind is
    admitted on 5 times its estimate (it no longer fits a budget its estimate fits)."""
    live = [1000]
    sched = Scheduler(max_jobs=1, cores=2, memory_bytes=1100, live_bytes=lambda: live[0],
                      base_bytes=lambda: 1000, slice_seconds=0)
    seen = {}

    def greedy(job, progress):
        for _ in range(5):
            live[0] += 10
            progress(0.5, "growing")
        seen["reserved"] = sched.status()["memory_reserved"]
        live[0] -= 50
        return "done"
    assert sched.run(("greedy", 1), greedy, bytes_per_sample=10) == "done"
    assert seen["reserved"] == 50 and sched.learned("greedy") == 5.0 and sched.learned("other") == 1.0
    assert sched.status()["memory_learned"] == {"greedy": 5.0}
    # 100 bytes of budget are free: a new greedy job estimated at 30 needs 150 now and waits behind a running one
    release, t = holding(sched, ("other",), 1)
    waiting = threading.Thread(target=lambda: seen.update(second=sched.run(("greedy", 2), lambda j, p: j.batch,
                                                                         bytes_per_sample=30)))
    waiting.start()
    time.sleep(0.3)
    assert "second" not in seen and sched.status()["queued"] == 1
    release.set()
    t.join(5)
    waiting.join(5)
    assert seen["second"] == 1  # alone it runs (one sample at a time), as every job does


def test_a_paused_jobs_growth_stays_its_own():
    """Two jobs take turns; each one's measured peak is what it grew while it ran, not the other's."""
    live = [0]
    lock = threading.Lock()
    sched = Scheduler(max_jobs=1, cores=2, memory_bytes=1 << 30, live_bytes=lambda: live[0] + 1,
                      slice_seconds=0.05)
    jobs = {}

    def grows(step):
        def compute(job, progress):
            jobs[step] = job
            for i in range(20):
                with lock:
                    live[0] += step
                time.sleep(0.01)
                progress(i / 20, "")
            return job.peak
        return compute
    out = {}
    run_threads(lambda: out.update(a=sched.run(("a",), grows(1), poll=0.005)),
                lambda: out.update(b=sched.run(("b",), grows(100), poll=0.005)))
    assert jobs[1].served > 0 or jobs[100].served > 0  # they took turns
    assert 15 <= jobs[1].peak <= 20 and 1500 <= jobs[100].peak <= 2000, (jobs[1].peak, jobs[100].peak)


@pytest.mark.parametrize("version", [1, 2])
def test_the_budget_follows_the_processs_own_memory_cgroup(tmp_path, monkeypatch, version):
    from core.serve import memory

    sys_root = tmp_path / "sys"
    if version == 2:
        (tmp_path / "cgroup").write_text("0::/app/web\n")
        (sys_root / "app" / "web").mkdir(parents=True)
        (sys_root / "app" / "memory.max").write_text(f"{1000 * 2**20}\n")
        (sys_root / "app" / "web" / "memory.max").write_text("max\n")
    else:
        (tmp_path / "cgroup").write_text("4:memory:/app/web\n1:cpu:/\n")
        folder = sys_root / "memory" / "app" / "web"
        folder.mkdir(parents=True)
        (folder / "memory.limit_in_bytes").write_text(f"{1000 * 2**20}\n")
        (sys_root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory.cgroup_limit_bytes(str(tmp_path / "cgroup"), str(sys_root)) == 1000 * 2**20
    assert memory.cgroup_limit_bytes(str(tmp_path / "missing"), str(sys_root)) is None
    monkeypatch.setattr(memory, "cgroup_limit_bytes", lambda: 1000 * 2**20)
    monkeypatch.setenv("LENS_MEMORY_MB", "2400")
    assert memory.default_memory_bytes() == int(memory.CGROUP_SHARE * 1000 * 2**20)
    monkeypatch.setattr(memory, "cgroup_limit_bytes", lambda: None)
    assert memory.default_memory_bytes() == 2400 * 2**20


def test_a_whole_job_waits_for_all_its_samples_rather_than_taking_a_batch_it_would_ignore():
    """Budget 100, a running job holding 60: a batchable job of 4 × 20 starts at once with a batch of 2; a whole
    one waits until the running job ends, then takes all 4."""
    sched = Scheduler(max_jobs=2, cores=2, max_threads=1, memory_bytes=100, slice_seconds=0)
    seen = {}
    release, t = holding(sched, ("holder",), 60)
    assert sched.run(("batchable",), lambda job, p: job.batch, bytes_per_sample=20, samples=4) == 2
    waiter = threading.Thread(target=lambda: seen.update(whole=sched.run(
        ("whole",), lambda job, p: job.batch, bytes_per_sample=20, samples=4, whole=True, poll=0.01)))
    waiter.start()
    time.sleep(0.3)
    assert "whole" not in seen and sched.status()["queued"] == 1
    release.set()
    t.join(5)
    waiter.join(5)
    assert seen["whole"] == 4


def test_learned_ratios_outlive_the_process_in_the_machine_table(tmp_path, monkeypatch):
    """A kind's ratio learnt by one scheduler is where the next process's scheduler starts (a restarted or woken
    server); the table keeps each kind's largest ratio; nonsense in the file is ignored."""
    from core import profile
    from core.serve.ledger import MAX_RATIO

    monkeypatch.setenv("LENS_PROFILE_DIR", str(tmp_path / "profile"))
    path = profile.table("memory-learned")
    assert path is not None and path.parent == tmp_path / "profile"
    live = [1000]

    def greedy(job, progress):
        live[0] += 30
        progress(0.5, "grown")
        live[0] -= 30
        return "done"

    first = Scheduler(max_jobs=1, cores=2, memory_bytes=10_000, live_bytes=lambda: live[0],
                      base_bytes=lambda: 1000, slice_seconds=0)
    first.ledger.keep_in(path)
    assert first.run(("greedy", 1), greedy, bytes_per_sample=10) == "done"
    assert first.learned("greedy") == 3.0 and profile.read_table(path) == {"greedy": 3.0}
    second = Scheduler(max_jobs=1, cores=2, memory_bytes=10_000, live_bytes=lambda: live[0])
    assert second.learned("greedy") == 1.0  # a scheduler that keeps nothing starts afresh
    second.ledger.keep_in(path)
    assert second.learned("greedy") == 3.0 and second.ledger.charge("greedy", 10) == 30
    assert profile.grow(path, {"greedy": 2.0, "other": 1.5}) == {"greedy": 3.0, "other": 1.5}
    path.write_text('{"greedy": "x", "big": 1e9, "flag": true, "ok": 1.25}')
    third = Scheduler(max_jobs=1, cores=2, memory_bytes=10_000)
    third.ledger.keep_in(path)
    assert third.ledger.ratios == {"ok": 1.25} and MAX_RATIO < 1e9
    path.write_text("not json")
    assert profile.read_table(path) == {}


def test_the_machine_table_is_off_or_unwritable_without_harm(tmp_path, monkeypatch):
    from core import profile

    monkeypatch.setenv("LENS_PROFILE_DIR", "off")
    assert profile.table("memory-learned") is None and profile.grow(None, {"a": 2.0}) == {"a": 2.0}
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert profile.grow(blocked / "t.json", {"a": 2.0}) == {"a": 2.0}  # its folder cannot be made


def test_the_process_wide_scheduler_keeps_its_ratios_in_the_machine_table():
    from core.serve.scheduling import scheduler

    store = scheduler().ledger.store
    assert store is not None and store.name.startswith("memory-learned-") and store.suffix == ".json"
