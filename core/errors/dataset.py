"""A labelled image set: an ImageFolder tree or a CSV of ``file,label``, matched to the model's class names.

ImageFolder: one sub-folder per class directly under the root; a folder name matches a class name
case-insensitively, or is a class index (``0``, ``17``). CSV: rows ``file,label`` (an optional header row
``file,label``), files relative to the CSV's folder, labels by name (case-insensitive) or index. A root that
holds a ``labels.csv`` (or ImageNet's ``LOC_val_solution.csv``) is read as that CSV.

For a model whose class names are timm's ImageNet names (the short form, ``tench``), a name may also be the
class's WordNet id (``n01440764``: ImageNet's own folder layout) or its full description (``tench, Tinca
tinca``); these also tell apart the few ImageNet classes that share a short name (``crane``). ImageNet's
validation CSV (header ``ImageId,PredictionString``; the label is the first token of the prediction string, a
WordNet id) names images without an extension: the file is looked up beside the CSV, in ``val/`` or in
``ILSVRC/Data/CLS-LOC/val/``, with any image extension. Reported names stay the model's class names.

Whatever cannot be used is listed as a :class:`Skipped` with its reason (unknown class folder, missing file, not
an image type, ...); decoding failures are added when the images are read (:mod:`core.errors.evaluate`).
Hosted (``LENS_HOSTED``), nothing outside the data folders and the visitor's uploads is read: a CSV row naming a
file elsewhere, and a class folder or file linking out of the root, are skipped without a look at their target.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..dataroots import readable
from ..files import hosted
from ..images import ImageError, is_image_name, list_images, load_image, model_pixels, pixels_batch

CSV_NAME = "labels.csv"
IMAGENET_VAL_CSV = "LOC_val_solution.csv"
IMAGENET_VAL_HEADER = ["imageid", "predictionstring"]
IMAGENET_VAL_DIRS = (".", "val", "ILSVRC/Data/CLS-LOC/val")
VAL_SUFFIXES = (".JPEG", ".jpeg", ".jpg", ".JPG", ".png", ".PNG", ".webp", ".bmp")


@dataclass(frozen=True)
class LabelledImage:
    path: Path         # the file
    name: str          # as reported: relative to the root (ImageFolder) or as written in the CSV
    label: int         # true class index


@dataclass(frozen=True)
class Skipped:
    item: str          # a file or folder, relative to the root
    reason: str

    def as_dict(self) -> dict:
        return {"image": self.item, "error": f"{self.item}: {self.reason}"}


@dataclass(frozen=True)
class LabelledSet:
    root: Path
    layout: str                          # "imagefolder", "csv" or "imagenet-val"
    items: tuple[LabelledImage, ...]
    skipped: tuple[Skipped, ...]


def imagenet_names(labels: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """(WordNet ids, full descriptions) of ``labels`` when they are timm's short ImageNet names (in their order),
    else None."""
    try:
        from timm.data import ImageNetInfo
    except ImportError:  # the labelled-set reader works without timm's metadata
        return None
    subsets = {1000: "imagenet-1k", 11821: "imagenet-12k", 21841: "imagenet-22k", 21843: "imagenet-21k"}
    subset = subsets.get(len(labels))
    if subset is None:
        return None
    try:
        info = ImageNetInfo(subset)
    except Exception:  # a subset this timm version does not ship
        return None
    described = [info.index_to_description(i) for i in range(len(labels))]
    short = [d.split(",")[0].strip().lower() for d in described]
    if sum(a == b.strip().lower() for a, b in zip(short, labels)) < 0.9 * len(labels):
        return None
    return [info.index_to_label_name(i) for i in range(len(labels))], described


class ClassMatcher:
    """Maps a folder name or CSV label to a class index: case-insensitive name, a WordNet id or full description
    (ImageNet models), else a class index."""

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self.by_name: dict[str, list[int]] = {}
        for i, name in enumerate(self.labels):
            self.by_name.setdefault(name.strip().lower(), []).append(i)
        self.exact: dict[str, int] = {}  # WordNet ids and full descriptions: each names one class
        imagenet = imagenet_names(self.labels)
        if imagenet is not None:
            wnids, descriptions = imagenet
            keys = [d.strip().lower() for d in descriptions]
            twice = {k for k in keys if keys.count(k) > 1} if len(set(keys)) < len(keys) else set()
            self.exact = {k: i for i, k in enumerate(keys) if k not in twice}
            self.exact.update({w.lower(): i for i, w in enumerate(wnids)})

    def match(self, text: str) -> tuple[int | None, str | None]:
        """(class index, None), or (None, reason)."""
        key = text.strip().lower()
        hits = self.by_name.get(key, [])
        if len(hits) == 1:
            return hits[0], None
        if len(hits) > 1:
            return None, (f"{text!r} names {len(hits)} classes ({', '.join(map(str, hits[:5]))}): use the index"
                          + (" or the WordNet id" if self.exact else ""))
        if key in self.exact:
            return self.exact[key], None
        if key.isdigit() and int(key) < len(self.labels):
            return int(key), None
        if self.exact and key[:1] == "n" and key[1:].isdigit():
            return None, f"{text!r} is not the WordNet id of one of the model's {len(self.labels)} ImageNet classes"
        shown = ", ".join(self.labels[:8]) + (", ..." if len(self.labels) > 8 else "")
        return None, f"{text!r} is not a class of the model ({len(self.labels)} classes: {shown})"


def read_labelled(source: str | os.PathLike, labels: Sequence[str]) -> LabelledSet:
    """The labelled images of ``source`` (a folder, or a CSV file) for a model with class names ``labels``.

    Raises:
        ImageError: ``source`` is neither a folder nor a CSV file, or holds no labelled image at all.
    """
    src = Path(source)
    if src.is_file() and src.suffix.lower() == ".csv":
        result = _read_csv(src, ClassMatcher(labels))
    elif src.is_dir() and (src / CSV_NAME).is_file():
        result = _read_csv(src / CSV_NAME, ClassMatcher(labels))
    elif src.is_dir() and (src / IMAGENET_VAL_CSV).is_file():
        result = _read_csv(src / IMAGENET_VAL_CSV, ClassMatcher(labels))
    elif src.is_dir():
        result = _read_folder(src, ClassMatcher(labels))
    else:
        raise ImageError(f"{src}: not a folder or a .csv file")
    if not result.items:
        reasons = "; ".join(f"{s.item}: {s.reason}" for s in result.skipped[:3])
        raise ImageError(f"{src}: no labelled images" + (f" ({reasons})" if reasons else
                         " (expected one sub-folder per class, or a CSV of file,label)"))
    return result


def _read_folder(root: Path, matcher: ClassMatcher) -> LabelledSet:
    items, skipped = [], []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if is_image_name(entry):
                skipped.append(Skipped(entry.name, "not in a class folder (ImageFolder layout: root/<class>/<image>)"))
            continue
        if not entry.is_dir():
            continue
        if hosted() and not entry.resolve().is_relative_to(root.resolve()):
            skipped.append(Skipped(entry.name + "/", "a link out of the folder: not read"))
            continue
        label, reason = matcher.match(entry.name)
        files = list_images(entry, hidden=False, any_file=True, within=root)
        if label is None:
            skipped.append(Skipped(entry.name + "/", f"unknown class folder: {reason} ({len(files)} files)"))
            continue
        for f in files:
            rel = f.relative_to(root).as_posix()
            if is_image_name(f):
                items.append(LabelledImage(f, rel, label))
            else:
                skipped.append(Skipped(rel, f"not an image file type ({f.suffix or 'no extension'})"))
    return LabelledSet(root, "imagefolder", tuple(items), tuple(skipped))


def _read_csv(path: Path, matcher: ClassMatcher) -> LabelledSet:
    items, skipped = [], []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ImageError(f"{path}: unreadable CSV ({e})") from None
    rows = list(csv.reader(text.splitlines()))
    if rows and [c.strip().lower() for c in rows[0][:2]] == IMAGENET_VAL_HEADER:
        return _read_imagenet_val(path, rows[1:], matcher)
    for n, row in enumerate(rows, start=1):
        if not row or not any(c.strip() for c in row):
            continue
        if n == 1 and [c.strip().lower() for c in row[:2]] in (["file", "label"], ["image", "label"],
                                                               ["path", "label"], ["filename", "label"]):
            continue
        if len(row) < 2 or not row[0].strip():
            skipped.append(Skipped(f"{path.name}:{n}", "expected two columns: file,label"))
            continue
        name, text_label = row[0].strip(), row[1]
        label, reason = matcher.match(text_label)
        if label is None:
            skipped.append(Skipped(name, f"unknown class: {reason}"))
            continue
        file = Path(os.path.normpath(path.parent / name))
        if not readable(file, path):
            skipped.append(Skipped(name, "not available here (outside the data folders and your uploads)"))
        elif not file.is_file():
            skipped.append(Skipped(name, "no such file"))
        elif not is_image_name(file):
            skipped.append(Skipped(name, f"not an image file type ({file.suffix or 'no extension'})"))
        else:
            items.append(LabelledImage(file, name, label))
    return LabelledSet(path.parent, "csv", tuple(items), tuple(skipped))


def _read_imagenet_val(path: Path, rows: list[list[str]], matcher: ClassMatcher) -> LabelledSet:
    """ImageNet's validation CSV: ``ImageId,PredictionString``, the label the string's first token."""
    items, skipped = [], []
    folders = [path.parent / d for d in IMAGENET_VAL_DIRS if (path.parent / d).is_dir()]
    for n, row in enumerate(rows, start=2):
        if not row or not any(c.strip() for c in row):
            continue
        tokens = row[1].split() if len(row) >= 2 else []
        if not row[0].strip() or not tokens:
            skipped.append(Skipped(f"{path.name}:{n}", "expected ImageId,PredictionString (a WordNet id first)"))
            continue
        name = row[0].strip()
        label, reason = matcher.match(tokens[0])
        if label is None:
            skipped.append(Skipped(name, f"unknown class: {reason}"))
            continue
        file = _find_image(folders, name, path)
        if file is None:
            skipped.append(Skipped(name, f"no such file (looked for {name}.JPEG and other image types in "
                                         f"{', '.join(d for d in IMAGENET_VAL_DIRS)} beside {path.name})"))
        else:
            items.append(LabelledImage(file, name, label))
    return LabelledSet(path.parent, "imagenet-val", tuple(items), tuple(skipped))


def _find_image(folders: Sequence[Path], name: str, csv_path: Path) -> Path | None:
    for folder in folders:
        for candidate in [folder / name] + [folder / (name + s) for s in VAL_SUFFIXES]:
            if readable(candidate, csv_path) and candidate.is_file() and is_image_name(candidate):
                return candidate
    return None


def stamp(source: str | os.PathLike) -> str:
    """Changes when a file under ``source`` (or the CSV and the files it names) is added, removed or modified."""
    import hashlib

    src = Path(source)
    h = hashlib.sha256()
    if src.is_file():
        files = [src] + sorted({(src.parent / row.split(",", 1)[0].strip()) for row in
                                src.read_text(encoding="utf-8-sig", errors="replace").splitlines() if "," in row})
    elif src.is_dir():
        files = list_images(src, any_file=True)
    else:
        return "missing"
    for f in files:
        try:
            st = f.stat()
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}|gone\n".encode())
    return h.hexdigest()[:16]


DECODE_STEP = 64  # images decoded at once between passes: an intra-op thread spins on its core after each pass


def decode_step(batch: int) -> int:
    """Images to decode between passes of ``batch``: at least ``DECODE_STEP``, a whole number of batches."""
    return batch * max(1, -(-DECODE_STEP // batch))


def decoding_helper() -> contextlib.AbstractContextManager[concurrent.futures.Executor | None]:
    """A one-thread executor for :func:`read_pixels`'s second half when this thread may use two or more cores
    (its intra-op thread count), else None: decoding never takes more cores than the passes it sits between."""
    if torch.get_num_threads() < 2:
        return contextlib.nullcontext()
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lens-decode")


def read_pixels(model, items: Sequence[LabelledImage], start: int, stop: int, *,
                helper: concurrent.futures.Executor | None = None
                ) -> tuple[torch.Tensor | None, list[int], list[dict]]:
    """``items[start:stop]`` as ``model`` sees them: ((n, 3, H, W) in [0, 1], None when none is readable; their
    positions in ``items``; ``{"image", "error"}`` of each that cannot be read).

    With ``helper`` (:func:`decoding_helper`) the second half is decoded there meanwhile. Decoding uses no
    PyTorch, so it is meant for the gaps between passes: beside a pass it would take a core from the pass's
    intra-op threads, which then wait for each other.
    """
    config = model.card.data_config

    def decode(first: int, last: int) -> tuple[list, list[int], list[dict]]:
        pixels, kept, errors = [], [], []
        for i in range(first, last):
            try:
                pixels.append(model_pixels(load_image(items[i].path, name=items[i].name), config))
                kept.append(i)
            except ImageError as e:
                errors.append({"image": items[i].name, "error": str(e)})
        return pixels, kept, errors

    middle = (start + stop) // 2 if helper is not None else stop
    later = helper.submit(decode, middle, stop) if helper is not None else None
    parts = [decode(start, middle)] + ([later.result()] if later is not None else [])
    pixels = [p for part in parts for p in part[0]]
    kept = [i for part in parts for i in part[1]]
    errors = [e for part in parts for e in part[2]]
    return (pixels_batch(pixels) if pixels else None), kept, errors
