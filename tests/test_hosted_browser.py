"""Real browser, hosted mode (``LENS_HOSTED=1``): what a visitor of a shared instance can and cannot do.

On Error analysis a visitor's zip of an ImageFolder gives the confusion matrix and lists its planted mistake;
every path box refuses the server's folders (``/etc``, ``../``, a symlink out of a data root, an absolute path
outside the roots) with one generic line and shows nothing of them; hostile zips (zip slip, zip bomb) are refused
with one line and write nothing outside the visitor's upload area; Dataset examples and Net2Vec work on uploads.

One server for the module (bench/load.py's, on loopback) with its own temporary cache and data root; Debian's
Chromium through Playwright (the ``browser`` fixture of tests/test_browser.py: skipped without them unless
LENS_REQUIRE_BROWSER=1).
"""
from __future__ import annotations

import io
import os
import re
import tempfile
import urllib.parse
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.dataroots import NOT_AVAILABLE
from tests import test_browser
from tests.conftest import ROOT, SAMPLES
from tests.test_browser import Requests, _idle, _no_exception_box

browser = test_browser.browser  # the module's fixture: Debian's Chromium through Playwright

WAIT = 300_000  # ms: a fresh server loads its model and pages on two busy cores
UPLOAD_MB = 8  # LENS_UPLOAD_MB of the test server: the bomb unpacks far beyond it
SIDEBAR_MODEL = "The sidebar's model"
# entries of /etc on a Debian-like server; the test checks those that exist here
ETC_NAMES = ("passwd", "hostname", "fstab", "X11", "PackageKit", "bash.bashrc", "debian_version", "ld.so.conf",
             "shadow", "sudoers", "resolv.conf", "os-release")


@dataclass(frozen=True)
class Site:
    """The running hosted server and the folders around it."""

    url: str
    base: Path      # holds the cache, the data root and the outside folder
    cache: Path     # LENS_CACHE_DIR; the visitors' upload areas are in cache/uploads
    data: Path      # a data root (besides the shipped samples and demo)
    outside: Path   # a server folder outside every root
    secret: str     # in the name of every entry of ``outside``: must never reach a page

    @property
    def refused(self) -> dict[str, str]:
        """What a visitor types -> why it must be refused."""
        return {"/etc": "the server's /etc", "../": "the project's parent folder",
                str(self.data / "escape"): "a symlink in the data root to a folder outside it",
                str(self.outside): "an absolute path outside the roots"}


@pytest.fixture(scope="module")
def site(browser, tmp_path_factory):
    from bench.load import Server

    base = tmp_path_factory.mktemp("hosted")
    secret = uuid.uuid4().hex[:12]
    outside = base / "outside"  # its own name is typed in a path box (and kept in the box): no secret in it
    (outside / f"folder-{secret}").mkdir(parents=True)
    (outside / f"private-{secret}.txt").write_text("server file")
    (outside / f"cats-{secret}").mkdir()
    (outside / f"cats-{secret}" / f"kitten-{secret}.jpg").write_bytes((SAMPLES / "chelsea.jpg").read_bytes())
    (outside / f"cats-{secret}" / f"notes-{secret}.txt").write_text("server file")
    data = base / "data"
    (data / "few").mkdir(parents=True)
    for name in ("coffee.jpg", "flower.jpg"):
        (data / "few" / name).write_bytes((SAMPLES / name).read_bytes())
    (data / "escape").symlink_to(outside, target_is_directory=True)
    # a labelled set in the data root whose class folder and one file are links out of it
    (data / "set" / "espresso").mkdir(parents=True)
    (data / "set" / "espresso" / "coffee.jpg").write_bytes((SAMPLES / "coffee.jpg").read_bytes())
    (data / "set" / "espresso" / "linked.jpg").symlink_to(outside / f"cats-{secret}" / f"kitten-{secret}.jpg")
    (data / "set" / "285").symlink_to(outside / f"cats-{secret}", target_is_directory=True)
    cache = base / "cache"
    env = {"LENS_HOSTED": "1", "LENS_OFFLINE": "1", "LENS_ADMIN": "", "LENS_UPLOAD_MB": str(UPLOAD_MB),
           "LENS_DATA_ROOT": os.pathsep.join(map(str, (data, SAMPLES, ROOT / "assets" / "demo")))}
    server = Server(env, cache)
    try:
        yield Site(server.url, base, cache, data, outside, secret)
    finally:
        server.close()


@contextmanager
def visitor(browser, site: Site, path: str):
    """A fresh browser session (a new visitor) on ``path``; no request may leave the app or fail."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    requests = Requests(context, site.url)
    page = context.new_page()
    try:
        page.goto(site.url + path, wait_until="domcontentloaded")
        yield page
    finally:
        context.close()
    requests.check()


def link(path: str, **params: str) -> str:
    return f"{path}?{urllib.parse.urlencode({'model': 'embedded', **params})}"


def alert(page, text: str):
    """The alert box containing ``text`` (waited for)."""
    box = page.locator("[data-testid='stAlert']").filter(has_text=text)
    box.first.wait_for(timeout=WAIT)
    return box.first


def upload(page, label: str, name: str, data: bytes) -> None:
    """Put ``data`` as the file ``name`` into the uploader labelled ``label``."""
    uploader = page.locator("[data-testid='stFileUploader']").filter(has_text=label)
    uploader.locator("input[type='file']").set_input_files(files=[{"name": name, "mimeType": "application/zip",
                                                                   "buffer": data}])


def metric(page, label: str) -> str:
    """The value shown by the metric ``label``."""
    return page.locator("[data-testid='stMetric']").filter(has_text=label).locator(
        "[data-testid='stMetricValue']").inner_text().strip()


def type_path(page, label: str, text: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(text)
    box.press("Enter")


def server_names(site: Site) -> list[str]:
    """Entry names of the server's folders that must not reach a page: the outside folder's (all carry the
    secret) and those of /etc that exist here."""
    return [site.secret] + [n for n in ETC_NAMES if os.path.lexists(f"/etc/{n}")]


def assert_shows_nothing_of_the_server(page, site: Site) -> None:
    """No server entry name in the page's text, nor the outside folder's names anywhere in its HTML (hidden
    elements and attributes included), nor the server's cache folder (once the page's run is over)."""
    _idle(page, WAIT)
    body, html = page.inner_text("body"), page.content()
    for name in server_names(site):
        assert name not in body, name
    assert site.secret not in html
    assert str(site.cache) not in html


def image_folder_zip(embedded) -> tuple[bytes, str, str]:
    """A zip of an ImageFolder tree ``mine/<class>/<image>`` of sample photos, each filed under the class the
    model predicts for it, and one planted mistake: an image filed under another of the classes.

    Returns (zip bytes, the planted image's path in the tree, the name of the class it is filed under)."""
    from core.images import load_image, preprocess
    from core.model.predict import predict

    rows = [line.split("\t") for line in (SAMPLES / "index.tsv").read_text().splitlines()[1:]]
    chosen: dict[str, Path] = {}  # class folder -> image
    labels: dict[str, str] = {}  # class folder -> class name
    for name, *_, expected in rows:
        if not expected.strip() or len(chosen) == 3:
            continue
        inp = preprocess(load_image(SAMPLES / name), embedded.card.data_config)
        first, second = predict(embedded, inp.batch, k=2)[0]
        clear = first.prob - second.prob > 0.2 and re.search(expected, first.label, re.IGNORECASE)
        # the class named as a visitor would, unless the name is ambiguous or no folder name
        folder = first.label if embedded.labels.count(first.label) == 1 and "/" not in first.label \
            else str(first.index)
        if clear and folder not in chosen:
            chosen[folder], labels[folder] = SAMPLES / name, first.label
    assert len(chosen) == 3, f"the model predicts too few sample photos clearly: {chosen}"
    (a, image_a), (b, _), (c, image_c) = chosen.items()
    planted = f"{b}/planted-{image_a.name}"  # an image of class a filed under b
    # class b holds two right answers (the same photo twice) beside the mistake: the separating channels of its
    # cell need three images
    members = {f"{a}/{image_a.name}": image_a, f"{b}/{chosen[b].name}": chosen[b],
               f"{b}/again-{chosen[b].name}": chosen[b], f"{c}/{image_c.name}": image_c, planted: image_a}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for member, path in members.items():
            z.writestr(f"mine/{member}", path.read_bytes())
    return out.getvalue(), planted, labels[b]


def test_uploaded_imagefolder_gives_the_matrix_and_the_planted_mistake(site, browser, embedded):
    from playwright.sync_api import expect

    data, planted, planted_label = image_folder_zip(embedded)
    with visitor(browser, site, link("/error_analysis", source=SIDEBAR_MODEL)) as page:
        page.get_by_text("Name a labelled folder").wait_for(timeout=WAIT)
        upload(page, "Or upload a labelled set", "mine.zip", data)
        page.get_by_text("Most confident mistakes").wait_for(timeout=WAIT)
        # the box names the upload as the visitor does
        expect(page.get_by_label("Labelled folder", exact=True)).to_have_value(re.compile("^uploads/.*mine$"),
                                                                               timeout=WAIT)
        assert (metric(page, "Images"), metric(page, "Mistakes")) == ("5", "1")
        cells = page.locator("[data-testid='stVegaLiteChart'] path[role='graphics-symbol']")
        cells.first.wait_for(timeout=WAIT)
        assert cells.count() == 9  # 3 x 3 classes
        # the gallery right under the heading "Most confident mistakes" names the planted image and its class
        mistakes = page.locator("xpath=//div[@data-testid='stElementContainer']"
                                "[.//*[contains(text(), 'Most confident mistakes')]]/following-sibling::*[1]")
        captions = mistakes.locator("[data-testid='stCaptionContainer']").all_inner_texts()
        assert len(captions) == 1 and captions[0].startswith(f"{planted}:"), captions
        assert f"(true {planted_label} " in captions[0], captions
        _no_exception_box(page)
        assert_shows_nothing_of_the_server(page, site)
        # the planted mistake's cell (the only one off the diagonal) down to the channels: the offer of an index
        # names the upload as the visitor does
        page.get_by_role("button", name="Find the channels that separate these mistakes").click()
        page.get_by_text(re.compile(r"^No activation index of uploads/\S*mine covers layer")).wait_for(timeout=WAIT)
        _no_exception_box(page)
        assert_shows_nothing_of_the_server(page, site)


def path_boxes(site: Site) -> dict[str, tuple[str, str, str, str | None]]:
    """Every page with a path box: (link, a text once the page is ready, the box's label, the expander holding
    it). Dataset examples and Net2Vec open on a small data folder (the sample photos' would start work)."""
    few = str(site.data / "few")
    return {
        "error analysis": (link("/error_analysis", source=SIDEBAR_MODEL), "Name a labelled folder",
                           "Labelled folder", None),
        "audit": (link("/audit", source=SIDEBAR_MODEL), "Name a labelled folder", "Labelled folder", None),
        "dataset examples": (link("/activation_index", folder=few), "No index yet for this model",
                             "Image folder (searched recursively)", "Index: folder, layers, build"),
        "net2vec": (link("/net2vec", folder=few), "Press Learn concepts to compute", "Image folder", None),
    }


@pytest.mark.parametrize("name", ["error analysis", "audit", "dataset examples", "net2vec"])
def test_server_paths_are_refused_and_nothing_of_them_shown(site, browser, name):
    path, ready, label, expander = path_boxes(site)[name]
    with visitor(browser, site, path) as page:
        page.get_by_text(ready).first.wait_for(timeout=WAIT)
        if expander:
            page.get_by_text(expander).click()
        refusal = page.locator("[data-testid='stAlert']").filter(has_text=NOT_AVAILABLE)
        texts = {}
        for text, what in site.refused.items():
            type_path(page, label, "")  # an empty box first: then the refusal that follows is this path's
            refusal.first.wait_for(state="detached", timeout=WAIT)
            type_path(page, label, text)
            refusal.first.wait_for(timeout=WAIT)
            _idle(page, WAIT)  # then the page is whole
            assert refusal.count() == 1 and refusal.inner_text().strip() == NOT_AVAILABLE, (what, refusal.inner_text())
            _no_exception_box(page)
            assert_shows_nothing_of_the_server(page, site)
            texts[text] = page.locator("[data-testid='stMain']").inner_text()
        # whatever was named, the page reads the same: nothing on it depends on what the server holds there
        assert len(set(texts.values())) == 1, texts


def test_links_out_of_a_data_folder_are_not_followed(site, browser):
    """A folder inside a data root is readable, but a class folder or an image in it that links out of the root
    is not read, and nothing of its target is shown."""
    with visitor(browser, site, link("/error_analysis", source=SIDEBAR_MODEL)) as page:
        page.get_by_text("Name a labelled folder").wait_for(timeout=WAIT)
        type_path(page, "Labelled folder", str(site.data / "set"))
        page.get_by_text("Most confident mistakes").wait_for(timeout=WAIT)
        page.get_by_text("1 items skipped").click()  # the linked class folder, by its own name; its table drawn
        assert metric(page, "Images") == "1"  # coffee.jpg alone: neither the linked class folder nor linked.jpg
        _no_exception_box(page)
        assert_shows_nothing_of_the_server(page, site)


def zip_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED)
    return out.getvalue()


def bomb() -> bytes:
    """A zip whose one member unpacks to 32 times LENS_UPLOAD_MB of zeros (a few hundred kB on disk)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("bomb/zeros.bin", "w") as f:
            block = bytes(2**20)
            for _ in range(32 * UPLOAD_MB):
                f.write(block)
    return out.getvalue()


def all_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if not p.is_dir()}


def test_hostile_zips_are_refused_and_write_nothing_outside_the_upload_area(site, browser):
    target = site.base / "abs-target" / "evil.txt"  # where the absolute member would land
    payload = b"EVIL " + site.secret.encode()
    hostile = {
        "slip.zip": (zip_of({"slip/ok.jpg": (SAMPLES / "coffee.jpg").read_bytes(), "../evil.txt": payload}),
                     "slip.zip: '../evil.txt' is a '..' in its name; refused"),
        "absolute.zip": (zip_of({str(target): payload}), f"absolute.zip: '{target}' is an absolute name; refused"),
        "bomb.zip": (bomb(), f"bomb.zip: {32 * UPLOAD_MB} MB unpacked, over the {UPLOAD_MB} MB limit"),
    }
    assert zipfile.ZipFile(io.BytesIO(hostile["absolute.zip"][0])).namelist() == [str(target)]
    assert len(hostile["bomb.zip"][0]) < 2**20  # small on disk, huge unpacked
    uploads = site.cache / "uploads"
    before = {p for p in all_files(site.base) if not p.is_relative_to(uploads)}
    with visitor(browser, site, link("/error_analysis", source=SIDEBAR_MODEL)) as page:
        page.get_by_text("Name a labelled folder").wait_for(timeout=WAIT)
        for name, (data, reason) in hostile.items():
            upload(page, "Or upload a labelled set", name, data)
            shown = alert(page, f"{name}:").inner_text().strip()
            assert shown == reason and "\n" not in shown, (name, shown)
            _no_exception_box(page)
            assert_shows_nothing_of_the_server(page, site)
    # nothing written where the members point, nor anywhere else around the upload areas
    assert not target.parent.exists()
    for folder in (site.base, ROOT, ROOT.parent, Path(tempfile.gettempdir())):
        assert not list(folder.glob("evil.txt")), folder
    assert not [p for p in all_files(site.base) if p.name in ("evil.txt", "ok.jpg", "zeros.bin")]
    # the upload areas hold no leftovers of the refused zips (no unpacking folder, no part of them)
    areas = [p for p in uploads.iterdir()]
    assert areas and all(a.is_dir() for a in areas)
    for area in areas:
        assert not [p for p in area.iterdir() if p.name.startswith((".unpack", ".upload"))
                    or p.name in ("slip", "absolute", "bomb")], area
    # outside the upload areas only the server's own files appeared (its cache), none holding the payload
    new = {p for p in all_files(site.base) if not p.is_relative_to(uploads)} - before
    assert all(p.is_relative_to(site.cache) for p in new), new
    for p in new | all_files(uploads):
        assert p.stat().st_size < UPLOAD_MB * 2**20 and payload not in p.read_bytes(), p


def test_dataset_examples_builds_an_index_over_an_uploaded_zip(site, browser):
    data = zip_of({f"photos/{n}": (SAMPLES / n).read_bytes() for n in ("chelsea.jpg", "coffee.jpg", "flower.jpg")})
    path = link("/activation_index", folder=str(site.data / "few"))
    with visitor(browser, site, path) as page:
        page.get_by_text("No index yet for this model").first.wait_for(timeout=WAIT)
        page.get_by_text("Index: folder, layers, build").click()
        upload(page, "Or upload a .zip of images", "photos.zip", data)
        page.get_by_text(re.compile(r"No index yet for this model over uploads/.*photos")).wait_for(timeout=WAIT)
        page.get_by_role("button", name="Build or update the index").click()
        page.get_by_text("3 images indexed").wait_for(timeout=WAIT)
        page.get_by_text(re.compile(r"^3 images from uploads/.*photos, ")).wait_for(timeout=WAIT)
        _no_exception_box(page)
        assert_shows_nothing_of_the_server(page, site)


def mask_zip(stems: list[str]) -> bytes:
    """Masks ``masks/<concept>/<stem>.png`` for two concepts: the top half and the left half of every image."""
    from PIL import Image

    members = {}
    for concept, box in (("top", (0, 0, 64, 32)), ("left", (0, 0, 32, 64))):
        for stem in stems:
            mask = Image.new("L", (64, 64), 0)
            mask.paste(255, box)
            out = io.BytesIO()
            mask.save(out, "PNG")
            members[f"masks/{concept}/{stem}.png"] = out.getvalue()
    return zip_of(members)


def test_net2vec_learns_concepts_from_uploaded_images_and_masks(site, browser):
    names = ["chelsea.jpg", "coffee.jpg", "flower.jpg", "clock_motion.jpg"]
    images = zip_of({f"shots/{n}": (SAMPLES / n).read_bytes() for n in names})
    from playwright.sync_api import expect

    path = link("/net2vec", folder=str(site.data / "few"), source="mask folder", size="14")
    with visitor(browser, site, path) as page:
        page.get_by_text("Press Learn concepts to compute").first.wait_for(timeout=WAIT)
        upload(page, "Or upload a .zip of images", "shots.zip", images)
        expect(page.get_by_label("Image folder", exact=True)).to_have_value(re.compile("^uploads/.*shots$"),
                                                                            timeout=WAIT)
        upload(page, "Or upload a .zip of masks", "masks.zip", mask_zip([Path(n).stem for n in names]))
        expect(page.get_by_label("Mask folder", exact=True)).to_have_value(re.compile("^uploads/.*masks$"),
                                                                           timeout=WAIT)
        page.get_by_role("button", name="Learn concepts").click()
        page.get_by_text("4 images; IoUs measured on").wait_for(timeout=WAIT)
        _no_exception_box(page)
        assert_shows_nothing_of_the_server(page, site)
