"""Pictures stay served while their visitor's page reruns (ui/media.py), on Streamlit's own media manager."""
from __future__ import annotations

from unittest import mock

import streamlit.runtime.media_file_manager as mfm
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from ui.media import ORPHAN_GRACE_SECONDS, keep_orphans


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _as(session: str):
    return mock.patch.object(mfm, "_get_session_id", return_value=session)


def _served(manager: MediaFileManager, url: str) -> bool:
    return manager.read_file(url.rsplit("/", 1)[-1].split(".")[0]) is not None


def _race(manager: MediaFileManager) -> str:
    """Visitor A's page shows a picture; A's next run starts (its references dropped until the run draws the
    picture again); visitor B's run ends meanwhile. Returns the picture's URL."""
    with _as("A"):
        url = manager.add(b"\x89PNG a picture", "image/png", "A's map")
        manager.clear_session_refs()
    with _as("B"):
        manager.add(b"\x89PNG another", "image/png", "B's map")
        manager.remove_orphaned_files()
    return url


def test_without_the_grace_period_another_visitors_run_deletes_a_shown_picture():
    """Streamlit's own behaviour, the reason for ui/media.py: if this fails, Streamlit no longer has the race."""
    manager = MediaFileManager(MemoryMediaFileStorage("/media"))
    assert not _served(manager, _race(manager))


def test_the_grace_period_keeps_the_picture_until_its_rerun_draws_it_again():
    manager, clock = MediaFileManager(MemoryMediaFileStorage("/media")), Clock()
    assert keep_orphans(manager, clock=clock)
    url = _race(manager)
    assert _served(manager, url)
    clock.now += ORPHAN_GRACE_SECONDS - 1
    with _as("B"):
        manager.remove_orphaned_files()
    assert _served(manager, url)
    with _as("A"):  # A's run draws it again: the same URL, referenced again
        assert manager.add(b"\x89PNG a picture", "image/png", "A's map") == url
    clock.now += 10 * ORPHAN_GRACE_SECONDS
    with _as("B"):
        manager.remove_orphaned_files()
    assert _served(manager, url)


def test_an_unreferenced_picture_goes_after_the_grace_period():
    manager, clock = MediaFileManager(MemoryMediaFileStorage("/media")), Clock()
    keep_orphans(manager, seconds=5, clock=clock)
    with _as("A"):
        old = manager.add(b"\x89PNG preview 1", "image/png", "preview")
        new = manager.add(b"\x89PNG preview 2", "image/png", "preview")  # replaces it in the same place
        manager.remove_orphaned_files()  # first seen unreferenced now
        clock.now += 4.9
        manager.remove_orphaned_files()
        assert _served(manager, old)
        clock.now += 0.2
        manager.remove_orphaned_files()
    assert not _served(manager, old) and _served(manager, new)


def test_keep_orphans_is_idempotent_and_leaves_an_unknown_manager_alone():
    manager = MediaFileManager(MemoryMediaFileStorage("/media"))
    assert keep_orphans(manager) and keep_orphans(manager)
    patched = manager.remove_orphaned_files
    keep_orphans(manager)
    assert manager.remove_orphaned_files is patched

    class Other:
        def remove_orphaned_files(self):
            pass

    other = Other()
    before = other.remove_orphaned_files
    assert keep_orphans(other) is False and other.remove_orphaned_files == before


def test_the_dashboard_installs_the_grace_period(app, monkeypatch):
    import ui.media

    installed = []

    def spy(manager, *args, **kwargs):
        installed.append((type(manager), keep_orphans(manager, *args, **kwargs)))
        return installed[-1][1]

    monkeypatch.setattr(ui.media, "keep_orphans", spy)
    app.run()
    assert not app.exception
    assert installed and installed[0] == (MediaFileManager, True)
