"""Memory: the process's resident size, the bytes one image needs in a pass of a model, the budget jobs share
(``LENS_MEMORY_MB``), and handing freed heap back to the system."""
from __future__ import annotations

import os

import torch

from ..hooks import hooks_on
from ..memo import PerModel
from .env import env_mb


CGROUP_SHARE = 0.9  # of a memory cgroup's limit: the rest for library pages and what a slice allocates unseen


def default_memory_bytes() -> int:
    """``LENS_MEMORY_MB`` (default 2400) in bytes, at most :data:`CGROUP_SHARE` of the limit of the memory cgroup
    the process runs in (a hosted tier that kills an app over its limit): the budget of the process's memory
    outside jobs plus the running jobs' estimates."""
    budget = env_mb("LENS_MEMORY_MB", 2400)
    limit = cgroup_limit_bytes()
    return min(budget, int(CGROUP_SHARE * limit)) if limit else budget


def own_cgroups(proc_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """This process's cgroup path per hierarchy: ``"2"`` for the unified one, ``"memory"`` for v1's controller."""
    own = {}
    try:
        with open(proc_cgroup) as f:
            for line in f:
                hid, controllers, path = line.rstrip("\n").split(":", 2)
                if hid == "0" and controllers == "":
                    own["2"] = path
                elif "memory" in controllers.split(","):
                    own["memory"] = path
    except (OSError, ValueError):
        pass
    return own


def cgroup_limit_bytes(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> int | None:
    """The memory limit of this process's cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``, the smaller
    with ``memory.memsw.limit_in_bytes``), the tightest along its path up to the root; None without one."""
    own = own_cgroups(proc_cgroup)
    places = []
    if "2" in own:
        places.append((root, own["2"], ("memory.max",)))
    if "memory" in own:
        places.append((os.path.join(root, "memory"), own["memory"],
                       ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")))
    limits = []
    for top, path, names in places:
        folder = os.path.join(top, path.lstrip("/"))
        while True:
            for name in names:
                try:
                    with open(os.path.join(folder, name)) as f:
                        value = f.read().strip()
                except OSError:
                    continue
                # "max" (v2) or a page-rounded 2^63 (v1) mean no limit
                if value.isdigit() and int(value) < 1 << 60:
                    limits.append(int(value))
            if len(os.path.normpath(folder)) <= len(os.path.normpath(top)):
                break
            folder = os.path.dirname(folder)
    return min(limits) if limits else None


def rss_bytes() -> int:
    """The process's resident memory now (Linux /proc; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_per_sample: PerModel[dict] = PerModel()


def per_sample_bytes(model, kind: str = "gradient") -> int:
    """Bytes one image needs in a pass of ``model`` at its input size, measured once per model.

    ``gradient``: every leaf layer's output is kept for the backward pass, plus as much again for the gradients
    flowing back; ``forward``: the largest three consecutive outputs (what is alive at once without autograd).
    """
    if kind not in ("gradient", "forward"):
        raise ValueError(f"kind must be 'gradient' or 'forward', not {kind!r}")
    return int(_per_sample.get_or_make(model, lambda: _measure(model))[kind])


def _measure(model) -> dict[str, int]:
    """{"gradient": bytes, "forward": bytes} from the sizes of every leaf layer's output on one zero image."""
    sizes: list[int] = []
    with hooks_on(model) as hooks, torch.no_grad():
        for m in model.net.modules():
            if next(m.children(), None) is None:
                hooks.forward(m, lambda _m, _i, out: sizes.append(
                    out.numel() * out.element_size() if isinstance(out, torch.Tensor) else 0))
        model(torch.zeros(1, *model.card.input_size))
    window = max(sum(sizes[i:i + 3]) for i in range(max(1, len(sizes) - 2))) if sizes else 0
    return {"gradient": 2 * sum(sizes), "forward": window}


def release_memory() -> None:
    """Hand the freed heap back to the system (glibc keeps it otherwise, and the resident size, which the memory
    budget counts, would only ever grow). A no-op where there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
