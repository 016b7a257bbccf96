"""The model-file tree: a fitted estimator as nested JSON nodes (and arrays), and back, checked node by node.

An estimator is saved as ``{"type": "estimator", "class", "params", "attributes"}``, where ``params`` are
``get_params(deep=False)`` and ``attributes`` the fitted state (public names ending in ``_``). Every value
is a node tagged with its type (``none``, ``bool``, ``int``, ``float``, ``str``, ``numpy`` scalar with its
dtype, ``list``, ``tuple``, ``array`` with its npz key, ``estimator``), so it comes back as the same type.
Non-finite floats are stored as the strings ``"nan"``, ``"inf"``, ``"-inf"``.
"""

import math

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import InvalidParameterError

_SCALAR_TYPES = (bool, int, float, str)
_NUMPY_KINDS = "biufU"  # numpy scalar kinds that JSON holds exactly: bool, ints, floats, str


class ModelFileError(ValueError):
    """A model cannot be saved or loaded; the message names the file, the problem and the remedy."""


def encode(value, path, arrays, registry, *, param):
    """The manifest node of ``value``; arrays go into ``arrays`` under the key ``path``."""
    if isinstance(value, BaseEstimator):
        return encode_estimator(value, path, arrays, registry)
    if isinstance(value, np.ndarray) and not param:
        if value.dtype.hasobject:
            raise ModelFileError(f"cannot save attribute {path!r}: object arrays cannot be saved safely "
                                 "(loading them needs pickle); store a numeric or string array instead")
        if not all_finite(value):
            raise ModelFileError(f"cannot save attribute {path!r}: it holds NaN or infinite values (a "
                                 "degenerate fit?); a model that predicts NaN is not saved")
        arrays[path] = value
        return {"type": "array", "key": path}
    if type(value) in (list, tuple):
        items = [encode(item, f"{path}/{i}", arrays, registry, param=param)
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


def encode_estimator(estimator, path, arrays, registry):
    name = type(estimator).__name__
    if registry.get(name) is not type(estimator):
        where = f"{path!r}" if path else "the estimator"
        raise ModelFileError(f"cannot save {where}: class {name} is not in the model registry "
                             f"(allowed: {sorted(registry)}); add it to the registry")
    prefix = f"{path}/" if path else ""
    params = estimator.get_params(deep=False)
    fitted = {key: value for key, value in vars(estimator).items()
              if is_fitted_name(key) and key not in params}
    return {
        "type": "estimator",
        "class": name,
        "params": {key: encode(value, prefix + key, arrays, registry, param=True)
                   for key, value in params.items()},
        "attributes": {key: encode(value, prefix + key, arrays, registry, param=False)
                       for key, value in fitted.items()},
    }


def is_fitted_name(name):
    """scikit-learn's convention for fitted state: ``coef_``, ``classes_``, not ``_private``."""
    return name.isidentifier() and name.endswith("_") and not name.startswith("_")


def _json_scalar(value):
    """``value`` with non-finite floats as the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def all_finite(array):
    """Whether a numeric ``array`` holds no NaN or infinity (arrays of other dtypes always do)."""
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())




class Decoder:
    """Rebuilds values from manifest nodes (see :func:`encode`), checking the tree as it goes.

    Every node must have exactly its type's fields; every estimator's class must be in the registry,
    its parameters must satisfy the class's ``_parameter_constraints`` and its fitted state must be
    what ``fitted_states`` expects of the class.
    """

    def __init__(self, arrays, registry, fitted_states, json_path, device):
        self.arrays, self.registry, self.json_path, self.device = arrays, registry, json_path, device
        self.fitted_states = fitted_states

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
            if not is_fitted_name(key):
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
        """The fitted state is the one the class has after ``fit`` (``fitted_states``)."""
        expected = self.fitted_states.get(type(estimator))
        if expected is None:
            return
        name = type(estimator).__name__
        present = {key for key in vars(estimator) if is_fitted_name(key)}
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
