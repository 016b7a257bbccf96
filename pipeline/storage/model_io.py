"""Safe model files: a fitted estimator as ``model.npz`` (arrays) plus ``model.json`` (a manifest).

Loading executes nothing from the files: arrays are read with ``allow_pickle=False``, the manifest with
``json.loads``, and classes are looked up by name in an allow-list (the *registry*), never imported by
name. The manifest records every array's shape, dtype and SHA-256, and the npz records the SHA-256 of
the manifest text, so a hand-edited or mismatched pair of files is refused on load (plain SHA-256s: they
detect accidents and edits, not forgery). Nothing is decompressed before the zip directory and each
``.npy`` header agree with the manifest, so a file cannot make the loader allocate more than its
manifest declares. The tree of the estimator is :mod:`pipeline.storage.model_tree`.

A run folder's ``metrics.json`` belongs to its model: :func:`save_model` with ``metrics`` writes the three
files as one group (:func:`pipeline.storage.atomic.atomic_paths`: all written, then renamed, so a failed
save changes none of them) and stamps the metrics with the manifest's SHA-256 (``model_manifest_sha256``).
With the npz's checksum of the manifest this makes a chain metrics -> manifest -> arrays, which
:func:`load_run` follows (metrics first): whatever a reader meets (a job renaming the files as it reads,
a job killed between two renames), it gets the model and the metrics of one run or a ModelFileError,
never a model from one run with the metrics of another. Readers need no lock, so a finished run can be
read while the next one trains in the same folder.
"""

import hashlib
import importlib.metadata
import json
import math
import re
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .atomic import atomic_paths
from .model_tree import Decoder, ModelFileError, all_finite, encode_estimator

__all__ = ["ModelFileError", "load_model", "load_run", "read_manifest", "read_metrics", "save_model"]

FORMAT = "convexrf-model"
FORMAT_VERSION = 1
NPZ_NAME = "model.npz"
JSON_NAME = "model.json"
CHECKSUM_KEY = "__manifest_sha256__"
METRICS_NAME = "metrics.json"
METRICS_CHECKSUM_KEY = "model_manifest_sha256"

_ARRAY_KINDS = "biufcU"  # array dtypes that model files hold: bool, ints, floats, complex, str
_MAX_DIMENSIONS = 32  # numpy's limit (NPY_MAXDIMS)
_MAX_HEADER_BYTES = 10_000  # numpy's own cap on the .npy header it reads (np.load's max_header_size)
_MAX_MANIFEST_BYTES = 64 * 2**20
_MAX_DEPTH = 64  # a model tree nests about 20 levels deep
_MAX_INT_DIGITS = 30
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_OPENING, _CLOSING = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)
_MAX_DEFLATE_RATIO = 1032  # the most that deflate expands: 258 bytes per 2-bit code


# ----------------------------------------------------------------------------------------------
# Saving


def save_model(estimator, folder, *, registry, config=None, metrics=None):
    """Save a fitted ``estimator`` as ``folder/model.npz`` and ``folder/model.json``, atomically together.

    ``config`` (a JSON-serialisable dict, e.g. the job's config) is stored in the manifest. Every
    estimator class in the tree must be in ``registry`` (``{class name: class}``, e.g.
    :data:`pipeline.model_files.REGISTRY`), so that what is saved can be loaded. ``metrics`` (a
    JSON-serialisable dict, e.g. a run's accuracies) is written in the same group as
    ``folder/metrics.json``, stamped with the manifest's checksum (read back by :func:`load_run`).
    """
    arrays = {}
    tree = encode_estimator(estimator, "", arrays, registry)
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
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    arrays[CHECKSUM_KEY] = np.array(digest)
    texts = [text] + ([] if metrics is None else [json.dumps({**metrics, METRICS_CHECKSUM_KEY: digest}, indent=2)])
    names = [JSON_NAME, METRICS_NAME][:len(texts)]
    with atomic_paths(folder / NPZ_NAME, *(folder / name for name in names)) as (npz, *others):
        with open(npz, "wb") as handle:
            np.savez(handle, **arrays)
        for path, content in zip(others, texts):
            path.write_text(content, encoding="utf-8", newline="")


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


def read_metrics(folder):
    """The ``metrics.json`` of a run folder as a dict (with the ``model_manifest_sha256`` of its model)."""
    path = Path(folder) / METRICS_NAME
    rerun = f"re-run `python run.py train --out {folder}` to write it again (finished stages are reused)"
    if not path.is_file():
        raise ModelFileError(f"{path} not found: {folder} is not a finished run (run `python run.py train "
                             "--out FOLDER` first)")
    if path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise ModelFileError(f"{path} is larger than the {_MAX_MANIFEST_BYTES // 2**20} MiB metrics may have; {rerun}")
    try:
        metrics = _parse_json(path.read_bytes().decode("utf-8"), path, allow_nan=True)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path} is not valid JSON ({error}); {rerun}") from error
    if not isinstance(metrics, dict) or type(metrics.get(METRICS_CHECKSUM_KEY)) is not str:
        raise ModelFileError(f"{path} does not name the model it belongs to (no {METRICS_CHECKSUM_KEY!r}: "
                             f"written by an older convexrf, or edited); {rerun}")
    return metrics


def load_run(folder, *, registry, fitted_states=None, device="cpu"):
    """``(model, metrics)`` of a run folder, both of one run: :func:`read_metrics` first, then the model
    (:func:`load_model`), refused unless its manifest is the one that the metrics name."""
    metrics = read_metrics(folder)
    manifest, entries = _read_checked(folder, manifest_sha256=metrics[METRICS_CHECKSUM_KEY])
    return _decoded(folder, manifest, entries, registry, fitted_states, device), metrics


def load_model(folder, *, registry, fitted_states=None, device="cpu"):
    """The fitted estimator saved in ``folder``, rebuilt from classes in ``registry`` only.

    ``registry`` maps class names to classes (e.g. :data:`pipeline.model_files.REGISTRY`), ``fitted_states``
    classes to the :class:`pipeline.storage.fitted_state.FittedState` their fitted attributes must have
    (classes not in it are not checked). Nothing from the files is executed and ``fit`` is not called.
    Every estimator with a ``device`` parameter gets ``device`` (a torch device): the one it was trained
    on is not part of the model.
    """
    manifest, entries = _read_checked(folder)
    return _decoded(folder, manifest, entries, registry, fitted_states, device)


def _decoded(folder, manifest, entries, registry, fitted_states, device):
    """The estimator of a checked manifest and its arrays (see :func:`load_model`)."""
    _check_arrays(entries, manifest["arrays"], Path(folder) / NPZ_NAME)
    decoder = Decoder(entries, registry, fitted_states or {}, Path(folder) / JSON_NAME, device)
    return decoder.value(manifest.get("estimator"), "", True)


def _read_checked(folder, names=None, manifest_sha256=None):
    """``(manifest, {name: array})`` of the model in ``folder`` once the manifest checksum matches.

    The arrays are the npz entries ``names`` (all that the manifest lists when None), less the
    checksum entry. With ``manifest_sha256`` (from ``metrics.json``) the manifest must also have that
    checksum.
    """
    npz_path, json_path = _model_paths(folder)
    manifest, digest = _parse_manifest(json_path)
    if manifest_sha256 is not None and manifest_sha256 != digest:
        raise ModelFileError(f"{Path(folder) / METRICS_NAME} and {json_path} are from different runs (a job "
                             "is saving into this folder now, or was stopped while saving): wait for it to "
                             f"finish, or re-run `python run.py train --out {folder}` (finished stages are reused)")
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


def _parse_json(text, path, allow_nan=False):
    """``json.loads(text)``, refused when nested deeper than ``_MAX_DEPTH`` or when an integer has more
    than ``_MAX_INT_DIGITS`` digits (both checked without recursion, before or while parsing), and
    unless ``allow_nan`` when it holds ``NaN`` or ``Infinity``."""
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

    return json.loads(text, parse_int=parse_int, **({} if allow_nan else {"parse_constant": parse_constant}))


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
        if not all_finite(entries[key]):
            raise ModelFileError(f"array {key!r} in {npz_path} holds NaN or infinite values: the model "
                                 "cannot predict (the file was modified, or saved by an older convexrf "
                                 "from a degenerate fit); retrain it")
