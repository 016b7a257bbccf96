"""Job configuration: YAML files, ``--set key=value`` overrides, defaults and validation.

Every key, its default, type, choices and range come from :data:`pipeline.schema.SCHEMA` (the estimators'
own parameters); a config file only states what differs from the defaults. Unknown keys, wrong types and
impossible values are all reported at once, before any work starts.
"""

import difflib
from pathlib import Path

import yaml
from sklearn.utils._param_validation import make_constraint

from .schema import SCHEMA, build_model, data_source


class ConfigError(ValueError):
    """One or more problems in a job configuration; the message lists all of them."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


def defaults(schema=SCHEMA):
    """The configuration with every key at its default (a new nested dict)."""
    return {key: defaults(item) if isinstance(item, dict) else item.default for key, item in schema.items()}


def load_config(path=None, overrides=(), data_root=None):
    """Resolve a full configuration.

    Parameters
    ----------
    path : YAML file or None (defaults only)
    overrides : iterable of ``"dotted.key=value"`` strings, the value parsed as YAML
    data_root : str or None, sets ``data.root``

    Returns
    -------
    dict with every key of :data:`pipeline.schema.SCHEMA`, validated.
    """
    config = defaults()
    problems = []
    if path is not None:
        problems += _merge(config, _read_yaml(path), SCHEMA, prefix="")
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            problems.append(f"--set {override!r}: expected key=value, e.g. --set patches.count=2000")
            continue
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as error:
            problems.append(f"--set {override!r}: the value is not valid YAML ({error.problem}); quote text, "
                            "e.g. --set 'data.name=\"...\"'")
            continue
        problems += _merge(config, _nest(key.strip().split("."), parsed), SCHEMA, prefix="")
    if data_root is not None:
        config["data"]["root"] = str(data_root)
    problems += validate(config)
    if problems:
        raise ConfigError(problems)
    return config


def _read_yaml(path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file {path} {'is a folder' if path.is_dir() else 'does not exist'}: give a "
                           "YAML file, e.g. --config configs/digits.yaml"])
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError([f"{path} is not valid YAML: {error}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): save it as "
                           "UTF-8 YAML"]) from None
    except OSError as error:
        raise ConfigError([f"config file {path} cannot be read ({error.strerror}): give this user read "
                           "access to it"]) from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError([f"{path} must hold a mapping of settings, not a {type(content).__name__}"])
    return content


def _nest(keys, value):
    for key in reversed(keys):
        value = {key: value}
    return value


def _merge(config, updates, schema, prefix):
    """Merge ``updates`` into ``config`` in place, numbers written as text (YAML 1.1 reads ``1e-4`` as a
    string) read as numbers where the key takes one; return the problems with unknown keys."""
    problems = []
    for key, value in updates.items():
        name = f"{prefix}{key}"
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            problems.append(f"unknown key {name}{hint}")
        elif isinstance(schema[key], dict):
            if isinstance(value, dict):
                problems += _merge(config[key], value, schema[key], prefix=f"{name}.")
            else:
                problems.append(f"{name} must be a mapping of settings, got {value!r}")
        else:
            config[key] = _as_number(value, schema[key].constraints)
    return problems


def _as_number(value, constraints):
    """``value`` as a float if it is text that spells one and the key takes no text."""
    if not isinstance(value, str) or any(make_constraint(c).is_satisfied_by("text") for c in constraints):
        return value
    try:
        return float(value)
    except ValueError:
        return value


def validate(config):
    """Return every problem with a resolved configuration: each key against its constraints, then
    what the estimators and the data source check across keys."""
    problems = [problem for name, setting, value in _flat(config, SCHEMA)
                for problem in _problems(name, setting.constraints, value)]
    if problems:
        return problems
    problems = [f"{section}.device is cuda but torch finds no CUDA device here: use cpu"
                for section in ("features", "backprop") if config[section]["device"] == "cuda" and not _cuda_available()]
    if problems:  # building the model would calibrate its compute dtype on the missing device
        return problems
    problems += data_source(config).problems()
    if config["data"]["horizontal_flips"] and config["model"] != "convex_rf":
        problems.append(f"data.horizontal_flips augments the Convex-RF output layer's rows; model "
                        f"{config['model']} trains on the images alone: set it to false")
    try:
        build_model(config).output_layer.check_params()
    except ValueError as error:
        problems.append(f"output: {error}")
    return problems


def _flat(config, schema, prefix=""):
    """``(dotted name, setting, value)`` of every key."""
    for key, setting in schema.items():
        if isinstance(setting, dict):
            yield from _flat(config[key], setting, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", setting, config[key]


def _problems(name, constraints, value):
    """[] if ``value`` satisfies one of ``constraints``, else the one message that says what it must be."""
    constraints = [make_constraint(c) for c in constraints]
    allows_bool = any(c.is_satisfied_by(True) and c.is_satisfied_by(False) and not c.is_satisfied_by(2)
                      for c in constraints)
    if (not isinstance(value, bool) or allows_bool) and any(c.is_satisfied_by(value) for c in constraints):
        return []
    shown = [str(c) for c in constraints if not c.hidden]
    expected = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
    return [f"{name} must be {expected}, got {value!r}"]


def _cuda_available():
    import torch

    return torch.cuda.is_available()


def check_against_images(config, image_shape, n_images):
    """Problems that need the data (the patch and the pooling grid against the images, the patch count
    against the patch positions): the feature map's own checks, as a list of messages."""
    if config["model"] != "convex_rf":
        return []
    try:
        build_model(config).features.check_images(image_shape, n_images)
    except ValueError as error:
        return [str(error)]
    return []
