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

import hashlib
import importlib.metadata
import json
import math
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from pipeline.cache import save_npz_atomic, write_text_atomic

__all__ = ["ModelFileError", "default_registry", "load_model", "read_manifest", "save_model"]

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


def load_model(folder, *, registry=None):
    """The fitted estimator saved in ``folder``, rebuilt from classes in ``registry`` only.

    ``registry`` maps class names to classes (default :func:`default_registry`). Nothing from the
    files is executed and ``fit`` is not called.
    """
    registry = default_registry() if registry is None else registry
    manifest, entries = _read_checked(folder)
    json_path = Path(folder) / JSON_NAME
    try:
        _check_arrays(entries, manifest["arrays"], Path(folder) / NPZ_NAME)
        return _decode(manifest["estimator"], entries, registry, json_path)
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ModelFileError(f"{json_path} is malformed ({type(error).__name__}: {error}); re-save "
                             "the model") from error


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
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw.decode("utf-8"))
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
                or not all(type(n) is int and n >= 0 for n in shape)):
            raise ModelFileError(f"{json_path} lists array {key!r} with an invalid shape or dtype; re-save "
                                 "the model")
        listed[key] = (tuple(shape), dtype)
    return listed


def _listed_dtype(meta):
    """The numpy dtype that a manifest entry names, or None unless it is a plain bool/number/str dtype."""
    try:
        dtype = np.dtype(meta["dtype"])
    except (KeyError, TypeError, ValueError):
        return None
    return dtype if dtype.kind in _ARRAY_KINDS and dtype.shape == () and dtype.names is None else None


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


def _decode(node, arrays, registry, json_path):
    """The value of a manifest node (see :func:`_encode`)."""
    kind = node["type"]
    if kind == "estimator":
        return _decode_estimator(node, arrays, registry, json_path)
    if kind == "array":
        return arrays[node["key"]]
    if kind in ("list", "tuple"):
        items = [_decode(item, arrays, registry, json_path) for item in node["items"]]
        return items if kind == "list" else tuple(items)
    if kind == "none":
        return None
    if kind == "numpy":
        dtype = np.dtype(node["dtype"])
        if dtype.kind not in _NUMPY_KINDS:
            raise ModelFileError(f"{json_path} holds a numpy scalar of dtype {dtype}, which model files "
                                 "never contain; re-save the model")
        return dtype.type(float(node["value"]) if dtype.kind == "f" else node["value"])
    scalar_type = {t.__name__: t for t in _SCALAR_TYPES}[kind]
    return scalar_type(node["value"])


def _decode_estimator(node, arrays, registry, json_path):
    name = node["class"]
    cls = registry.get(name)
    if cls is None:
        raise ModelFileError(f"{json_path} names the estimator class {name!r}, which is not allowed "
                             f"(allowed: {sorted(registry)}); load it with a registry that has it")
    unknown = sorted(set(node["params"]) - set(cls._get_param_names()))
    if unknown:
        raise ModelFileError(f"{json_path} gives {name} parameters it does not take: {unknown}; the "
                             "model was saved by another version of convexrf; re-save it")
    params = {key: _decode(value, arrays, registry, json_path) for key, value in node["params"].items()}
    estimator = cls(**params)
    for key, value in node["attributes"].items():
        if not _is_fitted_name(key):
            raise ModelFileError(f"{json_path} gives {name} an attribute {key!r} that is not fitted "
                                 "state; re-save the model")
        setattr(estimator, key, _decode(value, arrays, registry, json_path))
    return estimator
