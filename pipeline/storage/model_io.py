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
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from .atomic import save_npz_atomic, write_text_atomic

__all__ = ["ModelFileError", "load_model", "read_manifest", "save_model"]

FORMAT = "convexrf-model"
FORMAT_VERSION = 1
NPZ_NAME = "model.npz"
JSON_NAME = "model.json"
CHECKSUM_KEY = "__manifest_sha256__"

_SCALAR_TYPES = (bool, int, float, str)
_NUMPY_KINDS = "biufU"  # numpy scalar kinds that JSON holds exactly: bool, ints, floats, str


class ModelFileError(ValueError):
    """A model cannot be saved or loaded; the message names the file, the problem and the remedy."""


# ----------------------------------------------------------------------------------------------
# Saving


def save_model(estimator, folder, *, registry, config=None):
    """Save a fitted ``estimator`` as ``folder/model.npz`` then ``folder/model.json``, both atomically.

    ``config`` (a JSON-serialisable dict, e.g. the job's config) is stored in the manifest. Every
    estimator class in the tree must be in ``registry`` (``{class name: class}``, e.g.
    :data:`pipeline.model_files.REGISTRY`), so that what is saved can be loaded.
    """
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


def load_model(folder, *, registry):
    """The fitted estimator saved in ``folder``, rebuilt from classes in ``registry`` only.

    ``registry`` maps class names to classes (e.g. :data:`pipeline.model_files.REGISTRY`). Nothing from
    the files is executed and ``fit`` is not called.
    """
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

    The arrays are the npz entries ``names`` (all when None), less the checksum entry.
    """
    npz_path, json_path = _model_paths(folder)
    manifest, digest = _parse_manifest(json_path)
    entries = _read_npz(npz_path, names)
    stored = entries.pop(CHECKSUM_KEY, None)
    if stored is None:
        raise ModelFileError(f"{npz_path} has no manifest checksum ({CHECKSUM_KEY}): it was not written "
                             "by save_model; re-save the model")
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


def _read_npz(path, names=None):
    """The entries ``names`` (all when None) of the npz archive at ``path``, without unpickling."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("not an npz archive")
        with archive:
            names = archive.files if names is None else [n for n in names if n in archive.files]
            return {name: archive[name] for name in names}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise ModelFileError(f"{path} is truncated or corrupt: {error}; re-save the model or restore "
                             "the original file") from error


def _check_arrays(entries, listed, npz_path):
    unlisted = sorted(set(entries) - set(listed))
    if unlisted:
        raise ModelFileError(f"{npz_path} holds arrays that the manifest does not list: {unlisted}; "
                             "the file was modified; re-save the model or restore the original file")
    for key, meta in listed.items():
        array = entries.get(key)
        if (array is None or list(array.shape) != meta["shape"] or str(array.dtype) != meta["dtype"]
                or _digest(array) != meta["sha256"]):
            raise ModelFileError(f"array {key!r} in {npz_path} is missing or does not match the "
                                 "manifest: the file is corrupted or was modified; re-save the model "
                                 "or restore the original file")


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
