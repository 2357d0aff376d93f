"""A visitor's uploaded data sets: unpacked safely into their own area, limited, and removed when stale.

Each session has an area ``LENS_CACHE_DIR/uploads/<session id>``. A ``.zip`` is checked member by member before
anything is written: no absolute or ``..`` names, no links, no nested archives, at most ``LENS_UPLOAD_FILES``
members and ``LENS_UPLOAD_MB`` unpacked (declared sizes, then the bytes actually written, which catches a lying
header), each image within the byte and pixel limits of :mod:`core.images`. It is unpacked into a hidden temporary
folder inside the area and renamed into place only when all of it passed. Areas not touched for
``LENS_UPLOAD_TTL`` seconds are removed by :func:`sweep` (Streamlit tells a server nothing when a tab closes).
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from pathlib import Path
from typing import BinaryIO, Iterable

from .files import cache_path
from .images import IMAGE_SUFFIXES, MAX_BYTES, MAX_PIXELS

ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst")
MARK = ".touched"  # its modification time is the area's last use
CHUNK = 1 << 20


class UploadError(ValueError):
    """An upload that is refused; the message is one line and names only the visitor's own files."""


def limits() -> tuple[int, int, int]:
    """``(bytes, files, ttl seconds)`` from ``LENS_UPLOAD_MB`` (200), ``LENS_UPLOAD_FILES`` (5000) and
    ``LENS_UPLOAD_TTL`` (3600), read at call time."""
    return (int(float(os.environ.get("LENS_UPLOAD_MB", 200)) * 2**20),
            int(os.environ.get("LENS_UPLOAD_FILES", 5000)),
            int(float(os.environ.get("LENS_UPLOAD_TTL", 3600))))


def uploads_root() -> Path:
    """The folder holding every session's upload area."""
    return cache_path("uploads")


def area_of(session_id: str) -> Path:
    """Where the upload area of one session is (nothing is created)."""
    return uploads_root() / (re.sub(r"[^A-Za-z0-9_-]", "_", session_id)[:80] or "anonymous")


def session_area(session_id: str) -> Path:
    """The upload area of one session (created, and marked as used now)."""
    area = area_of(session_id)
    area.mkdir(parents=True, exist_ok=True)
    touch(area)
    return area


def touch(area: Path) -> None:
    """Mark ``area`` as used now (it is swept ``LENS_UPLOAD_TTL`` seconds after its last use)."""
    (Path(area) / MARK).touch()


def _last_use(area: Path) -> float:
    try:
        return (area / MARK).stat().st_mtime
    except OSError:
        return area.stat().st_mtime


def sweep(now: float | None = None, *, keep: Iterable[Path] = ()) -> list[Path]:
    """Remove the upload areas unused for longer than ``LENS_UPLOAD_TTL``; returns those removed.

    Args:
        now: the time to measure from (default: now).
        keep: areas never removed (the calling session's own).
    """
    root = uploads_root()
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    ttl = limits()[2]
    kept = {Path(k).resolve() for k in keep}
    removed = []
    for area in root.iterdir():
        try:
            if area.is_dir() and not area.is_symlink() and area.resolve() not in kept \
                    and now - _last_use(area) > ttl:
                shutil.rmtree(area, ignore_errors=True)
                removed.append(area)
        except OSError:
            continue
    return removed


def remove_area(area: Path) -> None:
    """Remove one session's area and everything in it."""
    shutil.rmtree(area, ignore_errors=True)


def _member_problem(info: zipfile.ZipInfo, max_bytes: int) -> str | None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute name"
    if ".." in parts:
        return "a '..' in its name"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "a link"
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a plain file"
    if info.is_dir():
        return None
    if name.lower().endswith(ARCHIVES):
        return "an archive inside the archive"
    if info.file_size > max_bytes and Path(name).suffix.lower() in IMAGE_SUFFIXES:
        return f"{info.file_size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB image limit"
    return None


def _safe_name(name: str) -> str:
    """A file name with no folder part, fit for the area."""
    base = re.sub(r"[\x00-\x1f/\\:]", "_", Path(name.replace("\\", "/")).name).strip(" .")
    return base or "file"


def _put(tmp: Path, target: Path) -> Path:
    """Move the checked temporary folder ``tmp`` to ``target`` (replacing an earlier upload of that name)."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def unpack_zip(source: bytes | BinaryIO, area: Path, name: str) -> Path:
    """Unpack a zip into ``area/<stem of name>`` (replacing an earlier upload of that name); returns the folder.

    Raises:
        UploadError: not a zip, or a member or the whole breaks a limit (one line; nothing is left behind).
    """
    import io

    max_total, max_files, _ = limits()
    area = Path(area)
    label = _safe_name(name)
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UploadError(f"{label}: not a zip file") from None
    with archive:
        members = [m for m in archive.infolist() if not m.filename.startswith("__MACOSX/")]  # Finder's metadata
        if len(members) > max_files:
            raise UploadError(f"{label}: {len(members)} members, over the limit of {max_files}")
        declared = 0
        for info in members:
            problem = _member_problem(info, MAX_BYTES)
            if problem:
                raise UploadError(f"{label}: {info.filename!r} is {problem}; refused")
            declared += info.file_size
        if declared > max_total:
            raise UploadError(f"{label}: {declared / 2**20:.0f} MB unpacked, over the {max_total / 2**20:.0f} MB limit")
        area.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=area))
        try:
            _extract(archive, members, tmp, label, max_total)
            _check_images(tmp, label)
            target = _put(tmp, area / (Path(label).stem or "upload"))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    touch(area)
    return _content_root(target)


def _content_root(folder: Path) -> Path:
    """The folder itself, or its one sub-folder when it holds nothing else (a zip of a folder)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def _extract(archive: zipfile.ZipFile, members: list, tmp: Path, label: str, max_total: int) -> None:
    written = 0
    base = tmp.resolve()
    for info in members:
        dest = (tmp / info.filename).resolve()
        if not dest.is_relative_to(base):  # the name checks above should make this impossible
            raise UploadError(f"{label}: {info.filename!r} points outside the upload; refused")
        if info.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        image = dest.suffix.lower() in IMAGE_SUFFIXES
        size = 0
        try:
            with archive.open(info) as src, open(dest, "xb") as out:
                while chunk := src.read(CHUNK):
                    size += len(chunk)
                    written += len(chunk)
                    if written > max_total:
                        raise UploadError(f"{label}: more than {max_total / 2**20:.0f} MB unpacked, over the "
                                          "limit; refused")
                    if image and size > MAX_BYTES:
                        raise UploadError(f"{label}: {info.filename!r} is over the {MAX_BYTES / 2**20:.0f} MB "
                                          "image limit; refused")
                    out.write(chunk)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as e:
            raise UploadError(f"{label}: {info.filename!r} cannot be unpacked ({type(e).__name__})") from None


def _check_images(folder: Path, label: str) -> None:
    """Refuse an image over the pixel limit, read from its header (nothing is decoded)."""
    from PIL import Image

    max_pixels = MAX_PIXELS
    for path in folder.rglob("*"):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        try:
            with Image.open(path) as img:
                w, h = img.size
        except Exception:  # not an image after all: the page reports it when it reads the file
            continue
        if w * h > max_pixels:
            rel = path.relative_to(folder).as_posix()
            raise UploadError(f"{label}: {rel!r} is {w}x{h}, over the {max_pixels / 1e6:.0f} MP limit; refused")


def save_files(files: Iterable[tuple[str, bytes]], area: Path, name: str = "files") -> Path:
    """Save loose uploaded files (images and at most a CSV, which becomes ``labels.csv``) as one folder
    ``area/<name>``, replacing an earlier one; returns the folder.

    Raises:
        UploadError: an archive among them, too many files or bytes, an image over the limits.
    """
    max_total, max_files, _ = limits()
    files = list(files)
    if len(files) > max_files:
        raise UploadError(f"{len(files)} files, over the limit of {max_files}")
    total = sum(len(data) for _, data in files)
    if total > max_total:
        raise UploadError(f"{total / 2**20:.0f} MB, over the {max_total / 2**20:.0f} MB limit")
    csvs = [n for n, _ in files if n.lower().endswith(".csv")]
    if len(csvs) > 1:
        raise UploadError(f"{len(csvs)} CSV files: upload one labels CSV with the images")
    area = Path(area)
    area.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".upload-", dir=area))
    try:
        for raw, data in files:
            fname = _safe_name(raw)
            if fname.lower().endswith(ARCHIVES):
                raise UploadError(f"{fname}: an archive among loose files; upload it on its own")
            if fname.lower().endswith(".csv"):
                fname = "labels.csv"
            elif Path(fname).suffix.lower() in IMAGE_SUFFIXES and len(data) > MAX_BYTES:
                raise UploadError(f"{fname}: over the {MAX_BYTES / 2**20:.0f} MB image limit")
            (tmp / fname).write_bytes(data)
        _check_images(tmp, name)
        target = _put(tmp, area / _safe_name(name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    touch(area)
    return target
