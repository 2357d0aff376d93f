"""Labelled sets as users have them: ImageNet's WordNet-id folders, full-description folders, the validation CSV."""
from __future__ import annotations

import pytest
from PIL import Image
from timm.data import ImageNetInfo

from core.errors.dataset import read_labelled

INFO = ImageNetInfo("imagenet-1k")
LABELS = [INFO.index_to_description(i).split(",")[0].strip() for i in range(1000)]


def _img(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), colour).save(path)


def test_wordnet_id_folders(tmp_path):
    _img(tmp_path / "n01440764" / "a.JPEG")
    _img(tmp_path / "n01443537" / "b.JPEG")
    _img(tmp_path / "n99999999" / "c.JPEG")
    got = read_labelled(tmp_path, LABELS)
    assert sorted((it.name, LABELS[it.label]) for it in got.items) == [("n01440764/a.JPEG", "tench"),
                                                                       ("n01443537/b.JPEG", "goldfish")]
    (skip,) = got.skipped
    assert skip.item == "n99999999/" and "WordNet id" in skip.reason


def test_full_description_folders_and_short_names(tmp_path):
    _img(tmp_path / "tailed frog, bell toad, ribbed toad, tailed toad, Ascaphus trui" / "a.jpg")
    _img(tmp_path / "Goldfish" / "b.jpg")
    maillot = [i for i, name in enumerate(LABELS) if name == "maillot"]
    assert len(maillot) == 2  # a short name shared by two classes: the description tells them apart
    _img(tmp_path / INFO.index_to_description(maillot[1]) / "c.jpg")
    _img(tmp_path / "maillot" / "d.jpg")
    _img(tmp_path / "crane" / "e.jpg")  # two classes described alike: only the WordNet id tells them apart
    got = read_labelled(tmp_path, LABELS)
    assert sorted((it.name.split("/")[1], it.label) for it in got.items) == [("a.jpg", 32), ("b.jpg", 1),
                                                                             ("c.jpg", maillot[1])]
    assert [s.item for s in got.skipped] == ["crane/", "maillot/"]
    assert all("use the index" in s.reason for s in got.skipped)


def test_imagenet_validation_csv(tmp_path):
    _img(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    _img(tmp_path / "ILSVRC2012_val_00000002.png")
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000001,n01751748 1 2 30 40 n01751748 5 6 7 8\n"
        "ILSVRC2012_val_00000002,n01440764 1 2 3 4\n"
        "ILSVRC2012_val_00000003,n01440764 1 2 3 4\n"
        "ILSVRC2012_val_00000004,n00000000 1 2 3 4\n"
        "ILSVRC2012_val_00000005,\n")
    for source in (tmp_path, tmp_path / "LOC_val_solution.csv"):
        got = read_labelled(source, LABELS)
        assert got.layout == "imagenet-val"
        assert [(it.name, LABELS[it.label]) for it in got.items] == [("ILSVRC2012_val_00000001", "sea snake"),
                                                                     ("ILSVRC2012_val_00000002", "tench")]
        reasons = {s.item: s.reason for s in got.skipped}
        assert "no such file" in reasons["ILSVRC2012_val_00000003"]
        assert "unknown class" in reasons["ILSVRC2012_val_00000004"]
        assert "PredictionString" in reasons["LOC_val_solution.csv:6"]


def test_wordnet_ids_need_imagenet_class_names(tmp_path):
    _img(tmp_path / "n01440764" / "a.jpg")
    _img(tmp_path / "cat" / "b.jpg")
    got = read_labelled(tmp_path, ["cat", "dog"])
    assert [it.name for it in got.items] == ["cat/b.jpg"]
    assert "not a class of the model" in got.skipped[0].reason


def test_fit_head_takes_the_sets_own_class_names(tmp_path):
    from core.errors.fit import set_classes

    _img(tmp_path / "tree" / "zebra" / "a.png")
    _img(tmp_path / "tree" / "ant" / "b.png")
    (tmp_path / "tree" / "empty").mkdir()
    assert set_classes(tmp_path / "tree") == ["ant", "zebra"]
    (tmp_path / "list.csv").write_text("file,label\na.png,dog\nb.png,cat\nc.png,dog\n")
    assert set_classes(tmp_path / "list.csv") == ["cat", "dog"]


@pytest.mark.parametrize("threads", [1, 2])
def test_features_of_equals_the_forward_on_preprocessed_images_and_reports_unreadable_ones(tmp_path, embedded,
                                                                                            threads):
    """fit-head's features (decoded between passes, on one thread or two) are the pooled features of
    preprocess's tensors, in the items' order, with the unreadable images named and left out; progress reaches
    1; a cancel stops it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _features_of_checks(tmp_path, embedded)
    finally:
        torch.set_num_threads(before)


def _features_of_checks(tmp_path, embedded):
    import torch

    from core.errors.dataset import LabelledImage
    from core.errors.fit import features_of
    from core.images import load_image, preprocess
    from core.model.heads import pooled_features
    from core.progress import Cancelled

    paths = []
    for i in range(21):
        path = tmp_path / f"{i:02d}.png"
        if i == 5:
            path.write_bytes(b"not an image")
        else:
            _img(path, colour=(10 * i, 255 - 10 * i, 7 * i))
        paths.append(path)
    items = [LabelledImage(path=p, name=p.name, label=i % 2) for i, p in enumerate(paths)]
    seen = []
    feats, kept, errors = features_of(embedded, items, batch_size=4, progress=lambda f, m: seen.append(f))
    assert kept == [i for i in range(21) if i != 5]
    assert [e["image"] for e in errors] == ["05.png"] and "05.png" in errors[0]["error"]
    x = torch.stack([preprocess(load_image(paths[i]), embedded.card.data_config).tensor for i in kept])
    # the unreadable image shifts which images share a batch: float32 sums in another blocking (about 1e-6 of
    # features of order 1, whatever the CPU's kernels), where another image would differ by tenths
    torch.testing.assert_close(feats, pooled_features(embedded, x, batch_size=4), rtol=1e-4, atol=1e-4)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    with pytest.raises(Cancelled):
        features_of(embedded, items, batch_size=4, cancel=lambda: True)


def test_decoding_takes_a_second_thread_only_where_the_passes_have_two_cores():
    import concurrent.futures

    import torch

    from core.errors.dataset import decoding_helper

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # e.g. a scheduler job on one core: decoding stays on it
        with decoding_helper() as helper:
            assert helper is None
        torch.set_num_threads(2)
        with decoding_helper() as helper:
            assert isinstance(helper, concurrent.futures.ThreadPoolExecutor) and helper._max_workers == 1
    finally:
        torch.set_num_threads(before)
