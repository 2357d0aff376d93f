"""Which server folders a visitor may name: the data roots and their own upload area.

``LENS_HOSTED=1`` (read at call time) confines every folder a page takes to the roots of ``LENS_DATA_ROOT``
(one or more, separated by ``os.pathsep``; default the shipped sample photos and demo set) and the visitor's
upload area. Anything else is refused with :data:`NOT_AVAILABLE`, a line that names nothing of the server.
Without it, any local path is taken as given.
"""
from __future__ import annotations

import os
from pathlib import Path

from .files import ROOT, hosted
from .images import ASSETS

NOT_AVAILABLE = "That folder is not available here: choose one of the data folders or upload a zip."
UPLOADS = "uploads"  # how a visitor names their own upload area


class FolderError(ValueError):
    """A folder a visitor may not name; the message is one line and names no server file."""


def admin() -> bool:
    """Whether ``LENS_ADMIN`` is set: show the operator's panel (memory, jobs, heap) in the app."""
    return os.environ.get("LENS_ADMIN", "").strip().lower() in ("1", "true", "yes", "on")


def data_roots() -> list[Path]:
    """The resolved roots of ``LENS_DATA_ROOT``; default ``assets/samples`` and ``assets/demo``."""
    value = os.environ.get("LENS_DATA_ROOT", "").strip()
    parts = [p for p in value.split(os.pathsep) if p.strip()] if value else [ASSETS / "samples", ASSETS / "demo"]
    return [Path(p).expanduser().resolve() for p in parts]


def _within(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve_folder(text: str, *, hosted: bool, session_area: Path | None) -> Path:
    """The folder (or file, e.g. a CSV) that ``text`` names, if the visitor may name it.

    ``uploads/NAME`` is ``NAME`` in ``session_area``; a relative path is taken from the project root. Hosted, the
    resolved path (symlinks followed) must lie in a data root or in ``session_area``; otherwise any path goes.

    Raises:
        FolderError: hosted and outside every allowed root (the message is :data:`NOT_AVAILABLE`).
    """
    text = text.strip()
    parts = Path(text).parts
    if session_area is not None and parts and parts[0] == UPLOADS:
        path = Path(session_area).joinpath(*parts[1:])
    else:
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = ROOT / path if hosted else path
    if not hosted:
        return path
    roots = data_roots() + ([Path(session_area).resolve()] if session_area is not None else [])
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise FolderError(NOT_AVAILABLE) from None
    if not text or not _within(resolved, roots):
        raise FolderError(NOT_AVAILABLE)
    return resolved


def readable(path: str | os.PathLike, near: str | os.PathLike) -> bool:
    """Whether a file named inside a visitor's data (a CSV row, a mask) may be read: always when not hosted;
    hosted, only in a data root or in the upload area that holds ``near`` (the CSV itself)."""
    if not hosted():
        return True
    try:
        resolved = Path(path).resolve()
        near = Path(near).resolve()
    except (OSError, RuntimeError):
        return False
    from .uploads import uploads_root

    base = uploads_root().resolve()
    roots = data_roots()
    if near.is_relative_to(base) and len(near.relative_to(base).parts) > 1:
        roots.append(base / near.relative_to(base).parts[0])
    return _within(resolved, roots)


def shown(path: str | os.PathLike, session_area: Path | None = None) -> str:
    """How to show ``path`` to a visitor: ``uploads/...`` in their area, relative to the project where it is
    inside it, else as given."""
    p = Path(path)
    for base, prefix in ((session_area, UPLOADS), (ROOT, "")):
        if base is None:
            continue
        try:
            rel = p.resolve().relative_to(Path(base).resolve())
        except (OSError, ValueError):
            continue
        return (Path(prefix) / rel).as_posix() if prefix else rel.as_posix()
    return str(p)


def choices(session_area: Path | None = None) -> list[str]:
    """The folders a hosted visitor can name, as shown to them: the data roots and their uploads."""
    names = [shown(r) for r in data_roots()]
    if session_area is not None and Path(session_area).is_dir():
        names += [f"{UPLOADS}/{p.name}" for p in sorted(Path(session_area).iterdir())
                  if p.is_dir() and not p.name.startswith(".")]
    return names
