"""Tests of the safe model files (pipeline/storage/model_io.py, through pipeline/model_files.py)."""

import errno
import hashlib
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import BaseEstimator
from sklearn.datasets import load_digits

from pipeline import cli
from features.feature_map import ConvReLUPool
from features.whitening import ZCAWhitener
from pipeline import ConvexRFClassifier, L1OutputLayer, ModelFileError, load_model, save_model
from pipeline.model_files import load_classifier, load_run
from pipeline.storage import model_io
from pipeline.storage.model_io import read_manifest


class Stack(BaseEstimator):
    """A test-local estimator with nested estimators and scalars of many types."""

    _parameter_constraints = {"base": [ZCAWhitener, None]}  # a parameter may be an estimator where allowed

    def __init__(self, eps=0.25, sizes=(2, 3), limit=float("inf"), name="stack", base=None):
        self.eps = eps
        self.sizes = sizes
        self.limit = limit
        self.name = name
        self.base = base

    def fit(self, X, y=None):
        self.whitener_ = ZCAWhitener(eps=self.eps).fit(X)
        self.parts_ = [ZCAWhitener().fit(X[:, :3]), (ZCAWhitener().fit(X[:, 3:]), "right")]
        self.shape_ = X.shape
        self.n_seen_ = np.int64(len(X))
        self.nan_ = np.float32(np.nan)
        self.flag_ = np.bool_(True)
        self.label_ = np.str_("abc")
        self.note_ = None
        self.ratio_ = 0.5
        self.weights_ = np.arange(6, dtype=np.int16).reshape(2, 3)
        self._private = object()  # not fitted state: never saved
        return self


STACK_REGISTRY = {"Stack": Stack, "ZCAWhitener": ZCAWhitener}


def patches(seed=0):
    return np.random.default_rng(seed).standard_normal((50, 6))


def three_classes(seed=0):
    """60 x 8 features, labels "cat"/"dog"/"eel" from a planted linear rule."""
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((60, 8))
    W = rng.standard_normal((8, 3))
    return B, np.array(["cat", "dog", "eel"])[np.argmax(B @ W, axis=1)]


@pytest.fixture
def saved_whitener(tmp_path):
    """(folder, fitted ZCAWhitener) saved there."""
    whitener = ZCAWhitener(eps=0.25).fit(patches())
    save_model(whitener, tmp_path)
    return tmp_path, whitener


def assert_same(restored, value, name):
    """``restored`` equals ``value`` and has its type, recursively (estimators, lists, arrays)."""
    assert type(restored) is type(value), name
    if isinstance(value, BaseEstimator):
        assert restored.get_params(deep=False).keys() == value.get_params(deep=False).keys()
        for key, item in vars(value).items():
            if key.startswith("_"):
                assert not hasattr(restored, key), key
            else:
                assert_same(getattr(restored, key), item, f"{name}.{key}")
    elif isinstance(value, (list, tuple)):
        assert len(restored) == len(value), name
        for i, (a, b) in enumerate(zip(restored, value)):
            assert_same(a, b, f"{name}[{i}]")
    elif isinstance(value, np.ndarray):
        assert restored.dtype == value.dtype and np.array_equal(restored, value), name
    elif not (isinstance(value, (float, np.floating)) and np.isnan(value)):
        assert restored == value, name


def test_whitener_round_trip(saved_whitener):
    folder, whitener = saved_whitener
    loaded = load_model(folder)
    assert_same(loaded, whitener, "model")
    X = patches(seed=1)
    assert np.array_equal(loaded.transform(X), whitener.transform(X))
    assert loaded.eps == 0.25


def test_output_layer_round_trip(tmp_path):
    B, y = three_classes()
    layer = L1OutputLayer().fit(B, y)
    config = {"output": {"beta": 0.01}, "name": "digits"}
    save_model(layer, tmp_path, config=config)
    loaded = load_model(tmp_path)
    assert_same(loaded, layer, "model")
    assert isinstance(loaded.n_iter_, type(layer.n_iter_))
    assert loaded.classes_.dtype.kind == "U"
    B_test, _ = three_classes(seed=1)
    assert np.array_equal(loaded.decision_function(B_test), layer.decision_function(B_test))
    assert np.array_equal(loaded.predict(B_test), layer.predict(B_test))
    manifest = read_manifest(tmp_path)
    assert manifest["format"] == "convexrf-model" and manifest["format_version"] == 1
    assert manifest["classes"] == ["cat", "dog", "eel"]
    assert manifest["config"] == config
    assert manifest["estimator"]["class"] == "L1OutputLayer"
    assert manifest["arrays"]["coef_"]["shape"] == [8, 3]


def test_nested_estimator_round_trip(tmp_path):
    X = patches()
    stack = Stack(base=ZCAWhitener(eps=0.5)).fit(X)
    model_io.save_model(stack, tmp_path, registry=STACK_REGISTRY)
    loaded = model_io.load_model(tmp_path, registry=STACK_REGISTRY)
    assert_same(loaded, stack, "model")
    assert loaded.sizes == (2, 3) and loaded.limit == float("inf")
    assert type(loaded.base) is ZCAWhitener and loaded.base.eps == 0.5
    assert loaded.shape_ == (50, 6) and type(loaded.shape_[0]) is int
    assert isinstance(loaded.n_seen_, np.int64) and isinstance(loaded.nan_, np.float32)
    assert np.isnan(loaded.nan_) and isinstance(loaded.flag_, np.bool_)
    assert type(loaded.parts_) is list and type(loaded.parts_[1]) is tuple
    right = loaded.parts_[1][0]
    assert np.array_equal(right.transform(X[:, 3:]), stack.parts_[1][0].transform(X[:, 3:]))
    assert np.array_equal(loaded.whitener_.transform(X), stack.whitener_.transform(X))
    assert "whitener_/mean_" in read_manifest(tmp_path)["arrays"]


def test_unsafe_values_are_refused_at_save(tmp_path):
    whitener = ZCAWhitener().fit(patches())
    whitener.extra_ = np.array([{"a": 1}], dtype=object)
    with pytest.raises(ModelFileError, match="attribute 'extra_'.*object arrays cannot be saved safely"):
        save_model(whitener, tmp_path / "a")
    whitener.extra_ = {"a": 1}
    with pytest.raises(ModelFileError, match="attribute 'extra_' of type dict"):
        save_model(whitener, tmp_path / "b")
    del whitener.extra_
    whitener.eps = np.ones(2)
    with pytest.raises(ModelFileError, match="parameter 'eps' of type ndarray"):
        save_model(whitener, tmp_path / "c")
    with pytest.raises(ModelFileError, match=r"class Stack is not in the model registry \(allowed: "):
        save_model(Stack().fit(patches()), tmp_path / "d")
    assert not any(tmp_path.iterdir())


def _explode():  # pragma: no cover - a pickle that ran would call it
    raise AssertionError("load_model unpickled data from the model file")


class _Bomb:
    def __reduce__(self):
        return (_explode, ())


def test_load_never_unpickles(saved_whitener):
    folder, _ = saved_whitener
    with np.load(folder / "model.npz") as archive:
        entries = {name: archive[name] for name in archive.files}
    entries["mean_"] = np.array([_Bomb()], dtype=object)
    np.savez(folder / "model.npz", **entries)  # pickles the object array
    with pytest.raises(ModelFileError, match=r"'mean_' in .*model.npz .*does not match the manifest \(stored as "
                       r"\[1\] of object\)"):
        load_model(folder)


def test_hand_edited_manifest_is_refused(saved_whitener):
    folder, _ = saved_whitener
    path = folder / "model.json"
    text = path.read_text()
    assert text.count("0.25") == 1
    path.write_text(text.replace("0.25", "0.5"))
    message = re.escape(f"{path} was modified after the model was saved (checksum mismatch); re-save")
    with pytest.raises(ModelFileError, match=message):
        load_model(folder)
    with pytest.raises(ModelFileError, match=message):
        read_manifest(folder)


def test_newer_format_version_is_refused(saved_whitener):
    folder, _ = saved_whitener
    path = folder / "model.json"
    path.write_text(path.read_text().replace('"format_version": 1', '"format_version": 2'))
    with pytest.raises(ModelFileError, match=re.escape(
            "written by a newer convexrf (model format 2, this version reads up to 1): upgrade convexrf")):
        load_model(folder)


def test_malformed_or_foreign_manifest_is_refused(saved_whitener):
    folder, _ = saved_whitener
    path = folder / "model.json"
    path.write_text('{"format": "convexrf-model", ')
    with pytest.raises(ModelFileError, match="model.json is not valid JSON"):
        load_model(folder)
    path.write_text(json.dumps({"format": "something-else", "format_version": 1}))
    with pytest.raises(ModelFileError, match='model.json is not a convexrf model manifest'):
        load_model(folder)


def test_truncated_npz_is_refused(saved_whitener):
    folder, _ = saved_whitener
    path = folder / "model.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="model.npz is truncated or corrupt"):
        load_model(folder)


def test_modified_array_is_refused(saved_whitener):
    folder, _ = saved_whitener
    path = folder / "model.npz"
    with np.load(path) as archive:
        entries = {name: archive[name] for name in archive.files}
    entries["mean_"][0] += 1.0  # keeps the original __manifest_sha256__
    np.savez(path, **entries)
    with pytest.raises(ModelFileError, match=re.escape(
            f"array 'mean_' in {path} is missing or does not match the manifest: the file is corrupted")):
        load_model(folder)
    entries["mean_"][0] -= 1.0
    np.savez(path, **entries, extra_=np.zeros(2))
    with pytest.raises(ModelFileError, match=r"arrays that the manifest does not list: \['extra_'\]"):
        load_model(folder)


def test_classes_outside_the_registry_are_refused(saved_whitener):
    folder, _ = saved_whitener
    with pytest.raises(ModelFileError, match=re.escape(
            "estimator class 'ZCAWhitener', which is not allowed (allowed: ['L1OutputLayer'])")):
        model_io.load_model(folder, registry={"L1OutputLayer": L1OutputLayer})
    with pytest.raises(ModelFileError, match=re.escape("parameters it does not take: ['eps']")):
        model_io.load_model(folder, registry={"ZCAWhitener": L1OutputLayer})


def test_missing_files_are_named(saved_whitener, tmp_path):
    missing = tmp_path / "no-such-run"
    with pytest.raises(ModelFileError, match=re.escape(f"{missing / 'model.npz'} and ")):
        load_model(missing)
    folder, _ = saved_whitener
    (folder / "model.json").unlink()
    with pytest.raises(ModelFileError, match=re.escape(f"{folder / 'model.json'} not found; run `python "
                                                       "run.py train`")):
        read_manifest(folder)


def _rewrite_npz(path, extra=None, replace=None, compression=zipfile.ZIP_STORED):
    """Rewrite the npz at ``path`` with entries ``replace`` ({name: bytes}) swapped in and ``extra`` added."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    entries.update(replace or {})
    entries.update(extra or {})
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def _npy_header(shape, dtype="<f8"):
    """The bytes of a version 1.0 .npy header for ``shape`` and ``dtype`` (no data)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_npz_entries_are_checked_before_they_are_decompressed(saved_whitener, monkeypatch):
    folder, _ = saved_whitener
    path = folder / "model.npz"
    bomb = b"\0" * (64 * 2**20)  # compresses to ~64 KiB: an unlisted entry is refused unread
    _rewrite_npz(path, extra={"bomb.npy": bomb}, compression=zipfile.ZIP_DEFLATED)
    opened = []
    original_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *args, **kwargs: opened.append(getattr(name, "filename", name))
                        or original_open(self, name, *args, **kwargs))
    with pytest.raises(ModelFileError, match=r"arrays that the manifest does not list: \['bomb'\]"):
        load_model(folder)
    assert opened == []


def test_npy_headers_and_sizes_are_capped_by_the_manifest(saved_whitener):
    folder, _ = saved_whitener
    path = folder / "model.npz"
    original = path.read_bytes()
    _rewrite_npz(path, replace={"mean_.npy": _npy_header((10**12,)) + b"\0" * 48})
    with pytest.raises(ModelFileError, match=re.escape("array 'mean_' in") + ".*does not match the manifest "
                       r"\(stored as \[1000000000000\] of float64\)"):
        load_model(folder)
    path.write_bytes(original)
    _rewrite_npz(path, replace={"mean_.npy": _npy_header((6,)) + b"\0" * 2**20})
    with pytest.raises(ModelFileError, match="array 'mean_' in .* is stored larger than its manifest shape "
                       r"\[6\] of float64 allows"):
        load_model(folder)


def test_non_finite_arrays_are_never_saved_nor_loaded(saved_whitener, tmp_path):
    folder, whitener = saved_whitener
    whitener.mean_ = whitener.mean_.copy()
    whitener.mean_[2] = np.nan
    with pytest.raises(ModelFileError, match="cannot save attribute 'mean_': it holds NaN or infinite values"):
        save_model(whitener, tmp_path / "nan")
    assert not (tmp_path / "nan").exists()
    path = folder / "model.json"
    manifest = json.loads(path.read_text())
    manifest["arrays"]["whitening_"]["sha256"] = hashlib.sha256(np.full((6, 6), np.inf)).hexdigest()
    text = json.dumps(manifest, indent=1) + "\n"
    path.write_text(text)  # a tampered pair of files: consistent checksums, infinite whitening
    with np.load(folder / "model.npz") as archive:
        entries = {name: archive[name] for name in archive.files}
    entries["whitening_"] = np.full((6, 6), np.inf)
    entries["__manifest_sha256__"] = np.array(hashlib.sha256(text.encode()).hexdigest())
    np.savez(folder / "model.npz", **entries)
    with pytest.raises(ModelFileError, match="array 'whitening_' in .*model.npz holds NaN or infinite values"):
        load_model(folder)


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory):
    """A folder with a small ConvexRFClassifier fitted on scikit-learn's 8 x 8 digits."""
    digits = load_digits()
    images = np.round(digits.images[:200] * (255 / 16)).astype(np.uint8)
    model = ConvexRFClassifier(ConvReLUPool(patch_size=3, n_patches=60, random_state=0))
    model.fit(images, digits.target[:200])
    folder = tmp_path_factory.mktemp("classifier")
    save_model(model, folder)
    return folder


def tampered(source, folder, edit_text):
    """A copy of the model in ``source`` at ``folder`` with its manifest text edited by ``edit_text``
    (on the JSON text) and the npz checksum recomputed: what a forger would write."""
    shutil.copytree(source, folder)
    path = folder / "model.json"
    text = edit_text(path.read_text())
    path.write_text(text)
    with np.load(folder / "model.npz") as archive:
        entries = {name: archive[name] for name in archive.files}
    entries["__manifest_sha256__"] = np.array(hashlib.sha256(text.encode()).hexdigest())
    np.savez(folder / "model.npz", **entries)
    return folder


def edit_tree(change):
    """A manifest text edit that applies ``change(tree)`` to the parsed estimator tree."""
    def edit(text):
        manifest = json.loads(text)
        change(manifest["estimator"])
        return json.dumps(manifest, indent=1)
    return edit


def features_node(tree):
    return tree["attributes"]["features_"]


TREE_EDITS = {
    "a whitener where the features belong": (
        lambda tree: tree["attributes"].update(features_=features_node(tree)["attributes"]["whitener_"]),
        "ConvexRFClassifier.features_ is a PatchWhitener, not a ConvReLUPool"),
    "a whitener as the features parameter": (
        lambda tree: tree["params"].update(features=features_node(tree)["attributes"]["whitener_"]),
        "The 'features' parameter of ConvexRFClassifier must be an instance of"),
    "a string where an array belongs": (
        lambda tree: features_node(tree)["attributes"].update(weights_={"type": "str", "value": "weights"}),
        "at 'features_': ConvReLUPool.weights_ is a str, not a numeric array"),
    "stride 0": (lambda tree: features_node(tree)["params"].update(stride={"type": "int", "value": 0}),
                 "at 'features_': The 'stride' parameter of ConvReLUPool must be an int in the range"),
    "grid 0": (lambda tree: features_node(tree)["params"].update(grid={"type": "int", "value": 0}),
               "The 'grid' parameter of ConvReLUPool must be an int in the range"),
    "patch_size 100": (lambda tree: features_node(tree)["params"].update(patch_size={"type": "int", "value": 100}),
                       "ConvReLUPool does not fit together: patch_size 100 is not the fitted patch_size_ 3"),
    "NaN eps": (lambda tree: features_node(tree)["attributes"]["whitener_"]["params"].update(
        eps={"type": "float", "value": "nan"}), "at 'features_/whitener_': The 'eps' parameter of PatchWhitener"),
    "a node without its fields": (lambda tree: tree["attributes"].update(classes_={"type": "array"}),
                                  "at 'classes_': a node is malformed"),
    "a missing attribute": (lambda tree: tree["attributes"].pop("output_layer_"),
                            r"ConvexRFClassifier has the fitted attributes \['classes_', 'features_', "
                            r"'n_features_in_'\], not"),
}


@pytest.mark.parametrize("case", TREE_EDITS)
def test_estimator_trees_that_make_no_sense_are_refused(classifier_folder, tmp_path, case):
    change, message = TREE_EDITS[case]
    folder = tampered(classifier_folder, tmp_path / "model", edit_tree(change))
    with pytest.raises(ModelFileError, match=message):
        load_model(folder)


@pytest.mark.parametrize("edit, message", ids=["nested", "digits", "constant"], argvalues=[
    (lambda text: text.replace('"config": null', '"config": ' + "[" * 100_000 + "]" * 100_000),
     "nests 100001 levels deep, more than the 64"),
    (lambda text: re.sub(r'"n_features_in_": \{\s*"type": "int",\s*"value": 64', '"n_features_in_": {"type": '
                         '"int", "value": ' + "6" * 5000, text, count=1),
     "holds an integer of 5000 digits"),
    (lambda text: text.replace('"config": null', '"config": NaN'), "holds NaN, which is not JSON"),
])
def test_manifests_too_deep_or_with_huge_numbers_are_refused(classifier_folder, tmp_path, edit, message):
    folder = tampered(classifier_folder, tmp_path / "model", edit)
    with pytest.raises(ModelFileError, match=message):
        load_model(folder)
    assert cli.main(["predict", "--run", str(folder), "--images", str(tmp_path)]) == 2


def test_classifiers_whose_arrays_do_not_fit_together_are_refused(classifier_folder, tmp_path):
    assert np.shape(load_classifier(classifier_folder).class_scores(np.zeros((2, 8, 8, 1), np.uint8))) == (2, 10)
    two_sided = edit_tree(lambda tree: features_node(tree)["params"].update(two_sided={"type": "bool", "value": True}))
    folder = tampered(classifier_folder, tmp_path / "model", two_sided)  # too few features for the output layer
    with pytest.raises(ModelFileError, match="cannot classify a blank image .*its arrays do not fit together"):
        load_classifier(folder)
    with pytest.raises(ModelFileError, match="holds a ZCAWhitener, not an image classifier"):
        load_classifier(tampered(classifier_folder, tmp_path / "whitener", edit_tree(
            lambda tree: tree.update(features_node(tree)["attributes"]["whitener_"]["attributes"]["zca_"]))))


def test_a_model_trained_on_cuda_predicts_on_the_cpu(classifier_folder, tmp_path):
    model = load_model(classifier_folder)
    model.features_.set_params(device="cuda")  # as `features.device: cuda` trains it
    save_model(model, tmp_path / "run")
    loaded = load_classifier(tmp_path / "run")
    assert loaded.features_.device == "cpu"
    images = np.round(load_digits().images[-3:] * (255 / 16)).astype(np.uint8)
    assert np.array_equal(loaded.predict(images), load_model(classifier_folder).predict(images))
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    assert cli.main(["predict", "--run", str(tmp_path / "run"), "--images", str(tmp_path)]) == 0
    assert len((tmp_path / "run" / "predictions.csv").read_text().splitlines()) == 4
    if not torch.cuda.is_available():
        argv = ["predict", "--run", str(tmp_path / "run"), "--images", str(tmp_path), "--device", "cuda"]
        assert cli.main(argv) == 2


def saved_run(folder, eps, accuracy):
    """A run folder: a ZCAWhitener(eps) with its metrics {"accuracy": accuracy}."""
    save_model(ZCAWhitener(eps=eps).fit(patches()), folder, metrics={"accuracy": accuracy})
    return folder


def test_a_run_is_read_with_the_metrics_of_its_own_model(tmp_path):
    model, metrics = load_run(saved_run(tmp_path / "a", 0.25, 0.5))
    assert model.eps == 0.25 and metrics["accuracy"] == 0.5
    assert metrics["model_manifest_sha256"] == hashlib.sha256((tmp_path / "a" / "model.json").read_bytes()).hexdigest()
    saved_run(tmp_path / "b", 0.5, 0.75)
    for name in ("model.npz", "model.json"):  # b's model beside a's metrics: what a kill between renames leaves
        shutil.copy(tmp_path / "b" / name, tmp_path / "a" / name)
    with pytest.raises(ModelFileError, match=r"metrics.json and .*model.json are from different runs"):
        load_run(tmp_path / "a")
    shutil.copy(tmp_path / "b" / "metrics.json", tmp_path / "a" / "metrics.json")
    assert load_run(tmp_path / "a")[1]["accuracy"] == 0.75


@pytest.mark.parametrize("text, message", [
    ('{"accuracy": 0.5}', "does not name the model it belongs to"),
    ('{"accuracy": 0.', "is not valid JSON"), ("[1, 2]", "does not name the model it belongs to"),
    ("[" * 100 + "]" * 100, "nests 100 levels deep")])
def test_metrics_without_their_model_checksum_or_not_json_are_refused(tmp_path, text, message):
    (saved_run(tmp_path, 0.25, 0.5) / "metrics.json").write_text(text)
    with pytest.raises(ModelFileError, match=message):
        load_run(tmp_path)


@pytest.mark.parametrize("failing", [".model.npz", ".model.json", ".metrics.json"])
def test_a_save_that_fails_while_writing_changes_none_of_the_three_files(tmp_path, monkeypatch, failing):
    saved_run(tmp_path, 0.25, 0.5)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    real_open, real_write = open, Path.write_text

    def full(path):
        if Path(path).name.startswith(failing):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model_io, "open", lambda path, *a: full(path) or real_open(path, *a), raising=False)
    monkeypatch.setattr(Path, "write_text", lambda path, *a, **k: full(path) or real_write(path, *a, **k))
    with pytest.raises(OSError, match=rf"No space left on device: '{tmp_path}'"):  # the folder written to
        saved_run(tmp_path, 0.5, 0.75)
    monkeypatch.undo()
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before  # no temporaries either
    assert load_run(tmp_path)[1]["accuracy"] == 0.5
