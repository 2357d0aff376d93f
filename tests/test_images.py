"""Image intake: every kind of bad input gets a one-line reason; odd modes become RGB; preprocessing matches timm."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import timm.data
import torch
from PIL import Image

from core.images import ImageError, list_images, load_image, preprocess, sample_images


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def gradient(w=40, h=30) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w)[None]
    a[..., 1] = np.linspace(0, 255, h)[:, None]
    a[..., 2] = 128
    return Image.fromarray(a)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_formats_decode_to_rgb(fmt):
    img = load_image(encode(gradient(), fmt), name=f"x.{fmt.lower()}")
    assert img.mode == "RGB" and img.size == (40, 30)


def test_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    img = load_image(buf.getvalue())
    r, g, b = img.getpixel((4, 4))
    assert r > 200 and b < 50


def test_exif_orientation_applied():
    img = gradient(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = load_image(encode(img, "JPEG", exif=exif))
    assert out.size == (30, 40)


def test_alpha_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(encode(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    v = load_image(encode(half, "PNG")).getpixel((0, 0))
    assert all(120 <= c <= 135 for c in v)


def test_palette_with_transparency_and_la():
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    assert load_image(encode(p, "PNG", transparency=0)).getpixel((0, 0)) == (255, 255, 255)
    la = Image.new("LA", (4, 4), (0, 255))
    assert load_image(encode(la, "PNG")).getpixel((0, 0)) == (0, 0, 0)


def test_cmyk_greyscale_and_16bit():
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # red
    r, g, b = load_image(encode(cmyk, "JPEG")).getpixel((0, 0))
    assert r > 200 and g < 60 and b < 60
    assert load_image(encode(Image.new("L", (4, 4), 77), "PNG")).getpixel((0, 0)) == (77, 77, 77)
    sixteen = Image.fromarray(np.full((4, 4), 65535 // 2, np.uint16))
    v = load_image(encode(sixteen, "PNG")).getpixel((0, 0))
    assert v[0] == v[1] == v[2] and 120 <= v[0] <= 135
    assert load_image(encode(Image.new("1", (4, 4), 1), "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_bad_inputs_have_one_line_reasons(tmp_path):
    good = encode(gradient(), "PNG")
    cases = {
        "empty": (b"", "empty file"),
        "text": (b"hello, not an image", "not an image"),
        "truncated": (encode(gradient(200, 200), "JPEG")[:300], "truncated or corrupt"),
        "corrupt png": (good[:40] + b"\x00" * 50 + good[90:], "truncated or corrupt"),
    }
    for name, (data, expected) in cases.items():
        with pytest.raises(ImageError) as err:
            load_image(data, name=name)
        assert expected in str(err.value) and "\n" not in str(err.value), name
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def png_header_only(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels but holds almost no data: a decompression bomb's header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


def test_pixel_limit_refused_before_decoding():
    for w, h in ((8000, 6000), (30000, 30000)):  # over our limit; far over PIL's own bomb guard too
        with pytest.raises(ImageError, match="MP limit"):
            load_image(png_header_only(w, h), max_pixels=40_000_000)
    with pytest.raises(ImageError, match="MP limit"):
        load_image(encode(gradient(100, 100), "PNG"), max_pixels=5000)


def test_byte_limit(tmp_path):
    data = encode(gradient(), "PNG")
    with pytest.raises(ImageError, match="limit"):
        load_image(data, max_bytes=len(data) - 1)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match="MB"):
        load_image(path, max_bytes=10)


@pytest.mark.parametrize("size", [(500, 375), (300, 640), (224, 224), (97, 50)])
def test_preprocess_matches_timm_transform(size):
    img = gradient(*size)
    config = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
              "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    ours = preprocess(img, config)
    tf = timm.data.create_transform(**{**config, "mean": (0, 0, 0), "std": (1, 1, 1)}, is_training=False)
    ref = tf(img)
    assert ours.tensor.shape == (3, 224, 224)
    assert torch.allclose(ours.tensor, ref, atol=1 / 255 + 1e-6)
    left, top, right, bottom = ours.box
    assert 0 <= left < right <= size[0] + 1e-6 and 0 <= top < bottom <= size[1] + 1e-6
    # the box is square in original pixels and covers crop_pct of the shorter side
    assert abs((right - left) - (bottom - top)) < 1.5
    assert abs((right - left) - min(size) * 0.875) <= 2.5


@pytest.mark.parametrize("mode", ["center", "squash", "border"])
def test_model_pixels_batch_equals_preprocess(mode):
    """The decoding threads' path (uint8 pixels, one conversion per batch) gives preprocess's tensors exactly."""
    from core.images import model_pixels, pixels_batch

    config = {"input_size": (3, 64, 48), "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": mode,
              "mean": (0.4, 0.5, 0.6)}
    imgs = [gradient(*size) for size in [(80, 60), (50, 90), (64, 48)]]
    batch = pixels_batch([model_pixels(img, config) for img in imgs])
    assert batch.dtype == torch.float32 and batch.is_contiguous()
    assert torch.equal(batch, torch.stack([preprocess(img, config).tensor for img in imgs]))


def test_box_maps_model_pixels_to_original():
    img = gradient(400, 200)
    inp = preprocess(img, {"input_size": (3, 100, 100), "interpolation": "bilinear", "crop_pct": 1.0,
                           "crop_mode": "center"})
    assert inp.box == pytest.approx((100, 0, 300, 200))
    assert inp.to_original(50, 50) == pytest.approx((200, 100))


def test_samples_ship_with_licences(samples):
    files = sample_images()
    assert len(files) >= 60
    listed = (samples / "index.tsv").read_text().splitlines()[1:]
    names = {line.split("\t")[0] for line in listed}
    assert {f.name for f in files} <= names
    assert (samples / "LICENSES.md").is_file()


def test_list_images_sorted_recursive_or_not_hidden_or_not(tmp_path):
    for rel in ("b.PNG", "a.jpg", "notes.txt", ".hidden.jpg", "sub/c.webp", "sub/d.csv"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()  # a folder with an image suffix is not a file
    names = lambda ps: [p.relative_to(tmp_path).as_posix() for p in ps]  # noqa: E731
    assert names(list_images(tmp_path)) == [".hidden.jpg", "a.jpg", "b.PNG", "sub/c.webp"]
    assert names(list_images(tmp_path, recursive=False)) == [".hidden.jpg", "a.jpg", "b.PNG"]
    assert names(list_images(tmp_path, hidden=False, any_file=True)) == ["a.jpg", "b.PNG", "notes.txt",
                                                                         "sub/c.webp", "sub/d.csv"]
    with pytest.raises(ImageError, match="not a folder"):
        list_images(tmp_path / "a.jpg")
