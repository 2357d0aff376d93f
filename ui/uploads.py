"""The visitor's upload area and the folder boxes that may name it (core.uploads, core.dataroots)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import NoReturn

import streamlit as st

from core import dataroots
from core import uploads as core_uploads
from core.images import MAX_BYTES

SMALL_UPLOAD_MB = max(1, -(-MAX_BYTES // 2**20))  # one image, mask, weights or names file (server: the zip limit)
SWEEP_EVERY = 60.0  # seconds between sweeps of expired areas, whichever session triggers them
_last_sweep = [0.0]


def session_id() -> str:
    """This browser session's id (Streamlit's), or a random one kept in session state."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is not None and getattr(ctx, "session_id", None):
        return ctx.session_id
    import uuid

    return st.session_state.setdefault("lens_upload_id", uuid.uuid4().hex)


def area() -> Path:
    """This session's upload area, marked as used now; expired areas of other sessions are swept first."""
    mine = core_uploads.session_area(session_id())
    _sweep(mine)
    return mine


def visit() -> None:
    """On every page visit: mark this session's area (if any) as used, and sweep expired areas at most once a
    minute. A closed tab's area goes ``LENS_UPLOAD_TTL`` after its last visit."""
    mine = existing_area()
    if mine is not None:
        core_uploads.touch(mine)
    _sweep(mine)


def _sweep(mine: Path | None) -> None:
    now = time.time()
    if now - _last_sweep[0] > SWEEP_EVERY:
        _last_sweep[0] = now
        core_uploads.sweep(keep=[mine] if mine is not None else [])


def existing_area() -> Path | None:
    """This session's upload area if it has one (nothing is created)."""
    path = core_uploads.area_of(session_id())
    return path if path.is_dir() else None


def folder_box(label: str, *, key: str, value: str = "", **kwargs) -> Path | None:
    """A folder text box confined by :func:`core.dataroots.resolve_folder`: the folder, or None (empty, or
    refused with the generic line shown)."""
    hosted = dataroots.hosted()
    if hosted:
        names = ", ".join(dataroots.choices(existing_area()))
        kwargs["help"] = f"The data folders here: {names}. Your uploads are under uploads/."
        if value and Path(value).is_absolute():
            value = dataroots.shown(value)
    if key not in st.session_state:  # set here, not through value=, so an upload can fill the box
        st.session_state[key] = value
    text = st.text_input(label, key=key, **kwargs).strip()
    if not text:
        return None
    try:
        return dataroots.resolve_folder(text, hosted=hosted, session_area=existing_area())
    except dataroots.FolderError as e:
        st.error(str(e))
        return None


LABELLED_SET_HELP = ("A .zip of root/<class>/<image> folders, a .zip of images with a labels.csv (file,label), or "
                     "several images with one CSV. They stay on this server only while you use them.")


def labelled_set_box(*, key: str, upload_key: str, value: str, placeholder: str, help: str | None = None
                     ) -> Path | None:
    """The labelled-set input of the dataset pages: the confined folder box (:func:`folder_box`, session key
    ``key``) beside the labelled-set uploader (:func:`set_uploader`) that fills it; the folder, or None."""
    box, drop = st.columns([3, 2])
    with drop:
        set_uploader("Or upload a labelled set", key=upload_key, target=key, help=LABELLED_SET_HELP)
    with box:
        return folder_box("Labelled folder", value=value, key=key, placeholder=placeholder, help=help)


def zip_uploader(label: str, *, key: str, target: str | None = None, help: str | None = None) -> Path | None:
    """A ``.zip`` uploader that unpacks into this session's area; the folder, or None (nothing, or refused
    with the one-line reason shown). A new upload writes its name (``uploads/...``) into the folder box
    ``target``, which must come later in the run."""
    file = st.file_uploader(label, type=["zip"], key=_widget_key(key), help=help, max_upload_size=_max_mb())
    if file is None:
        return _note(key)
    return _unpacked(key, file.name, lambda: core_uploads.unpack_zip(file.getvalue(), area(), file.name), target)


def set_uploader(label: str, *, key: str, target: str | None = None, help: str | None = None) -> Path | None:
    """An uploader of a labelled set: one ``.zip``, or several images plus a CSV; the folder, or None. A new
    upload writes its name (``uploads/...``) into the folder box ``target``, which must come later in the run."""
    from core.images import IMAGE_SUFFIXES

    files = st.file_uploader(label, type=["zip", "csv", *[s[1:] for s in IMAGE_SUFFIXES]], key=_widget_key(key),
                             help=help, accept_multiple_files=True, max_upload_size=_max_mb())
    if not files:
        return _note(key)
    ident = files[0].name if len(files) == 1 else f"{len(files)} files"
    zips = [f for f in files if f.name.lower().endswith(".zip")]
    if zips and len(files) > 1:
        st.error("Upload one .zip on its own, or images with a CSV.")
        return None
    if zips:
        return _unpacked(key, ident, lambda: core_uploads.unpack_zip(zips[0].getvalue(), area(), zips[0].name),
                         target)
    return _unpacked(key, ident, lambda: core_uploads.save_files([(f.name, f.getvalue()) for f in files], area(),
                                                                 "files"), target)


def _widget_key(key: str) -> str:
    generation = st.session_state.get(f"{key}_generation", 0)
    return key if not generation else f"{key}_{generation}"


def _note(key: str) -> Path | None:
    """After an upload was unpacked: say where it went; the folder, while it exists."""
    if st.session_state.get(f"{key}_error"):
        st.error(st.session_state[f"{key}_error"])
        return None
    done = st.session_state.get(f"{key}_done")
    if done and Path(done[1]).is_dir():
        st.caption(f"{done[0]} unpacked as {dataroots.shown(done[1], existing_area())}.")
        return Path(done[1])
    return None


def _unpacked(key: str, name: str, unpack, target: str | None) -> NoReturn:
    """Unpack an upload, give the uploader a fresh key and run the page again at once: Streamlit keeps an upload's
    bytes in memory while its widget holds it, and until the next run the browser shows the old widget still
    holding the file, where a second upload is lost. The unpacked folder, or the reason it was refused, is all the
    page needs (:func:`_note` shows it)."""
    st.session_state[f"{key}_generation"] = st.session_state.get(f"{key}_generation", 0) + 1
    try:
        folder = unpack()
    except core_uploads.UploadError as e:
        st.session_state[f"{key}_error"] = str(e)  # shown until the next upload
    else:
        st.session_state[f"{key}_error"] = None
        st.session_state[f"{key}_done"] = (name, str(folder))
        if target:
            st.session_state[target] = dataroots.shown(folder, existing_area())
    st.rerun()


def redact(message: str, path: Path, text: str) -> str:
    """``message`` with the server's spelling of ``path`` replaced by what the visitor typed (``text``)."""
    return message.replace(str(path), text.strip()) if dataroots.hosted() else message


def _max_mb() -> int:
    """The uploader's size limit: the unpacked limit (a zip is never bigger than what it holds, give or take)."""
    return max(1, core_uploads.limits()[0] // 2**20)
