"""Job configuration: defaults, YAML files, ``--set key=value`` overrides and validation.

Every hyperparameter of the pipeline lives here; a config file only states what differs from the
defaults. Unknown keys, wrong types and impossible values are all reported at once, before any work.
"""

import copy
import difflib
from pathlib import Path

import yaml

DEFAULTS = {
    "model": "convex_rf",           # convex_rf | least_squares | backprop | cutting_plane | closed_form
    "seed": 0,
    "n_jobs": 1,
    "ridge_readout": False,         # also fit a ridge read-out on the same features, for comparison
    "data": {
        "name": "digits",           # digits | mnist | fashion_mnist | cifar10 | image_folder
        "root": None,               # folder holding the dataset (overridden by --data-root)
        "train_root": None,         # image_folder: train folder, relative to root
        "test_root": None,          # image_folder: test folder, relative to root
        "download": False,          # let torchvision download MNIST / FashionMNIST / CIFAR10
        "test_fraction": 0.25,      # digits: held-out share of the stratified split
        "n_train": None,            # seeded stratified subsample of the training set (None: all)
        "n_test": None,             # same for the test set
        "validation_fraction": None,  # evaluate on this stratified share of the training set, not the test set
    },
    "patches": {
        "size": 5,                  # side k of the k x k patches
        "count": 1000,              # number P of sampled patches (= filters before hull pruning)
        "eps": 0.01,                # per-patch normalisation, variance units of [0, 1] pixels
        "normalize": True,          # normalise each patch (mean 0, variance 1 + eps)
        "zca": True,                # ZCA-whiten the patches
        "zca_eps": 0.1,             # ZCA regulariser, units of normalised-patch variance
    },
    "filters": {
        "method": "extreme_point",  # extreme_point | random_patches | kmeans | gaussian
        "count": None,              # filters of the other methods (None: one per patch; kmeans: a tenth)
        "n_candidates": 256,        # initial working set of the simplex QP per patch
        "hull_tol": 1.0e-6,         # relative residual under which a patch is inside the hull
        "use_bias": False,          # add Lemma 7's bias b_i to each response
        "batch_size": 256,          # patches per parallel task
        "scheduler": None,          # Dask scheduler address (tcp://host:8786) to solve on a cluster
    },
    "features": {
        "stride": 1,
        "pooling": "sum",           # max | sum | mean
        "grid": 2,                  # pool over grid x grid regions (2: the four quadrants)
        "memory_mb": 32,            # budget of one chunk of the feature computation (MiB)
        "device": "cpu",            # torch device: cpu | cuda
        "compute_dtype": "auto",    # filter product: float32 | bfloat16 | auto (bfloat16 where calibrated fast)
        "two_sided": False,         # also the responses to the negated filters (2F filters)
        "threshold": 0.0,           # soft threshold of the ReLU, in response standard deviations (0: plain)
        "storage": "memory",        # memory | disk (OUT/cache/*.npy, streamed by the output layer)
        "dtype": "float32",         # disk storage: float32 | float16
        "n_jobs": 1,                # joblib workers computing blocks of 256 images (torch threads otherwise)
        "scheduler": None,          # Dask scheduler address to compute the blocks on a cluster
    },
    "output": {
        "mode": "penalized",        # penalized (beta) | lasso (tau) | bpdn (sigma)
        "beta": 0.01,               # penalty; a fraction of beta_max when relative
        "relative": True,
        "tau": None,                # lasso: bound on the (group) l1 norm
        "sigma": None,              # bpdn: bound on the residual norm
        "group": True,              # rows of W penalised by their l2 norm (SPGL1's MMV mode)
        "standardize": True,        # standardise features with training statistics
        "max_iter": 2000,
        "tol": 1.0e-4,              # SPGL1 relative duality gap per LASSO solve
        "out_of_core": "working_set",  # disk features: working_set (certified) | stream (SPGL1 on the file)
        "working_set": 1024,        # smallest working set (then 2x the support) of the working-set solve
                                    # (features on disk, or more than this in memory)
        "refit": False,             # least squares on the features the l1 problem selected (relaxed lasso)
    },
    # The other models of the paper's Table 1, on raw pixels in [0, 1] (model: ...).
    "backprop": {                   # two-layer ReLU network, weight decay, Adam (torch)
        "n_hidden": 100,            # hidden neurons: match the convex model it is compared with
        "bias": True,
        "beta": 1.0e-3,             # weight decay, units of the summed squared loss
        "epochs": 20,
        "batch_size": 256,
        "learning_rate": 1.0e-3,
        "device": "cpu",            # cpu | cuda
    },
    "cutting_plane": {              # Algorithm 1, one network per class
        "beta": 0.01,               # l1 penalty of the output weights; a fraction of beta_max when relative
        "relative": True,
        "bias": True,               # neurons with biases and a free output offset (dual: 1^T v = 0)
        "seed_extreme_points": True,  # start from the extreme-point neurons of the training images
        "max_rounds": 50,           # rounds per class
        "tol": 1.0e-3,              # relative dual violation accepted as none
    },
    "closed_form": {                # Theorem 15 on whitened pixels (needs n_train <= pixels' rank)
        "beta": 1.0,                # weight decay (absolute; a class keeps its neuron while beta < sqrt(n_k))
    },
}

# Types accepted for keys whose default is None (any numeric default also accepts int for float).
NULLABLE_TYPES = {
    "data.root": (str,), "data.train_root": (str,), "data.test_root": (str,),
    "data.n_train": (int,), "data.n_test": (int,), "data.validation_fraction": (float,), "filters.scheduler": (str,), "features.scheduler": (str,),
    "filters.count": (int,),
    "output.tau": (int, float), "output.sigma": (int, float),
}

CHOICES = {
    "model": ("convex_rf", "least_squares", "backprop", "cutting_plane", "closed_form"),
    "backprop.device": ("cpu", "cuda"),
    "data.name": ("digits", "mnist", "fashion_mnist", "cifar10", "image_folder"),
    "filters.method": ("extreme_point", "random_patches", "kmeans", "gaussian"),
    "features.pooling": ("max", "sum", "mean"),
    "features.device": ("cpu", "cuda"),
    "features.compute_dtype": ("float32", "bfloat16", "auto"),
    "features.storage": ("memory", "disk"),
    "features.dtype": ("float32", "float16"),
    "output.mode": ("penalized", "lasso", "bpdn"),
    "output.out_of_core": ("working_set", "stream"),
}


class ConfigError(ValueError):
    """One or more problems in a job configuration; the message lists all of them."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


def load_config(path=None, overrides=(), data_root=None):
    """Resolve a full configuration.

    Parameters
    ----------
    path : YAML file or None (defaults only)
    overrides : iterable of ``"dotted.key=value"`` strings, the value parsed as YAML
    data_root : str or None, sets ``data.root``

    Returns
    -------
    dict with every key of :data:`DEFAULTS`, validated.
    """
    config = copy.deepcopy(DEFAULTS)
    problems = []
    if path is not None:
        problems += _merge(config, _read_yaml(path), prefix="")
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            problems.append(f"--set {override!r}: expected key=value, e.g. --set patches.count=2000")
            continue
        problems += _merge(config, _nest(key.strip().split("."), parse_value(value)), prefix="")
    if data_root is not None:
        config["data"]["root"] = str(data_root)
    problems += validate(config)
    if problems:
        raise ConfigError(problems)
    return config


def parse_value(text):
    """A ``--set`` value as YAML, except that numbers like ``1e-4`` (a string to YAML 1.1) are floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _read_yaml(path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file {path} does not exist"])
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError([f"{path} is not valid YAML: {error}"]) from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError([f"{path} must hold a mapping of settings, not a {type(content).__name__}"])
    return content


def _nest(keys, value):
    for key in reversed(keys):
        value = {key: value}
    return value


def _merge(config, updates, prefix):
    """Merge ``updates`` into ``config`` in place; return the problems with unknown keys."""
    problems = []
    for key, value in updates.items():
        name = f"{prefix}{key}"
        if key not in config:
            close = difflib.get_close_matches(str(key), list(config), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            problems.append(f"unknown key {name}{hint}")
        elif isinstance(config[key], dict):
            if isinstance(value, dict):
                problems += _merge(config[key], value, prefix=f"{name}.")
            else:
                problems.append(f"{name} must be a mapping of settings, got {value!r}")
        else:
            config[key] = value
    return problems


def validate(config):
    """Return every problem (types, choices, ranges) with a resolved configuration."""
    problems, mistyped = [], set()
    for name, value in _flatten(config).items():
        expected = _expected_types(name)
        if value is None and name in NULLABLE_TYPES:
            continue
        if isinstance(value, bool) != (bool in expected) or not isinstance(value, expected):
            problems.append(f"{name} must be {' or '.join(t.__name__ for t in expected)}, got {value!r}")
            mistyped.add(name)
        elif name in CHOICES and value not in CHOICES[name]:
            problems.append(f"{name} must be one of {', '.join(CHOICES[name])}, got {value!r}")
    return problems + _range_problems(config, mistyped)


def _expected_types(name):
    if name in NULLABLE_TYPES:
        return NULLABLE_TYPES[name]
    default = _flatten(DEFAULTS)[name]
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, float):
        return (int, float)
    return (type(default),)


def _flatten(config, prefix=""):
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


RANGES = {
    "n_jobs": (lambda v: v != 0, "must be a positive count or negative (joblib: -1 = all cores)"),
    "data.test_fraction": (lambda v: 0 < v < 1, "must lie in (0, 1)"),
    "data.n_train": (lambda v: v is None or v > 0, "must be positive"),
    "data.n_test": (lambda v: v is None or v > 0, "must be positive"),
    "data.validation_fraction": (lambda v: v is None or 0 < v < 1, "must lie in (0, 1)"),
    "patches.size": (lambda v: v >= 1, "must be at least 1"),
    "patches.count": (lambda v: v >= 2, "must be at least 2"),
    "patches.eps": (lambda v: v >= 0, "must be >= 0"),
    "patches.zca_eps": (lambda v: v >= 0, "must be >= 0"),
    "filters.count": (lambda v: v is None or v >= 1, "must be at least 1"),
    "filters.n_candidates": (lambda v: v >= 1, "must be at least 1"),
    "filters.hull_tol": (lambda v: v >= 0, "must be >= 0"),
    "filters.batch_size": (lambda v: v >= 1, "must be at least 1"),
    "features.stride": (lambda v: v >= 1, "must be at least 1"),
    "features.grid": (lambda v: v >= 1, "must be at least 1"),
    "features.threshold": (lambda v: v >= 0, "must be at least 0 (response standard deviations)"),
    "features.memory_mb": (lambda v: v > 0, "must be positive"),
    "features.n_jobs": (lambda v: v != 0, "must be a positive count or negative (joblib: -1 = all cores)"),
    "output.working_set": (lambda v: v >= 1, "must be at least 1"),
    "output.beta": (lambda v: v >= 0, "must be >= 0"),
    "output.tau": (lambda v: v is None or v >= 0, "must be >= 0"),
    "output.sigma": (lambda v: v is None or v >= 0, "must be >= 0"),
    "output.max_iter": (lambda v: v >= 1, "must be at least 1"),
    "output.tol": (lambda v: v > 0, "must be positive"),
    "backprop.n_hidden": (lambda v: v >= 1, "must be at least 1"),
    "backprop.beta": (lambda v: v >= 0, "must be >= 0"),
    "backprop.epochs": (lambda v: v >= 0, "must be >= 0"),
    "backprop.batch_size": (lambda v: v >= 1, "must be at least 1"),
    "backprop.learning_rate": (lambda v: v > 0, "must be positive"),
    "cutting_plane.beta": (lambda v: v >= 0, "must be >= 0"),
    "cutting_plane.max_rounds": (lambda v: v >= 1, "must be at least 1"),
    "cutting_plane.tol": (lambda v: v >= 0, "must be >= 0"),
    "closed_form.beta": (lambda v: v >= 0, "must be >= 0"),
}


def _range_problems(config, mistyped):
    problems = [f"{name} {message}, got {_get(config, name)!r}" for name, (ok, message) in RANGES.items()
                if name not in mistyped and not ok(_get(config, name))]
    if config["output"]["mode"] == "lasso" and config["output"]["tau"] is None:
        problems.append("output.mode is lasso: set output.tau (the bound on the l1 norm)")
    if config["output"]["mode"] == "bpdn" and config["output"]["sigma"] is None:
        problems.append("output.mode is bpdn: set output.sigma (the bound on the residual norm)")
    for key in ("features", "backprop"):
        if config[key]["device"] == "cuda" and not _cuda_available():
            problems.append(f"{key}.device is cuda but torch finds no CUDA device here: use cpu")
    if config["data"]["name"] == "image_folder" and not (config["data"]["train_root"]
                                                         and config["data"]["test_root"]):
        problems.append("data.name is image_folder: set data.train_root and data.test_root")
    return problems


def _cuda_available():
    import torch

    return torch.cuda.is_available()


def _get(config, name):
    for key in name.split("."):
        config = config[key]
    return config


def check_against_images(config, image_shape, n_images):
    """Problems that need the data: patch size vs image size, patch count vs available patches."""
    height, width, channels = image_shape
    if config["model"] == "closed_form" and n_images > height * width * channels:
        return [f"model closed_form whitens the training images, which needs at most as many images as "
                f"pixels ({height * width * channels}); got {n_images}: set data.n_train lower"]
    if config["model"] != "convex_rf":
        return []
    size = config["patches"]["size"]
    problems = []
    if size > min(height, width):
        problems.append(f"patches.size {size} is larger than the images ({height} x {width}): "
                        f"use at most {min(height, width)}")
        return problems
    stride = config["features"]["stride"]
    response_size = min(height - size, width - size) // stride + 1
    if config["features"]["grid"] > response_size:
        problems.append(f"features.grid {config['features']['grid']} is finer than the response map "
                        f"({response_size} positions along the shorter side)")
    available = n_images * (height - size + 1) * (width - size + 1)
    if config["patches"]["count"] > available:
        problems.append(f"patches.count {config['patches']['count']} exceeds the {available} distinct "
                        f"patch positions in the training images")
    return problems
