"""The audit's per-image maps on Ray: an actor pool that loads the model once, results streamed back.

The images go in blocks of 64 (the local engine's decoding step), in order, to a pool of actors; each actor loads
the model once (:func:`core.index.ray_engine.model_spec`, checked by its weights fingerprint) and maps a block with
the local engine's own loop (:func:`core.audit.maps.map_batches`: decoding on two threads between the passes, the
same batches of 8); only the pooled maps (4 KB an image) and predictions come back, block by block, in order. The
same batches give the same maps, so the clusters equal the local engine's.

On a running cluster (``address`` given) the actors stay for the next audit of the same model, method and code
(named, detached, in the :data:`NAMESPACE` namespace) and leave after :data:`IDLE_SECONDS` without a call: a
second audit starts at once rather than after a worker's start and a model's load. A Ray started by the call
(no ``address``) ends with it, and so do its actors.
"""
from __future__ import annotations

import collections
import hashlib
import math
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors.dataset import LabelledImage, decode_step
from ..index.ray_engine import EngineUnavailable, ModelActor, connect, model_spec
from ..model.identity import weights_fingerprint
from ..serve.store import code_version
from ..serve.tuning import default_heap_keep_mb

NAMESPACE = "convnext-lens"
IDLE_SECONDS = 600.0
IN_FLIGHT = 2  # blocks queued per actor: the next block is there when one ends


class _Mapper(ModelActor):
    """Ray actor: loads the model once, then turns blocks of image paths into pooled maps and predictions."""

    def __init__(self, spec: tuple, fingerprint: str, method: str, threads: int, heap_keep_mb: int = 0,
                 batch_size: int = 8, idle_seconds: float = 0.0):
        super().__init__(spec, fingerprint, threads, heap_keep_mb)
        self.method, self.batch_size = method, batch_size
        self.calls, self.last = 0, time.monotonic()
        if idle_seconds > 0:
            threading.Thread(target=self._leave_when_idle, args=(idle_seconds,), daemon=True,
                             name="lens-idle").start()

    def map_block(self, start: int, paths: Sequence[str], names: Sequence[str], labels: Sequence[int]) -> dict:
        """Items ``start, start + 1, ...`` of the audit (``start`` a multiple of the batch size), mapped by the
        local engine's loop: ``{"i", "maps", "predicted", "error"}``, one entry an item ("" where it was read)."""
        from .maps import GRID, map_batches as local_batches

        self.last = time.monotonic()
        items = [LabelledImage(Path(p), str(n), int(l)) for p, n, l in zip(paths, names, labels)]
        maps = np.zeros((len(items), GRID, GRID), np.float32)
        predicted = np.full(len(items), -1, dtype=np.int64)
        errors = [""] * len(items)
        where = {it.name: k for k, it in enumerate(items)}
        for kept, pooled, guessed, bad in local_batches(self.model, items, self.method, batch_size=self.batch_size):
            maps[kept], predicted[kept] = pooled, guessed
            for e in bad:
                errors[where[e["image"]]] = e["error"]
        self.calls += 1
        self.last = time.monotonic()
        return {"i": np.arange(start, start + len(items)), "maps": maps, "predicted": predicted, "error": errors}

    def served(self) -> int:
        """Blocks mapped so far (a reused actor has served before)."""
        return self.calls

    def _leave_when_idle(self, idle_seconds: float) -> None:
        import ray

        while True:
            time.sleep(min(idle_seconds, 10.0))
            if time.monotonic() - self.last > idle_seconds:
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return


def pool_key(fingerprint: str, method: str, threads: int, batch_size: int, heap_keep_mb: int) -> str:
    """What a kept actor must match to serve again: the weights (their fingerprint), the method, its threads,
    batches and heap, and the code."""
    text = "|".join(map(str, (fingerprint, method, threads, batch_size, heap_keep_mb, code_version())))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def actors(ray, model, method: str, *, workers: int, batch_size: int, keep: bool) -> list:
    """``workers`` actor handles; ``keep``: named and detached, found again by the next call with the same
    :func:`pool_key`."""
    # each actor gets its share of the cluster's CPUs as threads (the local engine's one process uses every core),
    # at most one node's worth: an actor cannot span nodes
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    node_cpus = max((float(n.get("Resources", {}).get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")),
                    default=1.0)
    actor_cpus = max(0.1, min(node_cpus, cpus / workers))
    threads, heap, fingerprint = max(1, math.floor(actor_cpus)), default_heap_keep_mb(), weights_fingerprint(model)
    kwargs = {"spec": model_spec(model, ray), "fingerprint": fingerprint, "method": method,
              "threads": threads, "heap_keep_mb": heap, "batch_size": batch_size,
              "idle_seconds": IDLE_SECONDS if keep else 0.0}
    cls = ray.remote(_Mapper)
    key = pool_key(fingerprint, method, threads, batch_size, heap)
    handles = []
    for k in range(workers):
        options = {"num_cpus": actor_cpus, "max_restarts": 0}
        if keep:
            options.update(name=f"lens-audit-{key}-{k}", namespace=NAMESPACE, lifetime="detached",
                           get_if_exists=True)
        handles.append(cls.options(**options).remote(**kwargs))
    return handles


def map_batches(model, items: Sequence[LabelledImage], method: str, *, batch_size: int, workers: int = 1,
                address: str | None = None) -> Iterator[tuple[list[int], np.ndarray, np.ndarray, list[dict]]]:
    """As :func:`core.audit.maps.map_batches` (positions, pooled maps, predictions, read errors per block), on Ray.

    Raises:
        EngineUnavailable: ray missing, cluster unreachable, or a task or actor failed (raised when iterated).
    """
    ray = connect(address)
    if not items:
        return
    keep = address is not None
    block = decode_step(batch_size)
    starts = list(range(0, len(items), block))
    pending: collections.deque = collections.deque()
    pool: list = []
    try:
        pool = actors(ray, model, method, workers=workers, batch_size=batch_size, keep=keep)

        def submit(n: int) -> None:
            part = items[starts[n]:starts[n] + block]
            pending.append(pool[n % len(pool)].map_block.remote(
                starts[n], [str(Path(it.path)) for it in part], [it.name for it in part],
                [int(it.label) for it in part]))

        submitted = 0
        while submitted < min(len(starts), IN_FLIGHT * len(pool)):
            submit(submitted)
            submitted += 1
        while pending:
            out = ray.get(pending.popleft())
            if submitted < len(starts):
                submit(submitted)
                submitted += 1
            i = [int(v) for v in out["i"]]
            good = [k for k, e in enumerate(out["error"]) if not e]
            errors = [{"image": items[i[k]].name, "error": str(out["error"][k])} for k in range(len(i))
                      if out["error"][k]]
            yield [i[k] for k in good], out["maps"][good], out["predicted"][good], errors
    except ray.exceptions.RayError as e:
        text = [l for l in str(e).strip().splitlines() if l.strip()]
        raise EngineUnavailable(f"the Ray audit failed: {(text[-1] if text else type(e).__name__).strip()}") from None
    finally:
        for ref in pending:  # stopped early (cancelled, or an error): the queued blocks are not wanted
            try:
                ray.cancel(ref)
            except Exception:  # already done, or the actor is gone: nothing to stop
                pass
        if not keep:
            for handle in pool:
                ray.kill(handle)


def release_kept(ray) -> int:
    """End every kept audit actor of the connected cluster (they would leave after :data:`IDLE_SECONDS`); returns
    how many."""
    gone = 0
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") == NAMESPACE and entry.get("name", "").startswith("lens-audit-"):
            try:
                ray.kill(ray.get_actor(entry["name"], namespace=NAMESPACE))
                gone += 1
            except ValueError:  # left meanwhile
                pass
    return gone
