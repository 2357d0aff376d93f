"""The Ray engine of the activation index: the same build on a Ray cluster (Ray Data batch inference).

The driver (:func:`core.index.build.build_index` with ``engine="ray"``) lists the folder and decides which images
are new, exactly as the local engine does; this module runs the work on Ray and yields the same
``(records, partials)`` batches the local engine yields, in the same order, so the driver's streaming merge,
checkpoints, cancel and manifest are shared and the two engines write the same index:

1. a dataset of relative paths, one block per batch of the local engine (so the batches are the same),
   ``preserve_order`` on;
2. ``map_batches(_decode)`` in Ray tasks: read, check and preprocess each image with
   :func:`core.index.passes.read_image` (the project's image intake: same refusals, same preprocessing);
3. ``map_batches(_Indexer, concurrency=workers)``: an actor pool; each actor loads the model once from a
   :func:`model_spec` (a name and weights to load, or the pickled weights of an in-memory model), captures
   the asked-for layers and sends back, per batch, each channel's top-k partial (:func:`~core.index.topk.batch_partial`:
   k values, batch-local image numbers, positions, and sums; by relevance too when asked, from the same
   :func:`~core.index.passes.forward_partials` as the local engine) with the image records: never activation maps;
4. the driver folds each partial into its running top-k as it arrives (memory flat in the number of images).

``ray`` is imported here only, and this module only when the Ray engine is asked for: the app runs without it.
"""
from __future__ import annotations

import json
import math
import pickle
import socket
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..catalogue import LayerInfo, find_layer
from ..model.identity import weights_fingerprint
from ..serve.tuning import default_heap_keep_mb, keep_freed_memory
from .passes import forward_partials, read_image

CONNECT_SECONDS = 15.0     # reaching an existing cluster
DECODE_CPUS = 0.25         # logical CPUs a decode task asks for (leaves the actors their CPUs on a small node)
INSTALL = "pip install -r requirements-ray.txt"


class EngineUnavailable(RuntimeError):
    """Ray is not installed, the cluster cannot be reached, or the work failed on it (one-line message)."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the [data] extra has no ray.data dependencies)
    except ImportError as e:
        raise EngineUnavailable(f"the Ray engine needs ray[data] ({e.name or e} is missing): {INSTALL}") from None
    return ray


def _probe(address: str, timeout: float) -> None:
    """Fail fast when ``ray://HOST:PORT`` does not accept a TCP connection (Ray Client would retry for minutes)."""
    hostport = address[len("ray://"):]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise EngineUnavailable(f"bad Ray address {address!r}: use auto or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise EngineUnavailable(f"cannot reach the Ray cluster at {address} ({e.strerror or e})") from None


def connect(address: str | None = None, timeout: float | None = None):
    """The ``ray`` module, connected: to ``address`` (``"auto"``: the cluster this machine belongs to;
    ``"ray://HOST:PORT"``: a remote head through Ray Client), or to a new local Ray when None. A Ray that this
    process already started (a test, a notebook) is used as it is.

    Raises:
        EngineUnavailable: ray is missing, a local Ray could not start, or no cluster answered within
            ``timeout`` seconds (default 15; starting a local Ray is not bounded: it takes seconds).
    """
    ray = _ray()
    if ray.is_initialized():
        return ray
    if address and address.startswith("ray://"):
        _probe(address, timeout or CONNECT_SECONDS)
    elif address not in (None, "auto"):
        raise EngineUnavailable(f"bad Ray address {address!r}: use auto or ray://HOST:PORT")
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True)
    if address and address.startswith("ray://"):  # the workers need this package: ship core/ (no caches)
        kwargs["runtime_env"] = {"py_modules": [str(Path(__file__).resolve().parent.parent)],
                                 "excludes": [".lens-cache", "__pycache__"]}
        kwargs.pop("include_dashboard")
    if address is None:
        # Start on this thread: Ray ties the processes it starts (GCS, raylet) to the starting thread's life
        # (PR_SET_PDEATHSIG), so a helper thread that ends would take the new cluster with it.
        try:
            ray.init(address="local", **kwargs)  # a new one, even when another Ray runs on this machine
        except Exception as e:  # e.g. no free port, no /tmp space
            raise EngineUnavailable(f"cannot start a local Ray: {_first_line(e)}") from None
        return ray
    outcome: list = []  # connecting to a running cluster starts no process: a thread bounds the wait

    def init():
        try:
            outcome.append(ray.init(address=address, **kwargs))
        except BaseException as e:  # reported on the calling thread
            outcome.append(e)

    t = threading.Thread(target=init, daemon=True, name="ray-init")
    t.start()
    t.join(timeout or CONNECT_SECONDS)
    if not outcome:
        raise EngineUnavailable(f"the Ray cluster at {address} did not answer within {timeout or CONNECT_SECONDS:.0f} s")
    if isinstance(outcome[0], BaseException):
        hint = " (start one with: ray start --head)" if address == "auto" else ""
        raise EngineUnavailable(f"cannot connect to the Ray cluster at {address}: {_first_line(outcome[0])}{hint}") from None
    return ray


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ------------------------------------------------------------------------------------------------ the model

def model_spec(model, ray) -> tuple:
    """How an actor gets ``model``: ``("load", name, weights)`` for a model :func:`core.model.loading.load_model`
    can rebuild on a worker (embedded, random-init, a weights file on a shared path, the hub), else
    ``("object", [ref])``: its net, card and labels put once in the object store (tests, notebooks)."""
    from ..model.loading import WeightsSource

    card = model.card
    if card.weights is WeightsSource.EMBEDDED:
        return ("load", card.name, "embedded")
    if card.weights is WeightsSource.RANDOM and card.fingerprint.startswith("random:"):
        return ("load", card.name, "random")
    if card.weights is WeightsSource.FILE:  # a head-only file names its backbone after the path
        return ("load", card.name, str(Path(str(card.weights_detail).split(" (head on ", 1)[0]).resolve()))
    if card.weights is WeightsSource.HUB:
        return ("load", card.name, "hub")
    return ("object", [ray.put((model.net, card, list(model.labels)))])


def prepare_worker(threads: int, heap_keep_mb: int) -> None:
    """An actor's process set up for batch work: ``threads`` PyTorch threads, and freed memory kept for the next
    batch as the command line keeps it (:func:`core.serve.tuning.keep_freed_memory`; 0: glibc's own policy). The
    driver passes its setting: a worker does not see the driver's environment."""
    torch.set_num_threads(max(1, threads))
    if heap_keep_mb:
        keep_freed_memory(heap_keep_mb)


def materialise(spec: tuple):
    """The LensModel a :func:`model_spec` describes (run in the actor)."""
    from ..model.loading import LensModel, load_model

    if spec[0] == "load":
        return load_model(spec[1], spec[2])
    import ray

    net, card, labels = ray.get(spec[1][0])
    return LensModel(net, card, labels)


# ------------------------------------------------------------------------------------------------ the stages

def _decode(batch: dict, root: str, data_config: dict) -> dict:
    """Ray task: read and preprocess a batch of images. Refused images keep their record (with the reason)
    and a zero tensor marked ``ok=False``."""
    root_path = Path(root)
    size = tuple(data_config["input_size"])
    records, tensors, ok = [], [], []
    for rel in batch["path"]:
        record, inp = read_image(root_path, root_path / str(rel), data_config)
        records.append(json.dumps(record))
        ok.append(inp is not None)
        tensors.append(inp.tensor.numpy() if inp is not None else np.zeros(size, np.float32))
    return {"record": np.array(records, dtype=object), "ok": np.array(ok, dtype=bool),
            "x": np.stack(tensors).astype(np.float32, copy=False)}


class ModelActor:
    """Base of the Ray actors that hold a model (the index's and the audit's).

    The model is loaded on the first call, in the thread that runs the calls, not in the constructor: Ray may run
    an actor's calls on another thread than the one that built it (Ray Data's map workers do), and a model loaded
    there leaves an idle OpenMP team behind; with two teams the process has more OpenMP threads than CPUs, and
    GNU OpenMP then stops spinning between parallel regions, which slows every pass.
    """

    def __init__(self, spec: tuple, fingerprint: str, threads: int, heap_keep_mb: int = 0, cuda: bool = False):
        prepare_worker(threads, heap_keep_mb)
        self._spec, self._fingerprint, self._model = spec, fingerprint, None
        self.device = torch.device("cuda" if cuda else "cpu")

    @property
    def model(self):
        """The model, loaded on first use and checked against the driver's weights fingerprint."""
        if self._model is None:
            model = materialise(self._spec)
            got = weights_fingerprint(model)
            if got != self._fingerprint:
                raise RuntimeError(f"the worker loaded other weights ({got[:24]}, expected {self._fingerprint[:24]})")
            self._model = model.to(self.device)  # after the fingerprint (computed on CPU tensors)
        return self._model


class _Indexer(ModelActor):
    """Ray actor: loads the model once, then turns batches of model inputs into per-channel top-k partials."""

    def __init__(self, spec: tuple, fingerprint: str, layers: Sequence[str], top_k: int, threads: int,
                 cuda: bool = False, relevance: bool = False, heap_keep_mb: int = 0):
        super().__init__(spec, fingerprint, threads, heap_keep_mb, cuda)
        self.layers, self.top_k, self.relevance = tuple(layers), top_k, relevance
        self.infos: list[LayerInfo] = []

    def __call__(self, batch: dict) -> dict:
        records = [json.loads(r) for r in batch["record"]]
        ok = np.asarray(batch["ok"], dtype=bool)
        parts = {}
        if ok.any():
            x = torch.from_numpy(np.ascontiguousarray(batch["x"][ok])).to(self.device)
            self.infos = self.infos or [find_layer(self.model, n) for n in self.layers]
            parts = forward_partials(self.model, self.infos, x, self.top_k, relevance=self.relevance)
        return {"blob": np.array([pickle.dumps((records, parts), protocol=pickle.HIGHEST_PROTOCOL)], dtype=object)}


# ------------------------------------------------------------------------------------------------ the driver

def batches(model, root: Path, infos: Sequence[LayerInfo], todo: list[Path], *, batch_size: int, top_k: int,
            workers: int, address: str | None = None, gpus_per_worker: float = 0.0,
            relevance: bool = False) -> Iterator[tuple[list[dict], dict]]:
    """Run decode and model on Ray; yield ``(records, partials)`` per batch, in the order of ``todo``.

    ``records`` are :func:`~core.index.passes.read_image` records; ``partials`` the
    :func:`~core.index.passes.forward_partials` of the batch's readable images (with ``relevance``: both rankings). Closing the iterator stops the
    dataset's execution. ``gpus_per_worker`` > 0: each actor asks Ray for that many GPUs and runs the model
    on CUDA (untested here: no GPU on the development machine).

    Raises:
        EngineUnavailable: ray missing, cluster unreachable, or a task or actor failed (raised when iterated).
    """
    ray = connect(address)
    rels = [str(p.relative_to(root)) for p in todo]
    return _stream(ray, model, root, infos, rels, batch_size=batch_size, top_k=top_k, workers=workers,
                   gpus=gpus_per_worker, relevance=relevance)


def _stream(ray, model, root, infos, rels, *, batch_size, top_k, workers, gpus, relevance):
    if not rels:
        return
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    actor_cpus = max(0.1, min(1.0, (cpus - DECODE_CPUS) / workers))
    import pyarrow as pa  # a dependency of ray[data]

    # one block per batch of the local engine: Ray Data cuts batches within a block, so the same images pass the
    # model together as locally (LRP's relevance depends on a batch's composition in its last bits, amplified)
    ds = ray.data.from_arrow([pa.table({"path": rels[i:i + batch_size]}) for i in range(0, len(rels), batch_size)])
    ds.context.execution_options.preserve_order = True  # same image ids (and tie order) as the local engine
    ds.context.enable_progress_bars = False
    ds = ds.map_batches(_decode, batch_size=batch_size, batch_format="numpy", num_cpus=DECODE_CPUS,
                        fn_kwargs={"root": str(root), "data_config": model.card.data_config})
    ds = ds.map_batches(_Indexer, batch_size=batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=workers),
                        num_cpus=actor_cpus, num_gpus=gpus or None,
                        fn_constructor_kwargs={"spec": model_spec(model, ray), "fingerprint": weights_fingerprint(model),
                                               "layers": [l.name for l in infos], "top_k": top_k,
                                               "threads": max(1, math.floor(actor_cpus)), "cuda": gpus > 0,
                                               "relevance": relevance, "heap_keep_mb": default_heap_keep_mb()})
    rows = ds.iter_rows()
    try:
        for row in rows:
            yield pickle.loads(row["blob"])
    except ray.exceptions.RayError as e:
        text = str(e).strip().splitlines()
        reason = next((l for l in reversed(text) if l.strip()), type(e).__name__)
        raise EngineUnavailable(f"the Ray build failed: {reason.strip()}") from None
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
