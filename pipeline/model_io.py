"""Safe model files: a fitted estimator as ``model.npz`` (arrays) plus ``model.json`` (a manifest).

Loading executes nothing from the files: arrays are read with ``allow_pickle=False``, the manifest with
``json.loads``, and classes are looked up by name in an allow-list (the *registry*), never imported by
name. The manifest records every array's shape, dtype and SHA-256, and the npz records the SHA-256 of
the manifest text, so a hand-edited or mismatched pair of files is refused on load.

An estimator is saved as a tree: ``{"type": "estimator", "class", "params", "attributes"}``, where
``params`` are ``get_params(deep=False)`` and ``attributes`` the fitted state (public names ending in
``_``). Every value is a node tagged with its type (``none``, ``bool``, ``int``, ``float``, ``str``,
``numpy`` scalar with its dtype, ``list``, ``tuple``, ``array`` with its npz key, ``estimator``), so it
comes back as the same type. Non-finite floats are stored as the strings ``"nan"``, ``"inf"``, ``"-inf"``.
"""

import functools
import hashlib
import importlib.metadata
import json
import math
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import InvalidParameterError

from pipeline.cache import save_npz_atomic, write_text_atomic

__all__ = ["ModelFileError", "default_registry", "fitted_state", "load_classifier", "load_model", "read_manifest",
           "save_model"]

FORMAT = "convexrf-model"
FORMAT_VERSION = 1
NPZ_NAME = "model.npz"
JSON_NAME = "model.json"
CHECKSUM_KEY = "__manifest_sha256__"

_SCALAR_TYPES = (bool, int, float, str)
_NUMPY_KINDS = "biufU"  # numpy scalar kinds that JSON holds exactly: bool, ints, floats, str
_ARRAY_KINDS = "biufcU"  # array dtypes that model files hold: bool, ints, floats, complex, str
_MAX_DIMENSIONS = 32  # numpy's limit (NPY_MAXDIMS)
_MAX_HEADER_BYTES = 10_000  # numpy's own cap on the .npy header it reads (np.load's max_header_size)
_MAX_MANIFEST_BYTES = 64 * 2**20
_MAX_DEPTH = 64  # a model tree nests about 20 levels deep
_MAX_INT_DIGITS = 30
_MAX_IMAGE_VALUES = 2**26  # the largest image (H * W * C) that a loaded model may take
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_OPENING, _CLOSING = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)
_MAX_DEFLATE_RATIO = 1032  # the most that deflate expands: 258 bytes per 2-bit code


class ModelFileError(ValueError):
    """A model cannot be saved or loaded; the message names the file, the problem and the remedy."""


def default_registry():
    """``{class name: class}`` of the convexrf estimators that model files may contain."""
    from features.extreme_points import ExtremePointFilters
    from features.feature_map import ConvReLUPool
    from features.filter_banks import GaussianFilters, KMeansFilters, RandomPatchFilters
    from features.whitening import PatchWhitener, ZCAWhitener
    from pipeline.backprop import BackpropNetwork
    from pipeline.classifier import ConvexRFClassifier
    from pipeline.closed_form import ClosedFormNetwork
    from pipeline.cutting_plane import CuttingPlaneNetwork
    from pipeline.least_squares import LeastSquaresClassifier
    from pipeline.output_layer import L1OutputLayer

    classes = (ZCAWhitener, PatchWhitener, ExtremePointFilters, RandomPatchFilters, KMeansFilters, GaussianFilters,
               ConvReLUPool, L1OutputLayer, ConvexRFClassifier, LeastSquaresClassifier, BackpropNetwork,
               CuttingPlaneNetwork, ClosedFormNetwork)
    return {cls.__name__: cls for cls in classes}


# ----------------------------------------------------------------------------------------------
# Saving


def save_model(estimator, folder, *, config=None, registry=None):
    """Save a fitted ``estimator`` as ``folder/model.npz`` then ``folder/model.json``, both atomically.

    ``config`` (a JSON-serialisable dict, e.g. the job's config) is stored in the manifest. Every
    estimator class in the tree must be in ``registry`` (default :func:`default_registry`), so that
    what is saved can be loaded.
    """
    registry = default_registry() if registry is None else registry
    arrays = {}
    tree = _encode_estimator(estimator, "", arrays, registry)
    classes = getattr(estimator, "classes_", None)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "estimator": tree,
        "config": config,
        "classes": None if classes is None else [str(c) for c in classes],
        "arrays": {key: {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": _digest(a)}
                   for key, a in arrays.items()},
    }
    try:
        text = json.dumps(manifest, indent=1, allow_nan=False) + "\n"  # ASCII: the same bytes anywhere
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"cannot save the model to {folder}: the config is not JSON-serialisable "
                             f"({error}); pass dicts, lists, strings and finite numbers") from error
    folder = Path(folder)
    arrays[CHECKSUM_KEY] = np.array(hashlib.sha256(text.encode("utf-8")).hexdigest())
    save_npz_atomic(folder / NPZ_NAME, arrays)
    write_text_atomic(folder / JSON_NAME, text)


def _encode(value, path, arrays, registry, *, param):
    """The manifest node of ``value``; arrays go into ``arrays`` under the key ``path``."""
    if isinstance(value, BaseEstimator):
        return _encode_estimator(value, path, arrays, registry)
    if isinstance(value, np.ndarray) and not param:
        if value.dtype.hasobject:
            raise ModelFileError(f"cannot save attribute {path!r}: object arrays cannot be saved safely "
                                 "(loading them needs pickle); store a numeric or string array instead")
        if not _all_finite(value):
            raise ModelFileError(f"cannot save attribute {path!r}: it holds NaN or infinite values (a "
                                 "degenerate fit?); a model that predicts NaN is not saved")
        arrays[path] = value
        return {"type": "array", "key": path}
    if type(value) in (list, tuple):
        items = [_encode(item, f"{path}/{i}", arrays, registry, param=param)
                 for i, item in enumerate(value)]
        return {"type": type(value).__name__, "items": items}
    if value is None:
        return {"type": "none"}
    if isinstance(value, np.generic) and value.dtype.kind in _NUMPY_KINDS:
        return {"type": "numpy", "dtype": str(value.dtype), "value": _json_scalar(value.item())}
    if type(value) in _SCALAR_TYPES:
        return {"type": type(value).__name__, "value": _json_scalar(value)}
    what = "parameter" if param else "attribute"
    raise ModelFileError(f"cannot save {what} {path!r} of type {type(value).__name__}: a model file "
                         "holds only numbers, strings, None, lists/tuples, numpy arrays and registered "
                         "estimators; convert it or keep it out of the estimator")


def _encode_estimator(estimator, path, arrays, registry):
    name = type(estimator).__name__
    if registry.get(name) is not type(estimator):
        where = f"{path!r}" if path else "the estimator"
        raise ModelFileError(f"cannot save {where}: class {name} is not in the model registry "
                             f"(allowed: {sorted(registry)}); add it to the registry")
    prefix = f"{path}/" if path else ""
    params = estimator.get_params(deep=False)
    fitted = {key: value for key, value in vars(estimator).items()
              if _is_fitted_name(key) and key not in params}
    return {
        "type": "estimator",
        "class": name,
        "params": {key: _encode(value, prefix + key, arrays, registry, param=True)
                   for key, value in params.items()},
        "attributes": {key: _encode(value, prefix + key, arrays, registry, param=False)
                       for key, value in fitted.items()},
    }


def _is_fitted_name(name):
    """scikit-learn's convention for fitted state: ``coef_``, ``classes_``, not ``_private``."""
    return name.isidentifier() and name.endswith("_") and not name.startswith("_")


def _json_scalar(value):
    """``value`` with non-finite floats as the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def _all_finite(array):
    """Whether a numeric ``array`` holds no NaN or infinity (arrays of other dtypes always do)."""
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())


def _digest(array):
    return hashlib.sha256(np.ascontiguousarray(array)).hexdigest()


def _package_version():
    try:
        return importlib.metadata.version("convexrf")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ----------------------------------------------------------------------------------------------
# Loading


def read_manifest(folder):
    """The manifest of the model in ``folder`` as a dict, checked against ``model.npz``'s checksum."""
    manifest, _ = _read_checked(folder, names=[CHECKSUM_KEY])
    return manifest


def load_model(folder, *, registry=None, device="cpu"):
    """The fitted estimator saved in ``folder``, rebuilt from classes in ``registry`` only.

    ``registry`` maps class names to classes (default :func:`default_registry`). Nothing from the
    files is executed and ``fit`` is not called. Every estimator with a ``device`` parameter gets
    ``device`` (a torch device): the one it was trained on is not part of the model.
    """
    registry = default_registry() if registry is None else registry
    manifest, entries = _read_checked(folder)
    _check_arrays(entries, manifest["arrays"], Path(folder) / NPZ_NAME)
    decoder = _Decoder(entries, registry, Path(folder) / JSON_NAME, device)
    return decoder.value(manifest.get("estimator"), "", True)


def load_classifier(folder, *, registry=None, device="cpu"):
    """The fitted image classifier saved in ``folder`` (see :func:`load_model`), once it has classified
    a blank image of its input shape: arrays that do not fit together are refused here, not mid-run."""
    model = load_model(folder, registry=registry, device=device)
    if not (callable(getattr(model, "class_scores", None)) and hasattr(model, "image_shape_")):
        raise ModelFileError(f"{Path(folder) / JSON_NAME} holds a {type(model).__name__}, not an image "
                             "classifier; pass the run folder of `python run.py train`")
    try:
        scores = model.class_scores(np.zeros((1, *model.image_shape_), dtype=np.uint8))
        if np.shape(scores) != (1, len(model.classes_)):
            raise ValueError(f"scores of shape {np.shape(scores)} for {len(model.classes_)} classes")
    except (ValueError, TypeError, IndexError, RuntimeError, ArithmeticError) as error:
        raise ModelFileError(f"the model in {folder} cannot classify a blank image ({type(error).__name__}: "
                             f"{error}): its arrays do not fit together; re-save the model or restore the "
                             "original files") from error
    return model


def _read_checked(folder, names=None):
    """``(manifest, {name: array})`` of the model in ``folder`` once the manifest checksum matches.

    The arrays are the npz entries ``names`` (all that the manifest lists when None), less the
    checksum entry.
    """
    npz_path, json_path = _model_paths(folder)
    manifest, digest = _parse_manifest(json_path)
    listed = _listed_arrays(manifest, json_path)
    entries = _read_npz(npz_path, listed, names)
    stored = entries.pop(CHECKSUM_KEY)
    if str(stored) != digest:
        raise ModelFileError(f"{json_path} was modified after the model was saved (checksum "
                             "mismatch); re-save the model or restore the original file")
    return manifest, entries


def _model_paths(folder):
    folder = Path(folder)
    npz_path, json_path = folder / NPZ_NAME, folder / JSON_NAME
    missing = [str(path) for path in (npz_path, json_path) if not path.is_file()]
    if missing:
        raise ModelFileError(f"no saved model: {' and '.join(missing)} not found; run `python run.py "
                             f"train` to train and save one, or pass the run folder that contains "
                             f"{NPZ_NAME} and {JSON_NAME}")
    return npz_path, json_path


def _parse_manifest(path):
    """``(manifest, sha256 of its bytes)``, after checking the format and its version."""
    if path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise ModelFileError(f"{path} is larger than the {_MAX_MANIFEST_BYTES // 2**20} MiB a model manifest "
                             "may have: it is not a convexrf manifest; restore the original file")
    raw = path.read_bytes()
    try:
        manifest = _parse_json(raw.decode("utf-8"), path)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path} is not valid JSON ({error}); restore the original file or "
                             "re-save the model") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f'{path} is not a convexrf model manifest (no "format": "{FORMAT}"); '
                             "pass the folder of a model saved by convexrf")
    version = manifest.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelFileError(f"{path} has an invalid format_version {version!r}; re-save the model")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path} was written by a newer convexrf (model format {version}, this "
                             f"version reads up to {FORMAT_VERSION}): upgrade convexrf")
    return manifest, hashlib.sha256(raw).hexdigest()


def _listed_arrays(manifest, json_path):
    """``{npz entry: (shape, dtype)}`` of the arrays the manifest lists, and of the checksum entry."""
    listed = {CHECKSUM_KEY: ((), np.dtype("<U64"))}
    arrays = manifest.get("arrays")
    if not isinstance(arrays, dict):
        raise ModelFileError(f"{json_path} has no \"arrays\" table; re-save the model")
    for key, meta in arrays.items():
        shape, dtype = meta.get("shape") if isinstance(meta, dict) else None, _listed_dtype(meta)
        if (key == CHECKSUM_KEY or type(shape) is not list or len(shape) > _MAX_DIMENSIONS or dtype is None
                or not all(type(n) is int and n >= 0 for n in shape) or type(meta.get("sha256")) is not str):
            raise ModelFileError(f"{json_path} lists array {key!r} with an invalid shape, dtype or checksum; "
                                 "re-save the model")
        listed[key] = (tuple(shape), dtype)
    return listed


def _listed_dtype(meta):
    """The numpy dtype that a manifest entry names, or None unless it is a plain bool/number/str dtype."""
    try:
        dtype = np.dtype(meta["dtype"])
    except (KeyError, TypeError, ValueError):
        return None
    return dtype if dtype.kind in _ARRAY_KINDS and dtype.shape == () and dtype.names is None else None


def _parse_json(text, path):
    """``json.loads(text)``, refused when nested deeper than ``_MAX_DEPTH`` or when an integer has more
    than ``_MAX_INT_DIGITS`` digits (both checked without recursion, before or while parsing)."""
    depth = _nesting_depth(text)
    if depth > _MAX_DEPTH:
        raise ModelFileError(f"{path} nests {depth} levels deep, more than the {_MAX_DEPTH} a model manifest "
                             "has: it is not a convexrf manifest; restore the original file")

    def parse_int(digits):
        if len(digits.lstrip("-")) > _MAX_INT_DIGITS:
            raise ModelFileError(f"{path} holds an integer of {len(digits)} digits, more than the "
                                 f"{_MAX_INT_DIGITS} a model manifest has; restore the original file")
        return int(digits)

    def parse_constant(name):
        raise ModelFileError(f"{path} holds {name}, which is not JSON (model files write non-finite "
                             "numbers as strings); restore the original file")

    return json.loads(text, parse_int=parse_int, parse_constant=parse_constant)


def _nesting_depth(text):
    """The deepest nesting of ``[`` and ``{`` in JSON ``text``, not counting those inside strings."""
    codes = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8"), dtype=np.uint8)
    steps = np.isin(codes, _OPENING).astype(np.int64) - np.isin(codes, _CLOSING)
    return int(np.cumsum(steps).max(initial=0))


def _read_npz(path, listed, names=None):
    """The entries ``names`` (all of ``listed`` when None) of the npz archive at ``path``.

    Nothing is decompressed before the zip directory matches ``listed`` (``{entry: (shape, dtype)}``):
    every entry listed, no other, none larger than its shape allows. Each entry's ``.npy`` header is
    checked against ``listed`` before its data is read, exactly as many bytes as the shape needs.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = _members(archive, listed, path)
            return {name: _read_member(archive, members[name], *listed[name], path)
                    for name in (listed if names is None else names)}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as error:
        raise ModelFileError(f"{path} is truncated or corrupt: {error}; re-save the model or restore "
                             "the original file") from error


def _members(archive, listed, path):
    """``{entry: ZipInfo}`` of the archive, refused unless its entries are exactly ``listed``."""
    members = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if name in listed and name not in members and info.filename == f"{name}.npy":
            members[name] = info
        else:
            raise ModelFileError(f"{path} holds arrays that the manifest does not list: "
                                 f"[{name!r}]; the file was modified; re-save the model or "
                                 "restore the original file")
    missing = sorted(set(listed) - set(members))
    if missing:
        what = "no manifest checksum" if missing == [CHECKSUM_KEY] else f"no entries {missing}"
        raise ModelFileError(f"{path} has {what}: it was not written by save_model with this manifest; "
                             "re-save the model")
    archive_size = Path(path).stat().st_size
    for name, info in members.items():
        shape, dtype = listed[name]
        if (info.file_size > math.prod(shape) * dtype.itemsize + _MAX_HEADER_BYTES
                or not _plausible_sizes(info, archive_size)):
            raise ModelFileError(f"array {name!r} in {path} is stored larger than its manifest shape "
                                 f"{list(shape)} of {dtype} allows (or compressed unusually): the file was "
                                 "modified; re-save the model or restore the original file")
    return members


def _plausible_sizes(info, archive_size):
    """Whether the entry's sizes can be true: stored or deflated (at most ~1032:1), inside the archive."""
    ratio = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: _MAX_DEFLATE_RATIO}.get(info.compress_type)
    return (ratio is not None and info.compress_size <= archive_size
            and info.file_size <= ratio * info.compress_size + _MAX_HEADER_BYTES)


def _read_member(archive, info, shape, dtype, path):
    """The array in the ``.npy`` entry ``info``, once its header says ``shape`` and ``dtype``."""
    name = info.filename.removesuffix(".npy")
    with archive.open(info) as file:
        version = np.lib.format.read_magic(file)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"entry {info.filename!r} has npy format version {version}")
        stored_shape, fortran_order, stored_dtype = read_header(file, max_header_size=_MAX_HEADER_BYTES)
        count = math.prod(shape)
        if (stored_shape, stored_dtype) != (shape, dtype) or info.file_size != file.tell() + count * dtype.itemsize:
            raise ModelFileError(f"array {name!r} in {path} is missing or does not match the manifest "
                                 f"(stored as {list(stored_shape)} of {stored_dtype}): the file is corrupted "
                                 "or was modified; re-save the model or restore the original file")
        flat = np.empty(count, dtype=dtype)
        _read_into(file, flat.view(np.uint8), info.filename)
    return flat.reshape(shape[::-1]).T if fortran_order else flat.reshape(shape)


def _read_into(file, buffer, name):
    """Fill the uint8 array ``buffer`` from ``file``; EOFError if the entry ends first."""
    view, done = memoryview(buffer), 0
    while done < len(view):
        read = file.readinto(view[done:])
        if not read:
            raise EOFError(f"entry {name!r} ends after {done} of {len(view)} data bytes")
        done += read


def _check_arrays(entries, listed, npz_path):
    """Every listed array (shape and dtype already checked on reading) matches its SHA-256 and is finite."""
    for key, meta in listed.items():
        if _digest(entries[key]) != meta["sha256"]:
            raise ModelFileError(f"array {key!r} in {npz_path} is missing or does not match the "
                                 "manifest: the file is corrupted or was modified; re-save the model "
                                 "or restore the original file")
        if not _all_finite(entries[key]):
            raise ModelFileError(f"array {key!r} in {npz_path} holds NaN or infinite values: the model "
                                 "cannot predict (the file was modified, or saved by an older convexrf "
                                 "from a degenerate fit); retrain it")


class _Decoder:
    """Rebuilds values from manifest nodes (see :func:`_encode`), checking the tree as it goes.

    Every node must have exactly its type's fields; every estimator's class must be in the registry,
    its parameters must satisfy the class's ``_parameter_constraints`` and its fitted state must be
    what :func:`fitted_state` expects of the class.
    """

    def __init__(self, arrays, registry, json_path, device):
        self.arrays, self.registry, self.json_path, self.device = arrays, registry, json_path, device

    def error(self, where, problem):
        """A ModelFileError about the node at ``where`` (a path like ``features/whitener``)."""
        place = f" at {where!r}" if where else ""
        return ModelFileError(f"{self.json_path}{place}: {problem}; re-save the model or restore the "
                              "original file")

    def value(self, node, where, fitted):
        """The value of ``node``, found at ``where`` in the tree; ``fitted``: in fitted state (else in
        parameters, where estimators need not be fitted)."""
        kind = _node_type(node)
        if kind is None:
            raise self.error(where, "a node is malformed (unknown type, or missing or extra fields)")
        if kind == "estimator":
            return self.estimator(node, where, fitted)
        if kind == "array":
            if node["key"] not in self.arrays:
                raise self.error(where, f"the array {node['key']!r} is not in the manifest's array list")
            return self.arrays[node["key"]]
        if kind in ("list", "tuple"):
            items = [self.value(item, f"{where}/{i}", fitted) for i, item in enumerate(node["items"])]
            return items if kind == "list" else tuple(items)
        try:
            return _scalar(node)
        except (TypeError, ValueError, OverflowError) as error:
            raise self.error(where, f"a {kind} value is invalid ({error})") from error

    def estimator(self, node, where, fitted):
        """The estimator of an ``estimator`` node, its parameters and fitted state checked."""
        name = node["class"]
        cls = self.registry.get(name)
        if cls is None:
            raise ModelFileError(f"{self.json_path} names the estimator class {name!r}, which is not allowed "
                                 f"(allowed: {sorted(self.registry)}); load it with a registry that has it")
        unknown = sorted(set(node["params"]) - set(cls._get_param_names()))
        if unknown:
            raise ModelFileError(f"{self.json_path} gives {name} parameters it does not take: {unknown}; the "
                                 "model was saved by another version of convexrf; re-save it")
        prefix = f"{where}/" if where else ""
        params = {key: self.value(value, prefix + key, False) for key, value in node["params"].items()}
        if "device" in cls._get_param_names():
            params["device"] = self.device
        estimator = cls(**params)
        self.check_params(estimator, where)
        for key, value in node["attributes"].items():
            if not _is_fitted_name(key):
                raise self.error(where, f"{name} has an attribute {key!r} that is not fitted state")
            setattr(estimator, key, self.value(value, prefix + key, True))
        if fitted or node["attributes"]:
            self.check_fitted(estimator, where)
        return estimator

    def check_params(self, estimator, where):
        """The parameters satisfy the class's ``_parameter_constraints``; none is an estimator without them."""
        name = type(estimator).__name__
        if getattr(estimator, "_parameter_constraints", None) is not None:
            try:
                estimator._validate_params()
            except InvalidParameterError as error:
                raise self.error(where, str(error)) from error
            return
        nested = sorted(key for key, value in estimator.get_params(deep=False).items() if _holds_estimator(value))
        if nested:
            raise self.error(where, f"{name} declares no parameter constraints, so its parameters {nested} "
                                    "cannot be estimators")

    def check_fitted(self, estimator, where):
        """The fitted state is the one the class has after ``fit`` (see :func:`fitted_state`)."""
        expected = fitted_state().get(type(estimator))
        if expected is None:
            return
        name = type(estimator).__name__
        present = {key for key in vars(estimator) if _is_fitted_name(key)}
        if present != set(expected.kinds):
            raise self.error(where, f"{name} has the fitted attributes {sorted(present)}, not "
                                    f"{sorted(expected.kinds)}")
        for key, kind in expected.kinds.items():
            value = getattr(estimator, key)
            if not kind.test(value):
                raise self.error(where, f"{name}.{key} is a {type(value).__name__}, not {kind.description}")
        try:
            expected.check(estimator)
        except ValueError as error:
            raise self.error(where, f"{name} does not fit together: {error}") from error


def _node_type(node):
    """The ``type`` of a well-formed manifest node (exactly its type's fields, of the right JSON types)."""
    kind = node.get("type") if type(node) is dict else None
    fields = _NODE_FIELDS.get(kind) if type(kind) is str else None
    if fields is None or set(node) != {"type", *fields}:
        return None
    return kind if all(type(node[key]) in types for key, types in fields.items()) else None


def _scalar(node):
    """The value of a ``none``, ``numpy``, ``bool``, ``int``, ``float`` or ``str`` node."""
    kind, value = node["type"], node.get("value")
    if kind == "none":
        return None
    if isinstance(value, str) and kind in ("float", "numpy") and value not in _NON_FINITE:
        if kind == "float" or np.dtype(node["dtype"]).kind == "f":
            raise ValueError(f"{value!r} is not a number")
    if kind == "numpy":
        dtype = np.dtype(node["dtype"])
        if dtype.kind not in _NUMPY_KINDS or type(value) not in _NUMPY_VALUES[dtype.kind]:
            raise ValueError(f"a numpy {dtype} scalar cannot hold {value!r}")
        return dtype.type(float(value) if dtype.kind == "f" else value)
    return float(value) if kind == "float" else value


def _holds_estimator(value):
    """Whether ``value`` is an estimator or a list/tuple that holds one."""
    return isinstance(value, BaseEstimator) or (type(value) in (list, tuple) and any(map(_holds_estimator, value)))


_NODE_FIELDS = {
    "estimator": {"class": (str,), "params": (dict,), "attributes": (dict,)},
    "array": {"key": (str,)},
    "list": {"items": (list,)},
    "tuple": {"items": (list,)},
    "none": {},
    "numpy": {"dtype": (str,), "value": (bool, int, float, str)},
    "bool": {"value": (bool,)},
    "int": {"value": (int,)},
    "float": {"value": (float, int, str)},
    "str": {"value": (str,)},
}
_NUMPY_VALUES = {"b": (bool,), "i": (int,), "u": (int,), "f": (float, int, str), "U": (str,)}
_NON_FINITE = ("nan", "inf", "-inf")


# ----------------------------------------------------------------------------------------------
# The fitted state of each estimator class


@dataclass(frozen=True)
class Kind:
    """What a fitted attribute must be: ``test(value)`` is true, described as ``description``."""

    description: str
    test: Callable[[object], bool]


@dataclass(frozen=True)
class FittedState:
    """The fitted attributes of a class (``{name: Kind}``) and a check of how they fit together
    (``check(estimator)`` raises ValueError, e.g. a patch larger than the images)."""

    kinds: dict
    check: Callable[[object], None] = lambda estimator: None


def _is_integer(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
    return _is_integer(value) or isinstance(value, (float, np.floating))


def _is_image_shape(value):
    return (type(value) is tuple and len(value) == 3 and all(_is_integer(n) and n >= 1 for n in value)
            and math.prod(value) <= _MAX_IMAGE_VALUES)


def _instance_of(*classes):
    """The kind of an attribute that holds an instance of one of ``classes`` (None allowed if listed)."""
    names = " or ".join("None" if cls is None else cls.__name__ for cls in classes)
    return Kind(f"a {names}", lambda value: type(value) in tuple(type(None) if c is None else c for c in classes))


ARRAY = Kind("a numeric array", lambda value: isinstance(value, np.ndarray) and value.dtype.kind in "biuf")
LABELS = Kind("a one-dimensional array", lambda value: isinstance(value, np.ndarray) and value.ndim == 1)
INTEGER = Kind("an integer", _is_integer)
REAL = Kind("a number", _is_real)
FLAG = Kind("a bool", lambda value: isinstance(value, (bool, np.bool_)))
IMAGE_SHAPE = Kind(f"an image shape (H, W, C) of at most {_MAX_IMAGE_VALUES} values", _is_image_shape)
REALS = Kind("a list of numbers", lambda value: type(value) is list and all(map(_is_real, value)))
ARRAY_OR_REAL = Kind("a numeric array or a number", lambda value: ARRAY.test(value) or _is_real(value))


@functools.cache
def fitted_state():
    """``{class: FittedState}`` of the convexrf estimators, as ``fit`` leaves them."""
    registry = default_registry()
    filter_banks = [registry[name] for name in ("ExtremePointFilters", "RandomPatchFilters", "KMeansFilters",
                                                "GaussianFilters")]
    bank = {"n_features_in_": INTEGER, "filters_": ARRAY, "bias_": ARRAY}
    network = {"image_shape_": IMAGE_SHAPE, "n_features_in_": INTEGER, "classes_": LABELS, "hidden_weights_": ARRAY,
               "hidden_bias_": ARRAY, "output_weights_": ARRAY, "output_bias_": ARRAY, "objective_": REAL}
    kinds = {
        "ZCAWhitener": {"n_features_in_": INTEGER, "mean_": ARRAY, "whitening_": ARRAY, "colouring_": ARRAY},
        "PatchWhitener": {"n_features_in_": INTEGER, "zca_": _instance_of(registry["ZCAWhitener"], None)},
        "ExtremePointFilters": {**bank, "kept_": ARRAY, "residual_norms_": ARRAY, "relative_gaps_": ARRAY,
                                "support_sizes_": ARRAY, "n_inside_hull_": INTEGER, "max_relative_gap_": REAL,
                                "n_rounds_": INTEGER},
        "RandomPatchFilters": bank,
        "KMeansFilters": {**bank, "n_iter_": INTEGER},
        "GaussianFilters": bank,
        "ConvReLUPool": {"whitener_": _instance_of(registry["PatchWhitener"]),
                         "filter_bank_": _instance_of(*filter_banks), "weights_": ARRAY, "offset_": ARRAY,
                         "image_shape_": IMAGE_SHAPE, "n_features_in_": INTEGER},
        "L1OutputLayer": {"n_features_in_": INTEGER, "intercept_": ARRAY, "mean_": ARRAY_OR_REAL,
                          "scale_": ARRAY_OR_REAL, "n_rounds_": INTEGER, "beta_max_": REAL, "classes_": LABELS,
                          "l1_coef_": ARRAY, "coef_": ARRAY, "tau_": REAL, "dual_norm_": REAL, "beta_": REAL,
                          "n_iter_": INTEGER, "n_solves_": INTEGER, "converged_": FLAG},
        "ConvexRFClassifier": {"features_": _instance_of(registry["ConvReLUPool"]),
                               "output_layer_": _instance_of(registry["L1OutputLayer"]), "classes_": LABELS,
                               "n_features_in_": INTEGER},
        "LeastSquaresClassifier": {"image_shape_": IMAGE_SHAPE, "n_features_in_": INTEGER, "classes_": LABELS,
                                   "coef_": ARRAY, "intercept_": ARRAY, "objective_": REAL},
        "BackpropNetwork": {**network, "objective_history_": REALS},
        "CuttingPlaneNetwork": {**network, "beta_": REAL, "duality_gap_": REAL, "rounds_": ARRAY,
                                "n_seeds_": INTEGER},
        "ClosedFormNetwork": network,
    }
    checks = {"ConvReLUPool": lambda estimator: estimator._check_params(estimator.image_shape_),
              "L1OutputLayer": lambda estimator: estimator._check_params()}
    return {registry[name]: FittedState(kinds[name], *([checks[name]] if name in checks else []))
            for name in kinds}
