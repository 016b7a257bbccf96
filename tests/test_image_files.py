"""Tests for data/image_files.py: images to classify are written to tmp_path with PIL."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from data.core import DatasetError
from data.image_files import IMAGE_SUFFIXES, list_image_files, read_images_for_prediction

RNG = np.random.default_rng(7)


def _write(path, shape=(28, 28, 1), pixels=None):
    """Write an image of (H, W, C) ``shape`` (random pixels unless given) to ``path``; return its pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if pixels is None:
        pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(path)
    return pixels


# ---------------------------------------------------------------- list_image_files


def test_suffixes_include_common_formats():
    assert {".png", ".jpg", ".jpeg"} <= set(IMAGE_SUFFIXES)


def test_single_file(tmp_path):
    _write(tmp_path / "digit.PNG")
    assert list_image_files(tmp_path / "digit.PNG") == [tmp_path / "digit.PNG"]


def test_flat_folder_sorted(tmp_path):
    for name in ("b.png", "a.jpg", "c.JPEG"):
        _write(tmp_path / name)
    assert list_image_files(tmp_path) == [tmp_path / n for n in ("a.jpg", "b.png", "c.JPEG")]


def test_image_folder_tree(tmp_path):
    for name in ("dog/2.png", "cat/9.png", "cat/10.png", "dog/1.jpg", "top.png"):
        _write(tmp_path / name)
    assert list_image_files(tmp_path) == [
        tmp_path / n for n in ("cat/10.png", "cat/9.png", "dog/1.jpg", "dog/2.png", "top.png")
    ]


def test_hidden_and_non_image_files_ignored(tmp_path):
    _write(tmp_path / "keep.png")
    _write(tmp_path / ".hidden.png")
    _write(tmp_path / ".cache" / "inside.png")
    _write(tmp_path / "cls" / ".ipynb_checkpoints" / "x.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "cls" / "labels.csv").write_text("a,b")
    assert list_image_files(tmp_path) == [tmp_path / "keep.png"]


def test_missing_path(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere does not exist"):
        list_image_files(tmp_path / "nowhere")


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"folder .*empty contains no image files \(accepted suffixes.*\.png"):
        list_image_files(tmp_path / "empty")


def test_wrong_suffix(tmp_path):
    (tmp_path / "scores.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"scores\.txt is not an image file \(accepted suffixes.*\.jpg.*\.png"):
        list_image_files(tmp_path / "scores.txt")


# ---------------------------------------------------------------- read_images_for_prediction


def test_png_pixels_round_trip_grayscale_and_rgb(tmp_path):
    gray = [_write(tmp_path / "g" / f"{i}.png", (5, 4, 1)) for i in range(3)]
    files, images = read_images_for_prediction(tmp_path / "g", (5, 4, 1))
    assert files == [tmp_path / "g" / f"{i}.png" for i in range(3)]
    assert images.dtype == np.uint8 and images.shape == (3, 5, 4, 1)
    np.testing.assert_array_equal(images, np.stack(gray))

    rgb = _write(tmp_path / "one.png", (6, 7, 3))
    files, images = read_images_for_prediction(tmp_path / "one.png", (6, 7, 3))
    assert files == [tmp_path / "one.png"] and images.shape == (1, 6, 7, 3)
    np.testing.assert_array_equal(images[0], rgb)


def test_jpeg_and_rgba_read_for_rgb_model(tmp_path):
    _write(tmp_path / "photo.jpg", (8, 8, 3))
    Image.fromarray(RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8)).save(tmp_path / "alpha.png")
    files, images = read_images_for_prediction(tmp_path, (8, 8, 3))
    assert [f.name for f in files] == ["alpha.png", "photo.jpg"] and images.shape == (2, 8, 8, 3)


def test_size_mismatch_names_file_and_sizes(tmp_path):
    _write(tmp_path / "ok.png", (28, 28, 1))
    _write(tmp_path / "big.png", (32, 30, 1))
    with pytest.raises(DatasetError, match=r"big\.png is 30x32 grayscale") as err:
        read_images_for_prediction(tmp_path, (28, 28, 1))
    message = str(err.value)
    assert "ok.png" not in message
    assert "model input, 28x28 grayscale" in message
    assert "Resize/convert the images to 28x28 grayscale" in message


def test_rgb_file_for_grayscale_model(tmp_path):
    _write(tmp_path / "color.png", (28, 28, 3))
    with pytest.raises(DatasetError, match=r"color\.png is 28x28 RGB.*convert the images to 28x28 grayscale"):
        read_images_for_prediction(tmp_path, (28, 28, 1))


def test_grayscale_file_for_rgb_model(tmp_path):
    _write(tmp_path / "gray.png", (32, 32, 1))
    with pytest.raises(DatasetError, match=r"gray\.png is 32x32 grayscale.*convert the images to 32x32 RGB"):
        read_images_for_prediction(tmp_path, (32, 32, 3))


def test_several_mismatches_reported_with_count(tmp_path):
    _write(tmp_path / "good.png", (28, 28, 1))
    for i in range(8):
        _write(tmp_path / f"bad{i}.png", (16, 16, 1))
    with pytest.raises(DatasetError, match=r"^8 of 9 image\(s\) do not match") as err:
        read_images_for_prediction(tmp_path, (28, 28, 1))
    message = str(err.value)
    assert all(f"bad{i}.png is 16x16 grayscale" in message for i in range(5))
    assert not any(f"bad{i}.png" in message for i in range(5, 8))
    assert "and 3 other file(s)" in message


def test_corrupt_file_named(tmp_path):
    _write(tmp_path / "fine.png", (28, 28, 1))
    (tmp_path / "broken.png").write_bytes(RNG.integers(0, 256, 200, dtype=np.uint8).tobytes())
    with pytest.raises(DatasetError, match=r"cannot read image .*broken\.png"):
        read_images_for_prediction(tmp_path, (28, 28, 1))


# ---------------------------------------------------------------- unsafe inputs


def test_link_loops_list_each_image_once_and_end(tmp_path):
    _write(tmp_path / "dir" / "a.png")
    _write(tmp_path / "dir" / "cls" / "b.png")
    os.symlink(".", tmp_path / "dir" / "s1")
    os.symlink("..", tmp_path / "dir" / "cls" / "up")
    assert list_image_files(tmp_path / "dir") == [tmp_path / "dir" / "a.png", tmp_path / "dir" / "cls" / "b.png"]
    os.symlink(".", tmp_path / "dir" / "s2")  # two loops: 2**depth paths without the check
    assert len(list_image_files(tmp_path / "dir")) == 2


def test_fifos_and_broken_links_are_not_images(tmp_path):
    _write(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")
    os.symlink("nowhere.png", tmp_path / "c.png")
    assert list_image_files(tmp_path) == [tmp_path / "a.png"]
    with pytest.raises(DatasetError, match=r"b\.png is not a regular file \(a FIFO"):
        list_image_files(tmp_path / "b.png")


def test_only_the_formats_of_the_image_suffixes_are_decoded(tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(self))
    (tmp_path / "x.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n%%EOF\n")
    with pytest.raises(DatasetError, match=r"cannot read image .*x\.png: .*\(formats read: PNG, JPEG, BMP"):
        read_images_for_prediction(tmp_path, (8, 8, 1))
    assert opened == []


@pytest.mark.parametrize("mode, pixels, description", [
    ("1", np.ones((8, 8), bool), "1-bit black-and-white (mode 1, read as RGB)"),
    ("I;16", np.full((8, 8), 40000, np.uint16), "16-bit grayscale (mode I;16, read as RGB)"),
    ("LA", np.zeros((8, 8, 2), np.uint8), "grayscale with alpha (mode LA, read as RGB)"),
    ("P", np.zeros((8, 8), np.uint8), "palette (mode P, read as RGB)"),
])
def test_size_errors_name_the_files_own_mode(tmp_path, mode, pixels, description):
    image = Image.fromarray(pixels)
    image = image.convert(mode) if image.mode != mode else image
    image.save(tmp_path / "odd.png")
    assert Image.open(tmp_path / "odd.png").mode == mode
    with pytest.raises(DatasetError, match=re.escape(f"odd.png is 8x8 {description}")):
        read_images_for_prediction(tmp_path, (8, 8, 1))

