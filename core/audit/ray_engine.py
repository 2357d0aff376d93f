"""The audit's per-image maps on Ray, as the activation index computes on Ray (:mod:`core.index.ray_engine`).

A Ray Data dataset of ``(position, path, label)`` rows, order preserved, goes through an actor pool: each actor
loads the model once (:func:`core.index.ray_engine.model_spec`, checked by its weights fingerprint), reads a batch
of images and computes their pooled maps with the same function as the local engine
(:func:`core.audit.maps.image_maps`); only the pooled maps (4 KB an image) and predictions come back, streamed
batch by batch. The same batches give the same maps, so the clusters equal the local engine's.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors.dataset import LabelledImage
from ..index.ray_engine import EngineUnavailable, connect, materialise, model_spec, prepare_worker
from ..serve.tuning import default_heap_keep_mb
from ..model.identity import weights_fingerprint


class _Mapper:
    """Ray actor: loads the model once, then turns batches of image paths into pooled maps and predictions."""

    def __init__(self, spec: tuple, fingerprint: str, method: str, threads: int, heap_keep_mb: int = 0):
        prepare_worker(threads, heap_keep_mb)
        self.model = materialise(spec)
        got = weights_fingerprint(self.model)
        if got != fingerprint:
            raise RuntimeError(f"the worker loaded other weights ({got[:24]}, expected {fingerprint[:24]})")
        self.method = method

    def __call__(self, batch: dict) -> dict:
        from ..images import ImageError, load_image, preprocess
        from .maps import GRID, image_maps

        xs, ok, errors = [], [], []
        for path, name in zip(batch["path"], batch["name"]):
            try:
                xs.append(preprocess(load_image(str(path), name=str(name)), self.model.card.data_config).tensor)
                ok.append(True)
                errors.append("")
            except ImageError as e:
                ok.append(False)
                errors.append(str(e))
        ok_mask = np.array(ok, dtype=bool)
        maps = np.zeros((len(ok), GRID, GRID), np.float32)
        predicted = np.full(len(ok), -1, dtype=np.int64)
        if xs:
            labels = [int(l) for l, good in zip(batch["label"], ok) if good]
            maps[ok_mask], predicted[ok_mask] = image_maps(self.model, torch.stack(xs), labels, self.method)
        return {"i": np.asarray(batch["i"]), "maps": maps, "predicted": predicted,
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
    rows = [{"i": i, "path": str(Path(it.path)), "name": it.name, "label": int(it.label)} for i, it in enumerate(items)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch_size)))
    ds.context.execution_options.preserve_order = True
    ds.context.enable_progress_bars = False
    ds = ds.map_batches(_Mapper, batch_size=batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=actor_cpus,
                        fn_constructor_kwargs={"spec": model_spec(model, ray), "fingerprint": weights_fingerprint(model),
                                               "method": method, "threads": max(1, math.floor(actor_cpus)),
                                               "heap_keep_mb": default_heap_keep_mb()})
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
