"""What a loaded model's fitted attributes must be: one :class:`FittedState` per estimator class.

The kinds (:data:`ARRAY`, :data:`INTEGER`, ...) describe one attribute each; a :class:`FittedState` lists
every fitted attribute of a class and a check of how they fit together. :mod:`pipeline.model_files`
gives the table of the convexrf estimators; :func:`pipeline.storage.model_io.load_model` checks a loaded
tree against it.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_IMAGE_VALUES = 2**26  # the largest image (H * W * C) that a loaded model may take



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
            and math.prod(value) <= MAX_IMAGE_VALUES)


def instance_of(*classes):
    """The kind of an attribute that holds an instance of one of ``classes`` (None allowed if listed)."""
    names = " or ".join("None" if cls is None else cls.__name__ for cls in classes)
    return Kind(f"a {names}", lambda value: type(value) in tuple(type(None) if c is None else c for c in classes))


ARRAY = Kind("a numeric array", lambda value: isinstance(value, np.ndarray) and value.dtype.kind in "biuf")
LABELS = Kind("a one-dimensional array", lambda value: isinstance(value, np.ndarray) and value.ndim == 1)
INTEGER = Kind("an integer", _is_integer)
REAL = Kind("a number", _is_real)
FLAG = Kind("a bool", lambda value: isinstance(value, (bool, np.bool_)))
IMAGE_SHAPE = Kind(f"an image shape (H, W, C) of at most {MAX_IMAGE_VALUES} values", _is_image_shape)
REALS = Kind("a list of numbers", lambda value: type(value) is list and all(map(_is_real, value)))
OPTIONAL_ARRAY = Kind("a numeric array or None", lambda value: value is None or ARRAY.test(value))
OPTIONAL_REAL = Kind("a number or None", lambda value: value is None or _is_real(value))
ARRAY_OR_REAL = Kind("a numeric array or a number", lambda value: ARRAY.test(value) or _is_real(value))
