"""The audit in words and as JSON: the flag for a cluster unlike the rest, the payload, the ``--out-dir`` files."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .audit import Audit, ClassAudit, Cluster

FLAG_OUTLIER = 0.3      # outlier score from which a cluster is worth a look
REGIONS = (("upper-left corner", "top edge", "upper-right corner"), ("left edge", "centre", "right edge"),
           ("lower-left corner", "bottom edge", "lower-right corner"))


def where(mean_map: np.ndarray, rest: np.ndarray | None = None) -> str:
    """The part of the image (one of nine) where ``mean_map`` (g, g) holds more relevance than ``rest``."""
    excess = mean_map - (rest if rest is not None else np.full_like(mean_map, 1.0 / mean_map.size))
    cells = _thirds(np.clip(excess, 0, None))
    r, c = np.unravel_index(int(np.argmax(cells)), (3, 3))
    return REGIONS[r][c]


def _thirds(m: np.ndarray) -> np.ndarray:
    edges = np.linspace(0, m.shape[0], 4).round().astype(int)
    return np.array([[m[edges[i]:edges[i + 1], edges[j]:edges[j + 1]].sum() for j in range(3)] for i in range(3)])


def flag(audit: ClassAudit, cluster: Cluster) -> str | None:
    """A sentence the user can act on when ``cluster`` is the class's most unlike cluster (the first by outlier
    score) and its score reaches :data:`FLAG_OUTLIER`, else None."""
    n = len(audit.images)
    if len(audit.clusters) < 2 or cluster is not audit.clusters[0] or cluster.outlier < FLAG_OUTLIER:
        return None
    others = np.setdiff1d(np.arange(n), cluster.members)
    rest = audit.maps[others].mean(0)
    place = where(cluster.mean_map, rest)
    text = f"{cluster.size} of {n} images of {audit.name}: the evidence sits in the {place}"
    rest_border = _border(rest)
    if cluster.border_share > rest_border + 0.1:
        text += (f", near the border ({cluster.border_share:.0%} of it, against {rest_border:.0%} for the rest "
                 "of the class), not on the object")
    else:
        text += ", unlike the rest of the class"
    return text + f" (accuracy {cluster.accuracy:.0%})."


def _border(m: np.ndarray) -> float:
    from .audit import region_shares

    return region_shares(m)[0]


def payload(audit: Audit, *, out_dir: str | None = None, with_maps: bool = False) -> dict:
    """The JSON of an audit: ``{"model", "method", "classes", "errors", "seconds"}`` (see docs/audit.md).

    ``out_dir``: also write each cluster's mean map as ``<class>-<id>.npy`` (float32 (32, 32), sums to 1) and
    ``.png``; with_maps: each cluster carries its ``mean_map`` as nested lists.
    """
    classes = []
    for c in audit.classes:
        clusters = []
        for k in c.clusters:
            entry = {"id": k.id, "size": k.size, "images": list(k.images), "accuracy": round(k.accuracy, 4),
                     "border_share": round(k.border_share, 4), "outlier": round(k.outlier, 4)}
            if with_maps:
                entry["mean_map"] = np.round(k.mean_map, 6).tolist()
            if out_dir:
                entry["mean_map"] = write_map(Path(out_dir), f"{_safe(c.name)}-{k.id}", k.mean_map)
            clusters.append(entry)
        classes.append({"class": c.name, "images": len(c.images),
                        "eigengap": [round(float(g), 4) for g in c.eigengap], "clusters": clusters})
    return {"model": audit.model, "method": audit.method, "classes": classes, "errors": list(audit.errors),
            "seconds": round(audit.seconds, 3)}


def write_map(folder: Path, stem: str, m: np.ndarray) -> str:
    """Write ``m`` (g, g) as ``stem.npy`` and a greyscale ``stem.png`` (scaled to its maximum); the .npy path."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{stem}.npy", m.astype(np.float32))
    peak = float(m.max()) or 1.0
    Image.fromarray((255 * m / peak).astype(np.uint8)).resize((224, 224), Image.NEAREST).save(folder / f"{stem}.png")
    return str(folder / f"{stem}.npy")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60] or "class"
