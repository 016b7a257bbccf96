"""The predictions of ``convexrf predict``: a ``file,predicted_class,score`` CSV, checked before the work."""

import csv
import io
import os
from pathlib import Path

from data import DatasetError

from ..storage.atomic import write_text_atomic

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula


def check_predictions_csv(path: Path | str) -> None:
    """Raise DatasetError unless the CSV ``path`` can be written: not a folder, and its nearest
    existing parent a folder this process may write in (missing folders below it are created)."""
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"cannot write the predictions to {path}: it is a folder; give a file name.")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
        raise DatasetError(f"cannot write the predictions to {path}: {parent} is not a folder this user may "
                           "write in; give another --csv path.")


def write_predictions_csv(path: Path | str, files: list[Path], classes, scores) -> None:
    """Write ``file,predicted_class,score`` rows to the CSV ``path`` atomically.

    ``files`` (N paths), ``classes`` (N,) predicted class names and ``scores`` (N,) floats,
    written with 6 significant digits. File names are written as UTF-8, their bytes that are not
    UTF-8 as ``\\xNN`` escapes; a name or class that a spreadsheet would take for a formula (it
    starts with ``= + - @``, a tab or a carriage return) is prefixed with ``'`` (OWASP's advice).
    The file is written to a temporary file in the same folder and renamed over ``path``, so a
    reader never sees a partial file; a failure to write is a DatasetError.
    """
    if not len(files) == len(classes) == len(scores):
        raise ValueError(f"files, classes and scores differ in length: {len(files)}, {len(classes)}, {len(scores)}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "predicted_class", "score"])
    writer.writerows([_text_cell(_file_name(f)), _text_cell(str(c)), f"{float(s):.6g}"]
                     for f, c, s in zip(files, classes, scores))
    try:
        write_text_atomic(path, buffer.getvalue())
    except OSError as err:
        raise DatasetError(f"cannot write the predictions to {path}: {err}.") from err


def _file_name(path: Path) -> str:
    """``path`` as text that encodes to UTF-8: bytes of another encoding become ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _text_cell(text: str) -> str:
    """``text``, prefixed with ``'`` when it starts like a spreadsheet formula."""
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text
