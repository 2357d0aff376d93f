"""Pretrained weights from the Hugging Face hub through timm: a probe with a hard timeout, the local cache,
and the pretrained tags timm knows."""
from __future__ import annotations

import os
import threading
import time
import urllib.request

import timm
from torch import nn

from ..hashing import file_sha256
from .wrapper import ModelLoadError

HUB_PROBE_SECONDS = 3.0

_probe_cache: dict[str, tuple[float, bool]] = {}


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` seconds (cached for a minute).

    ``HF_HUB_OFFLINE=1`` or ``LENS_OFFLINE=1`` answer False at once. The probe runs in a daemon thread so a
    hanging DNS lookup cannot stall the caller past the timeout.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get("LENS_OFFLINE"):
        return False
    url = hub_endpoint()
    now = time.monotonic()
    cached = _probe_cache.get(url)
    if cached and now - cached[0] < 60:
        return cached[1]
    result = {"ok": False}

    def probe():
        try:
            req = urllib.request.Request(url + "/api/models/timm/convnext_tiny.fb_in1k", method="HEAD")
            with urllib.request.urlopen(req, timeout=timeout):
                result["ok"] = True
        except Exception:  # any failure means "not usable now"
            result["ok"] = False

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    ok = bool(result["ok"]) and not t.is_alive()
    _probe_cache[url] = (now, ok)
    return ok


def _cached_hub_file(hub_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(hub_id, filename)
        if isinstance(path, str) and os.path.exists(path):
            return path
    return None


def load_hub(name: str) -> tuple[nn.Module, str, str]:
    """Build ``name`` with pretrained hub weights. Returns (net, hub id, fingerprint)."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ModelLoadError(f"timm has no pretrained weights for {name!r}")
    hub_id = cfg.hf_hub_id or cfg.url
    cached = _cached_hub_file(cfg.hf_hub_id) if cfg.hf_hub_id else None
    if cached:
        net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached})
        return net, hub_id, "sha256:" + file_sha256(cached)
    if not hub_reachable():
        raise ModelLoadError(
            f"cannot reach the Hugging Face hub and {name} weights are not cached")
    net = timm.create_model(name, pretrained=True)
    cached = _cached_hub_file(cfg.hf_hub_id) if cfg.hf_hub_id else None
    return net, hub_id, "sha256:" + file_sha256(cached) if cached else f"hub:{hub_id}"


def list_pretrained_tags(arch: str) -> list[str]:
    """All pretrained names timm knows for ``arch`` (e.g. ``convnext_tiny.fb_in22k_ft_in1k``), sorted."""
    return sorted(timm.list_pretrained(f"{arch}.*"))


def default_pretrained_name(arch: str) -> str | None:
    """``arch.tag`` for timm's default pretrained weights of ``arch``, if it has any."""
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:
        return None
    return f"{arch}.{cfg.tag}" if cfg is not None and cfg.tag else None
