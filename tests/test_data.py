"""Tests for the dataset layer; every dataset is written to tmp_path, nothing is downloaded."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from data import DATASETS, DatasetError, ImageDataset, load_splits, stratified_subsample

RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------- ImageDataset


def _dataset(n=6, shape=(4, 5, 3), n_classes=3):
    images = RNG.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % n_classes
    return ImageDataset(images, labels, tuple(f"c{i}" for i in range(n_classes)))


def test_image_dataset_properties():
    ds = _dataset(n=6, shape=(4, 5, 3))
    assert len(ds) == 6
    assert ds.image_shape == (4, 5, 3)


@pytest.mark.parametrize(
    "images, labels, classes, fragment",
    [
        (np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.int64), ("a",), "dtype uint8"),
        (np.zeros((2, 4, 4), np.uint8), np.zeros(2, np.int64), ("a",), "(N, H, W, C)"),
        (np.zeros((2, 4, 4, 2), np.uint8), np.zeros(2, np.int64), ("a",), "C = 1 or 3"),
        (np.zeros((2, 4, 4, 1), np.uint8), np.zeros(2, np.int32), ("a",), "int64"),
        (np.zeros((2, 4, 4, 1), np.uint8), np.zeros(3, np.int64), ("a",), "3 entries but images has 2"),
        (np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 2], np.int64), ("a", "b"), "0..1"),
        (np.zeros((2, 4, 4, 1), np.uint8), np.zeros(2, np.int64), ["a"], "tuple of str"),
        (np.zeros((2, 4, 4, 1), np.uint8), np.zeros(2, np.int64), (), "classes is empty"),
    ],
)
def test_image_dataset_rejects_bad_input(images, labels, classes, fragment):
    with pytest.raises(DatasetError) as info:
        ImageDataset(images, labels, classes)
    assert fragment in str(info.value)


# ---------------------------------------------------------------- digits and dispatch


def test_digits_shapes_and_values():
    train, test = load_splits("digits")
    assert (len(train), len(test)) == (1347, 450)
    for split in (train, test):
        assert split.images.dtype == np.uint8 and split.labels.dtype == np.int64
        assert split.image_shape == (8, 8, 1)
        assert split.classes == tuple(str(d) for d in range(10))
    pixels = np.concatenate([train.images.ravel(), test.images.ravel()])
    assert pixels.min() == 0 and pixels.max() == 255
    assert set(np.unique(pixels)) <= set(np.round(np.arange(17) * 255 / 16).astype(int))


def test_digits_split_is_stratified_and_seeded():
    train, test = load_splits("digits", seed=3)
    train_again, test_again = load_splits("digits", seed=3)
    other_train, _ = load_splits("digits", seed=4)
    np.testing.assert_array_equal(train.images, train_again.images)
    np.testing.assert_array_equal(test.labels, test_again.labels)
    assert not np.array_equal(train.images, other_train.images)
    all_counts = np.bincount(np.concatenate([train.labels, test.labels]))
    assert np.all(np.abs(np.bincount(test.labels) - all_counts * 0.25) <= 1)


def test_digits_test_fraction():
    train, test = load_splits("digits", test_fraction=0.5)
    assert abs(len(test) - len(train)) <= 1
    with pytest.raises(DatasetError, match="test_fraction"):
        load_splits("digits", test_fraction=1.0)


def test_unknown_dataset_lists_choices():
    with pytest.raises(DatasetError) as info:
        load_splits("imagenet")
    assert all(name in str(info.value) for name in DATASETS)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_torchvision_datasets_need_root(name):
    with pytest.raises(DatasetError, match="data root"):
        load_splits(name)


# ---------------------------------------------------------------- MNIST / Fashion-MNIST

MNIST_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def _write_idx(path, array):
    """Write a uint8 array in the IDX format of the MNIST distribution (big-endian header)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root, folder, n_train=7, n_test=5):
    """Write a tiny MNIST-format dataset; return the arrays written, by split."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = RNG.integers(0, 10, n, dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[prefix] = images, labels
    return raw, written


def test_idx_magic_numbers_match_the_mnist_format(tmp_path):
    _write_idx(tmp_path / "i", np.zeros((2, 3, 4), np.uint8))
    _write_idx(tmp_path / "l", np.zeros(2, np.uint8))
    assert struct.unpack(">IIII", (tmp_path / "i").read_bytes()[:16]) == (2051, 2, 3, 4)
    assert struct.unpack(">II", (tmp_path / "l").read_bytes()[:8]) == (2049, 2)


@pytest.mark.parametrize("name, first_class", [("mnist", "0 - zero"), ("fashion_mnist", "T-shirt/top")])
def test_mnist_family_round_trip(tmp_path, name, first_class):
    _, written = _write_mnist(tmp_path, MNIST_FOLDERS[name])
    train, test = load_splits(name, tmp_path)
    for split, prefix in ((train, "train"), (test, "t10k")):
        images, labels = written[prefix]
        assert split.images.dtype == np.uint8 and split.image_shape == (28, 28, 1)
        np.testing.assert_array_equal(split.images[..., 0], images)
        np.testing.assert_array_equal(split.labels, labels.astype(np.int64))
        assert len(split.classes) == 10 and split.classes[0] == first_class


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_missing_file_names_expected_path(tmp_path, name):
    raw, _ = _write_mnist(tmp_path, MNIST_FOLDERS[name])
    missing = raw / "t10k-labels-idx1-ubyte"
    missing.unlink()
    with pytest.raises(DatasetError) as info:
        load_splits(name, tmp_path)
    message = str(info.value)
    assert str(missing) in message and "--data-root" in message and "download" in message


def test_mnist_empty_root_lists_every_expected_path(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_splits("mnist", tmp_path)
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            assert str(tmp_path / "MNIST" / "raw" / f"{split}-{kind}-ubyte") in str(info.value)


@pytest.mark.parametrize("keep_bytes", [100, 10, 2])  # payload cut, header cut, magic cut
def test_mnist_truncated_idx_names_file(tmp_path, keep_bytes):
    raw, _ = _write_mnist(tmp_path, "MNIST")
    damaged = raw / "train-images-idx3-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:keep_bytes])
    with pytest.raises(DatasetError) as info:
        load_splits("mnist", tmp_path)
    assert str(damaged) in str(info.value) and "download" in str(info.value)


def test_mnist_wrong_idx_type_names_file(tmp_path):
    raw, _ = _write_mnist(tmp_path, "MNIST")
    damaged = raw / "t10k-labels-idx1-ubyte"
    _write_idx(damaged, np.zeros((5, 2, 2), np.uint8))  # an image file under a label file's name
    with pytest.raises(DatasetError, match="1 dimension") as info:
        load_splits("mnist", tmp_path)
    assert str(damaged) in str(info.value)


# ---------------------------------------------------------------- CIFAR-10

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_cifar(root, n_per_batch=3):
    """Write CIFAR-10 python batches; return {file: (rows (N, 3072) uint8, labels)}.

    The original files were pickled by Python 2 with str keys, which torchvision reads
    back with ``encoding="latin1"`` as str keys ("data", "labels"), so str keys are used
    here (bytes keys would only appear when loading with ``encoding="bytes"``).
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in CIFAR_FILES[:-1]:
        rows = RNG.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = RNG.integers(0, 10, n_per_batch).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": rows, "labels": labels}, protocol=2))
        written[name] = rows, labels
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_CLASSES}, protocol=2))
    return folder, written


def test_cifar10_missing_file_names_expected_path(tmp_path):
    folder, _ = _write_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError) as info:
        load_splits("cifar10", tmp_path)
    assert str(folder / "data_batch_3") in str(info.value) and "cifar-10-batches-py/" in str(info.value)


def test_cifar10_checksum_failure_is_a_dataset_error(tmp_path):
    # torchvision 0.29 checks every batch file's MD5 even with download=False, so
    # hand-written batches are rejected; that rejection must surface as a DatasetError.
    _write_cifar(tmp_path)
    with pytest.raises(DatasetError, match="corrupted"):
        load_splits("cifar10", tmp_path)


def test_cifar10_round_trip_without_checksums(tmp_path, monkeypatch):
    # Only possible by disabling torchvision's MD5 check (see the test above): this
    # pins our conversion of .data/.targets/.classes, not torchvision's file checks.
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    _, written = _write_cifar(tmp_path)
    train, test = load_splits("cifar10", tmp_path)
    for split, names in ((train, CIFAR_FILES[:5]), (test, ["test_batch"])):
        rows = np.concatenate([written[n][0] for n in names])
        labels = sum((written[n][1] for n in names), [])
        assert split.image_shape == (32, 32, 3) and split.images.flags.c_contiguous
        np.testing.assert_array_equal(split.images, rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(split.labels, labels)
        assert split.classes == tuple(CIFAR_CLASSES)


# ---------------------------------------------------------------- image_folder


def _write_png(path, pixels, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)


def _write_tree(directory, classes, per_class, mode="RGB", size=(6, 5)):
    """Write <directory>/<class>/<i>.png; return the written pixels in ImageFolder order."""
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    written = []
    for name in classes:
        for i in range(per_class):
            pixels = RNG.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
            if mode == "RGBA":
                pixels[..., 3] = 255  # opaque, so conversion to RGB keeps the colour values
            _write_png(directory / name / f"{i}.png", pixels.squeeze(-1) if channels == 1 else pixels, mode)
            written.append(pixels)
    return np.stack(written)


@pytest.mark.parametrize("mode, channels", [("RGB", 3), ("L", 1), ("RGBA", 3)])
def test_image_folder_round_trip(tmp_path, mode, channels):
    classes = ("cat", "dog", "eel")
    train_pixels = _write_tree(tmp_path / "train", classes, 2, mode)
    test_pixels = _write_tree(tmp_path / "test", classes, 1, mode)
    train, test = load_splits("image_folder", tmp_path, train_root="train", test_root="test")
    assert train.classes == test.classes == classes
    assert train.image_shape == (5, 6, channels) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images, train_pixels[..., :channels])
    np.testing.assert_array_equal(test.images, test_pixels[..., :channels])
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(test.labels, [0, 1, 2])


def test_image_folder_absolute_roots_without_root(tmp_path):
    _write_tree(tmp_path / "a", ("x", "y"), 1)
    _write_tree(tmp_path / "b", ("x", "y"), 1)
    train, test = load_splits("image_folder", train_root=str(tmp_path / "a"), test_root=str(tmp_path / "b"))
    assert (len(train), len(test)) == (2, 2)


@pytest.mark.parametrize("odd_mode, odd_size", [("RGB", (7, 5)), ("L", (6, 5))])
def test_image_folder_inconsistent_image_names_file(tmp_path, odd_mode, odd_size):
    _write_tree(tmp_path / "train", ("a", "b"), 2)
    _write_tree(tmp_path / "test", ("a", "b"), 1)
    odd = tmp_path / "train" / "b" / "odd.png"
    channels = 3 if odd_mode == "RGB" else 1
    _write_png(odd, np.zeros((odd_size[1], odd_size[0], channels), np.uint8).squeeze(), odd_mode)
    with pytest.raises(DatasetError) as info:
        load_splits("image_folder", tmp_path, train_root="train", test_root="test")
    assert str(odd) in str(info.value) and "6x5 RGB" in str(info.value)


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_image_folder_corrupt_image_names_file(tmp_path, content):
    _write_tree(tmp_path / "train", ("a", "b"), 2, size=(40, 40))
    _write_tree(tmp_path / "test", ("a", "b"), 1, size=(40, 40))
    bad = tmp_path / "test" / "a" / "0.png"
    bad.write_bytes(bad.read_bytes()[:200] if content == "truncated" else content)
    with pytest.raises(DatasetError) as info:
        load_splits("image_folder", tmp_path, train_root="train", test_root="test")
    assert str(bad) in str(info.value)


def test_image_folder_empty_folder(tmp_path):
    (tmp_path / "train").mkdir()
    _write_tree(tmp_path / "test", ("a",), 1)
    with pytest.raises(DatasetError) as info:
        load_splits("image_folder", tmp_path, train_root="train", test_root="test")
    assert str(tmp_path / "train") in str(info.value) and "class" in str(info.value)


def test_image_folder_class_without_images(tmp_path):
    _write_tree(tmp_path / "train", ("a", "b"), 1)
    (tmp_path / "train" / "empty").mkdir()
    _write_tree(tmp_path / "test", ("a", "b"), 1)
    with pytest.raises(DatasetError, match="for the classes empty.* add images to every class folder or delete "
                       "the empty ones"):
        load_splits("image_folder", tmp_path, train_root="train", test_root="test")


def test_an_unreadable_image_folder_is_a_dataset_error_that_says_how_to_fix_it(tmp_path, monkeypatch):
    _write_tree(tmp_path / "train", ("a", "b"), 1)
    _write_tree(tmp_path / "test", ("a", "b"), 1)
    real_scandir = os.scandir

    def scandir(path="."):  # what a folder without read permission answers (chmod cannot stop root)
        if os.fspath(path) == str(tmp_path / "train"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DatasetError, match=rf"cannot read image folder {tmp_path / 'train'}: Permission denied "
                       r".*give this user read access"):
        load_splits("image_folder", tmp_path, train_root="train", test_root="test")


def test_image_folder_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_splits("image_folder", tmp_path, train_root="nope", test_root="nope")


def test_image_folder_needs_both_roots(tmp_path):
    with pytest.raises(DatasetError, match="test_root"):
        load_splits("image_folder", tmp_path, train_root="train")


def test_image_folder_class_mismatch_lists_difference(tmp_path):
    _write_tree(tmp_path / "train", ("a", "b", "c"), 1)
    _write_tree(tmp_path / "test", ("a", "b", "d"), 1)
    with pytest.raises(DatasetError) as info:
        load_splits("image_folder", tmp_path, train_root="train", test_root="test")
    assert "only in train ['c']" in str(info.value) and "only in test ['d']" in str(info.value)


def test_image_folder_split_shape_mismatch(tmp_path):
    _write_tree(tmp_path / "train", ("a",), 1, size=(6, 5))
    _write_tree(tmp_path / "test", ("a",), 1, size=(8, 8))
    with pytest.raises(DatasetError, match="both splits"):
        load_splits("image_folder", tmp_path, train_root="train", test_root="test")


# ---------------------------------------------------------------- stratified_subsample


def _indexed_dataset(counts):
    """Class-sorted dataset whose image i encodes i, so subsets can be traced back."""
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    index = np.arange(len(labels))
    images = np.stack([index // 256, index % 256], axis=1).astype(np.uint8)[:, :, None, None]
    return ImageDataset(images, labels, tuple(f"c{i}" for i in range(len(counts))))


def _indices(ds):
    return ds.images[:, 0, 0, 0].astype(int) * 256 + ds.images[:, 1, 0, 0]


@pytest.mark.parametrize("n", [7, 60, 333])
def test_subsample_keeps_class_proportions(n):
    full = _indexed_dataset([300, 200, 100])
    sub = stratified_subsample(full, n, seed=0)
    assert len(sub) == n and sub.classes == full.classes
    expected = np.array([300, 200, 100]) * n / 600
    assert np.all(np.abs(np.bincount(sub.labels, minlength=3) - expected) < 1)
    idx = _indices(sub)
    assert len(np.unique(idx)) == n
    np.testing.assert_array_equal(full.labels[idx], sub.labels)


def test_subsample_gives_every_class_a_sample():
    sub = stratified_subsample(_indexed_dataset([98, 1, 1]), 3, seed=0)
    np.testing.assert_array_equal(np.bincount(sub.labels), [1, 1, 1])


def test_subsample_is_seeded_and_shuffled():
    full = _indexed_dataset([300, 200, 100])
    a, b, c = (stratified_subsample(full, 50, seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(_indices(a), _indices(c))
    assert np.any(np.diff(a.labels) < 0)  # not in the class-sorted input order


def test_subsample_larger_than_dataset_returns_all_shuffled():
    full = _indexed_dataset([5, 5])
    sub = stratified_subsample(full, 100, seed=0)
    idx = _indices(sub)
    np.testing.assert_array_equal(np.sort(idx), np.arange(10))
    assert not np.array_equal(idx, np.arange(10))
    np.testing.assert_array_equal(_indices(stratified_subsample(full, 100, seed=0)), idx)


def test_subsample_smaller_than_class_count():
    with pytest.raises(DatasetError, match="at least 3"):
        stratified_subsample(_indexed_dataset([4, 4, 4]), 2, seed=0)
