"""Uploads unpacked safely into a visitor's area, swept when stale; server folders confined in hosted mode."""
from __future__ import annotations

import io
import os
import stat
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core import dataroots, uploads
from core.dataroots import NOT_AVAILABLE, FolderError, resolve_folder
from core.uploads import UploadError, unpack_zip


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def png(size=(8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def make_zip(members: dict, **kwargs) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", **kwargs) as z:
        for name, data in members.items():
            if isinstance(data, zipfile.ZipInfo):
                z.writestr(data, b"target")
            else:
                z.writestr(name, data)
    return out.getvalue()


def files_outside(cache: Path, area: Path) -> list[Path]:
    """Every file under the cache root's parent that is not inside ``area`` (the test's own cache excluded)."""
    return [p for p in cache.parent.rglob("*") if p.is_file() and not p.is_relative_to(area)]


def test_a_clean_zip_unpacks_into_the_area(cache):
    area = uploads.session_area("s1")
    folder = unpack_zip(make_zip({"set/cat/a.png": png(), "set/dog/b.png": png()}), area, "mine.zip")
    assert folder == area / "mine" / "set" and (folder / "cat" / "a.png").is_file()  # the zip's one folder
    assert not [p for p in area.iterdir() if p.name.startswith(".unpack")]


def _link() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("members, reason", [
    ({"../evil.png": b"x"}, "'..'"),
    ({"ok/../../evil.png": b"x"}, "'..'"),
    ({"/tmp/evil.png": b"x"}, "absolute"),
    ({"link.png": _link()}, "a link"),
    ({"inner.zip": b"PK\x03\x04"}, "archive inside"),
    ({"inner.tar.gz": b"x"}, "archive inside"),
])
def test_a_bad_member_is_refused_with_one_line_and_nothing_written(cache, members, reason):
    area = uploads.session_area("s1")
    with pytest.raises(UploadError) as e:
        unpack_zip(make_zip(members), area, "bad.zip")
    assert reason in str(e.value) and "\n" not in str(e.value)
    assert files_outside(cache, area) == []
    assert [p.name for p in area.iterdir()] == [uploads.MARK]  # nothing of the zip was written at all


def test_too_many_members(cache, monkeypatch):
    monkeypatch.setenv("LENS_UPLOAD_FILES", "3")
    area = uploads.session_area("s1")
    with pytest.raises(UploadError, match="4 members, over the limit of 3"):
        unpack_zip(make_zip({f"{i}.png": png() for i in range(4)}), area, "many.zip")
    assert [p.name for p in area.iterdir()] == [uploads.MARK]


def test_zip_bomb_small_compressed_big_unpacked(cache, monkeypatch):
    monkeypatch.setenv("LENS_UPLOAD_MB", "1")
    area = uploads.session_area("s1")
    data = make_zip({"big.bin": b"\0" * (8 * 2**20)}, compression=zipfile.ZIP_DEFLATED)
    assert len(data) < 100_000
    with pytest.raises(UploadError, match="over the 1 MB limit"):
        unpack_zip(data, area, "bomb.zip")
    assert [p.name for p in area.iterdir()] == [uploads.MARK]


def test_lying_header_is_caught_while_extracting(cache, monkeypatch):
    """A member whose header declares a small size but holds more: the bytes written are counted."""
    monkeypatch.setenv("LENS_UPLOAD_MB", "1")
    area = uploads.session_area("s1")
    data = bytearray(make_zip({"big.bin": b"\0" * (4 * 2**20)}, compression=zipfile.ZIP_DEFLATED))
    # rewrite the declared unpacked size (local header at 22, central directory entry at +24) to 10 bytes
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    data[local + 22:local + 26] = (10).to_bytes(4, "little")
    data[central + 24:central + 28] = (10).to_bytes(4, "little")
    with pytest.raises(UploadError) as e:
        unpack_zip(bytes(data), area, "liar.zip")
    assert "\n" not in str(e.value)
    assert [p.name for p in area.iterdir()] == [uploads.MARK]


def test_image_over_the_pixel_limit_is_refused(cache, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_PIXELS", 50)
    area = uploads.session_area("s1")
    with pytest.raises(UploadError, match="over the 0 MP limit"):
        unpack_zip(make_zip({"a.png": png((10, 10))}), area, "px.zip")
    assert [p.name for p in area.iterdir()] == [uploads.MARK]


def test_not_a_zip(cache):
    with pytest.raises(UploadError, match="not a zip file"):
        unpack_zip(b"hello", uploads.session_area("s1"), "x.zip")


def test_loose_files_become_a_folder_with_labels_csv(cache):
    area = uploads.session_area("s1")
    folder = uploads.save_files([("a.png", png()), ("../b.png", png()), ("my labels.csv", b"a.png,cat\n")], area)
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png", "labels.csv"]
    with pytest.raises(UploadError, match="archive"):
        uploads.save_files([("x.zip", b"PK")], area)


def test_sweep_removes_expired_areas_only(cache, monkeypatch):
    monkeypatch.setenv("LENS_UPLOAD_TTL", "60")
    old, fresh = uploads.session_area("old"), uploads.session_area("fresh")
    unpack_zip(make_zip({"a.png": png()}), old, "a.zip")
    past = time.time() - 120
    os.utime(old / uploads.MARK, (past, past))
    assert uploads.sweep() == [old]
    assert not old.exists() and fresh.is_dir()
    # an area kept by its own session survives even when stale
    os.utime(fresh / uploads.MARK, (past, past))
    assert uploads.sweep(keep=[fresh]) == [] and fresh.is_dir()


# ------------------------------------------------------------------------------------------ confinement

@pytest.fixture
def root(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "set").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (data / "out").symlink_to(tmp_path / "secret")
    monkeypatch.setenv("LENS_DATA_ROOT", str(data))
    return data


@pytest.mark.parametrize("text", ["/etc", "../", "..", "out", "data/out", "/", "assets/samples",
                                  "uploads/../../..", "~"])
def test_paths_outside_the_roots_are_refused_with_the_generic_line(root, tmp_path, text):
    if text in ("out", "data/out"):
        text = str(root / "out")  # a symlink from inside the root to outside it
    with pytest.raises(FolderError) as e:
        resolve_folder(text, hosted=True, session_area=tmp_path / "area")
    assert str(e.value) == NOT_AVAILABLE


def test_paths_in_a_root_or_the_upload_area_are_accepted(root, tmp_path):
    assert resolve_folder(str(root / "set"), hosted=True, session_area=None) == (root / "set").resolve()
    area = tmp_path / "area"
    (area / "mine").mkdir(parents=True)
    assert resolve_folder("uploads/mine", hosted=True, session_area=area) == (area / "mine").resolve()


def test_default_roots_are_the_shipped_photos_and_demo(monkeypatch):
    monkeypatch.delenv("LENS_DATA_ROOT", raising=False)
    assert resolve_folder("assets/samples", hosted=True, session_area=None).name == "samples"
    assert resolve_folder("assets/demo/coarse.csv", hosted=True, session_area=None).name == "coarse.csv"
    with pytest.raises(FolderError):
        resolve_folder("assets", hosted=True, session_area=None)


def test_not_hosted_any_path_goes(root):
    assert resolve_folder("/etc", hosted=False, session_area=None) == Path("/etc")


def test_csv_rows_are_confined_when_hosted(cache, monkeypatch, root):
    area = uploads.session_area("s1")
    csv = area / "set" / "labels.csv"
    csv.parent.mkdir()
    monkeypatch.setenv("LENS_HOSTED", "1")
    assert dataroots.readable(area / "set" / "a.png", csv)
    assert dataroots.readable(root / "set" / "a.png", csv)
    assert not dataroots.readable("/etc/hosts", csv)
    assert not dataroots.readable(uploads.area_of("other") / "x.png", csv)
    monkeypatch.delenv("LENS_HOSTED")
    assert dataroots.readable("/etc/hosts", csv)


def _names(paths, folder) -> list[str]:
    return [Path(p).relative_to(folder).as_posix() for p in paths]


def test_hosted_listing_follows_no_link_out_of_the_folder(tmp_path, monkeypatch):
    from core.images import list_images

    folder, outside = tmp_path / "data", tmp_path / "outside"
    (folder / "sub").mkdir(parents=True)
    outside.mkdir()
    for path in (folder / "a.png", folder / "sub" / "b.png", outside / "secret.png"):
        path.write_bytes(png())
    (folder / "link.png").symlink_to(outside / "secret.png")
    (folder / "sub" / "inner.png").symlink_to(folder / "a.png")  # a link that stays inside is followed
    (folder / "out").symlink_to(outside, target_is_directory=True)
    monkeypatch.delenv("LENS_HOSTED", raising=False)
    assert _names(list_images(folder), folder) == ["a.png", "link.png", "sub/b.png", "sub/inner.png"]
    assert _names(list_images(folder / "out", within=folder), folder) == ["out/secret.png"]
    monkeypatch.setenv("LENS_HOSTED", "1")
    assert _names(list_images(folder), folder) == ["a.png", "sub/b.png", "sub/inner.png"]
    assert list_images(folder / "out", within=folder) == []  # a linked sub-folder, listed on its own


def test_hosted_labelled_folder_reads_nothing_through_a_link_out(tmp_path, monkeypatch):
    from core.errors.dataset import Skipped, read_labelled

    root, outside = tmp_path / "set", tmp_path / "outside"
    (root / "cat").mkdir(parents=True)
    outside.mkdir()
    (root / "cat" / "a.png").write_bytes(png())
    (outside / "secret.png").write_bytes(png())
    (root / "cat" / "link.png").symlink_to(outside / "secret.png")
    (root / "dog").symlink_to(outside, target_is_directory=True)
    monkeypatch.delenv("LENS_HOSTED", raising=False)
    assert [i.name for i in read_labelled(root, ["cat", "dog"]).items] == ["cat/a.png", "cat/link.png",
                                                                           "dog/secret.png"]
    monkeypatch.setenv("LENS_HOSTED", "1")
    read = read_labelled(root, ["cat", "dog"])
    assert [i.name for i in read.items] == ["cat/a.png"]
    assert read.skipped == (Skipped("dog/", "a link out of the folder: not read"),)


def test_hosted_imagenet_val_csv_names_no_file_outside(cache, root, tmp_path, monkeypatch):
    """ImageNet's validation CSV names images without their extension: a name that climbs out of the visitor's
    upload is not looked up (the file beside it is)."""
    from core.errors.dataset import read_labelled

    area = uploads.session_area("s1")
    (area / "v" / "val").mkdir(parents=True)
    (area / "v" / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(png())
    (tmp_path / "secret.JPEG").write_bytes(png())
    climb = os.path.relpath(tmp_path / "secret", area / "v" / "val")
    (area / "v" / "labels.csv").write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000001,0 1 2 3 4\n"
                                           f"{climb},1 1 2 3 4\n")
    monkeypatch.delenv("LENS_HOSTED", raising=False)
    assert len(read_labelled(area / "v", ["a", "b"]).items) == 2
    monkeypatch.setenv("LENS_HOSTED", "1")
    read = read_labelled(area / "v", ["a", "b"])
    assert [i.name for i in read.items] == ["ILSVRC2012_val_00000001"]
    assert [s.item for s in read.skipped] == [climb] and read.skipped[0].reason.startswith("no such file")
