"""A labelled image set: an ImageFolder tree or a CSV of ``file,label``, matched to the model's class names.

ImageFolder: one sub-folder per class directly under the root; a folder name matches a class name
case-insensitively, or is a class index (``0``, ``17``). CSV: rows ``file,label`` (an optional header row
``file,label``), files relative to the CSV's folder, labels by name (case-insensitive) or index. A root that
holds a ``labels.csv`` is read as that CSV. Whatever cannot be used is listed as a :class:`Skipped` with its
reason (unknown class folder, missing file, not an image type, ...); decoding failures are added when the
images are read (:mod:`core.errors.evaluate`).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..dataroots import readable
from ..images import ImageError, is_image_name, list_images

CSV_NAME = "labels.csv"


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
    layout: str                          # "imagefolder" or "csv"
    items: tuple[LabelledImage, ...]
    skipped: tuple[Skipped, ...]


class ClassMatcher:
    """Maps a folder name or CSV label to a class index: case-insensitive name, else a class index."""

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self.by_name: dict[str, list[int]] = {}
        for i, name in enumerate(self.labels):
            self.by_name.setdefault(name.strip().lower(), []).append(i)

    def match(self, text: str) -> tuple[int | None, str | None]:
        """(class index, None), or (None, reason)."""
        key = text.strip().lower()
        hits = self.by_name.get(key, [])
        if len(hits) == 1:
            return hits[0], None
        if len(hits) > 1:
            return None, f"{text!r} names {len(hits)} classes ({', '.join(map(str, hits[:5]))}): use the index"
        if key.isdigit() and int(key) < len(self.labels):
            return int(key), None
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
        label, reason = matcher.match(entry.name)
        files = list_images(entry, hidden=False, any_file=True)
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
