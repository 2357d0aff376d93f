"""Pictures that stay served while their visitor's page reruns.

Streamlit drops a session's picture references when its next run starts and re-adds each picture as the run
draws it again (same content, same URL). Any session's run that ends in between deletes every picture no
session references at that moment, so with two visitors, one visitor's run deletes the pictures the other's
page still shows. A browser that fetches such a picture in that window (a slow fetch, an element drawn anew)
gets a 404, and the rerun's same URL never makes it fetch again: a broken picture for good.

:func:`keep_orphans` makes the server's media manager delete a picture only once it has been unreferenced for
``ORPHAN_GRACE_SECONDS``: longer than a rerun takes to draw its pictures again, short enough that replaced
pictures (a refining preview) do not pile up.
"""
from __future__ import annotations

import time
from typing import Callable

ORPHAN_GRACE_SECONDS = 30.0
_NEEDED = ("_lock", "_get_inactive_file_ids", "_delete_file", "_remove_orphaned_deferred_callables")


def keep_orphans(manager, seconds: float = ORPHAN_GRACE_SECONDS, clock: Callable[[], float] = time.monotonic) -> bool:
    """Give ``manager`` (Streamlit's ``MediaFileManager``) a grace period before it deletes an unreferenced
    picture. Idempotent. Returns False, leaving the manager as it is, when this Streamlit's manager lacks the
    parts the grace period needs."""
    if getattr(manager, "_lens_orphan_grace", None) is not None:
        return True
    if not all(hasattr(manager, name) for name in _NEEDED):
        return False
    since: dict[str, float] = {}  # file id -> when it was first seen unreferenced

    def remove_orphaned_files() -> None:
        with manager._lock:
            now = clock()
            orphans = manager._get_inactive_file_ids()
            for file_id in [f for f in since if f not in orphans]:  # referenced again, or already gone
                del since[file_id]
            for file_id in orphans:
                if now - since.setdefault(file_id, now) >= seconds:
                    manager._delete_file(file_id)
                    del since[file_id]
            manager._remove_orphaned_deferred_callables()

    manager.remove_orphaned_files = remove_orphaned_files
    manager._lens_orphan_grace = seconds
    return True


def keep_served_pictures() -> bool:
    """Install :func:`keep_orphans` on the running server's media manager (False outside a server)."""
    try:
        from streamlit import runtime
    except ImportError:  # pragma: no cover
        return False
    if not runtime.exists():
        return False
    return keep_orphans(runtime.get_instance().media_file_mgr)
