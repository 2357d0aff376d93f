"""The audit's per-image maps on Ray, as the activation index computes on Ray (:mod:`core.index.ray_engine`).

A Ray Data dataset of blocks of images (64 of them, the local engine's decoding step; order preserved) goes through
an actor pool: each actor loads the model once (:func:`core.index.ray_engine.model_spec`, checked by its weights
fingerprint) and maps each block with the local engine's own loop (:func:`core.audit.audit.map_batches`: decoding
on two threads between the passes, the same batches of 8); only the pooled maps (4 KB an image) and predictions
come back, streamed block by block. The same batches give the same maps, so the clusters equal the local engine's.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors.dataset import LabelledImage, decode_step
from ..index.ray_engine import EngineUnavailable, ModelActor, connect, model_spec
from ..serve.tuning import default_heap_keep_mb
from ..model.identity import weights_fingerprint


class _Mapper(ModelActor):
    """Ray actor: loads the model once, then turns blocks of image paths into pooled maps and predictions."""

    def __init__(self, spec: tuple, fingerprint: str, method: str, threads: int, heap_keep_mb: int = 0,
                 batch_size: int = 8):
        super().__init__(spec, fingerprint, threads, heap_keep_mb)
        self.method, self.batch_size = method, batch_size

    def __call__(self, batch: dict) -> dict:
        """One row: a block of items (a whole number of the local engine's batches, from one of them on), mapped
        by the local engine's loop (:func:`core.audit.audit.map_batches`: decoding between the passes, the same
        batches), so the maps equal the local engine's."""
        from .audit import map_batches as local_batches
        from .maps import GRID

        start = int(batch["start"][0])
        items = [LabelledImage(Path(str(p)), str(n), int(l))
                 for p, n, l in zip(batch["path"][0], batch["name"][0], batch["label"][0])]
        maps = np.zeros((len(items), GRID, GRID), np.float32)
        predicted = np.full(len(items), -1, dtype=np.int64)
        errors = [""] * len(items)
        where = {it.name: k for k, it in enumerate(items)}
        for kept, pooled, guessed, bad in local_batches(self.model, items, self.method, batch_size=self.batch_size):
            maps[kept], predicted[kept] = pooled, guessed
            for e in bad:
                errors[where[e["image"]]] = e["error"]
        return {"i": np.arange(start, start + len(items)), "maps": maps, "predicted": predicted,
                "error": np.array(errors, dtype=object)}


def map_batches(model, items: Sequence[LabelledImage], method: str, *, batch_size: int, workers: int = 1,
                address: str | None = None) -> Iterator[tuple[list[int], np.ndarray, np.ndarray, list[dict]]]:
    """As :func:`core.audit.audit.map_batches` (positions, pooled maps, predictions, read errors per batch), on Ray.

    Raises:
        EngineUnavailable: ray missing, cluster unreachable, or a task or actor failed (raised when iterated).
    """
    ray = connect(address)
    if not items:
        return
    # each actor gets its share of the cluster's CPUs as threads (the local engine's one process uses every core),
    # at most one node's worth: an actor cannot span nodes
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    node_cpus = max((float(n.get("Resources", {}).get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")),
                    default=1.0)
    actor_cpus = max(0.1, min(node_cpus, cpus / workers))
    # one row a block of decode_step(batch_size) items from a multiple of it: whatever blocks Ray Data forms, each
    # call runs the local engine's batches over whole blocks
    block = decode_step(batch_size)
    rows = [{"start": s, "path": [str(Path(it.path)) for it in items[s:s + block]],
             "name": [it.name for it in items[s:s + block]], "label": [int(it.label) for it in items[s:s + block]]}
            for s in range(0, len(items), block)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds.context.execution_options.preserve_order = True
    ds.context.enable_progress_bars = False
    ds = ds.map_batches(_Mapper, batch_size=1, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=actor_cpus,
                        fn_constructor_kwargs={"spec": model_spec(model, ray), "fingerprint": weights_fingerprint(model),
                                               "method": method, "threads": max(1, math.floor(actor_cpus)),
                                               "heap_keep_mb": default_heap_keep_mb(), "batch_size": batch_size})
    try:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            i = [int(v) for v in out["i"]]
            good = [k for k, e in enumerate(out["error"]) if not e]
            errors = [{"image": items[i[k]].name, "error": str(out["error"][k])} for k in range(len(i))
                      if out["error"][k]]
            yield [i[k] for k in good], out["maps"][good], out["predicted"][good], errors
    except ray.exceptions.RayError as e:
        text = [l for l in str(e).strip().splitlines() if l.strip()]
        raise EngineUnavailable(f"the Ray audit failed: {(text[-1] if text else type(e).__name__).strip()}") from None
