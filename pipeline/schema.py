"""The job config's keys, each declared by the estimator parameter (or job setting) it sets.

A key is a :class:`Param` (its default is the owner's ``__init__`` default, its type, choices and range
are the owner's ``_parameter_constraints``) or a :class:`Choice` of a class by name (``model``,
``filters.method``). :data:`SCHEMA` nests them by config section; :mod:`pipeline.config` derives the
defaults and the validation from it, and :func:`build_model` / :func:`build_pixel_model` build the
estimators from a resolved config through the same table, so no setting is written down twice.
"""

import inspect
from dataclasses import dataclass
from typing import ClassVar

from features import (ConvReLUPool, ExtremePointFilters, GaussianFilters, KMeansFilters, PatchWhitener,
                      RandomPatchFilters)
from features.compute_dtype import resolve_compute_dtype
from features.parameters import N_JOBS, NON_NEGATIVE_INT, StrOptions

from .baselines import BackpropNetwork, ClosedFormNetwork, CuttingPlaneNetwork, LeastSquaresClassifier
from .cached_stages import FeatureStorage
from .classifier import ConvexRFClassifier
from .data_source import DataSource
from .readout import L1OutputLayer

MODELS = {"convex_rf": ConvexRFClassifier, "least_squares": LeastSquaresClassifier, "backprop": BackpropNetwork,
          "cutting_plane": CuttingPlaneNetwork, "closed_form": ClosedFormNetwork}
FILTER_BANKS = {"extreme_point": ExtremePointFilters, "random_patches": RandomPatchFilters,
                "kmeans": KMeansFilters, "gaussian": GaussianFilters}


@dataclass(frozen=True)
class JobSettings:
    """The config's top-level settings besides ``model``.

    seed : seeds the data splits, the patch sampling and the baselines' initialisation
    n_jobs : joblib workers of the filter stage and the cutting plane (-1: all cores)
    ridge_readout : also fit a ridge read-out on the same features, for comparison
    """

    seed: int = 0
    n_jobs: int = 1
    ridge_readout: bool = False

    _parameter_constraints: ClassVar[dict] = {"seed": [NON_NEGATIVE_INT], "n_jobs": N_JOBS,
                                              "ridge_readout": ["boolean"]}


@dataclass(frozen=True)
class Param:
    """A config key that sets parameter ``name`` of ``owner``."""

    owner: type
    name: str

    @property
    def default(self):
        return inspect.signature(self.owner).parameters[self.name].default

    @property
    def constraints(self):
        return self.owner._parameter_constraints[self.name]


@dataclass(frozen=True)
class Choice:
    """A config key that picks one of ``options`` (name -> class) by name."""

    options: dict
    default: str

    @property
    def constraints(self):
        return [StrOptions(set(self.options))]


def params_of(owner, exclude=()):
    """``{name: Param}`` for every parameter of ``owner`` but ``exclude``, in signature order."""
    return {name: Param(owner, name) for name in inspect.signature(owner).parameters if name not in exclude}


# Parameters that the job sets itself (from other keys, or to fixed values) rather than a config key.
_FEATURE_MAP_EXCLUDED = ("patch_size", "n_patches", "whitener", "filter_bank", "image_shape", "random_state",
                         "verbose")

SCHEMA = {
    "model": Choice(MODELS, "convex_rf"),
    **params_of(JobSettings),
    "data": {**params_of(DataSource), "horizontal_flips": Param(ConvexRFClassifier, "horizontal_flips")},
    "patches": {"size": Param(ConvReLUPool, "patch_size"), "count": Param(ConvReLUPool, "n_patches"),
                **params_of(PatchWhitener)},
    "filters": {"method": Choice(FILTER_BANKS, "extreme_point"), "count": Param(RandomPatchFilters, "n_filters"),
                **params_of(ExtremePointFilters, exclude=("n_jobs", "verbose"))},
    "features": {**params_of(ConvReLUPool, exclude=_FEATURE_MAP_EXCLUDED), **params_of(FeatureStorage)},
    "output": params_of(L1OutputLayer, exclude=("warm_start", "verbose")),
    # The other models of the paper's Table 1, on raw pixels in [0, 1] (model: ...).
    "backprop": params_of(BackpropNetwork, exclude=("random_state", "verbose", "image_shape")),
    "cutting_plane": params_of(CuttingPlaneNetwork, exclude=("random_state", "n_jobs", "image_shape")),
    "closed_form": params_of(ClosedFormNetwork, exclude=("image_shape",)),
}


def owned(config, section, owner):
    """``{parameter: value}`` of ``config[section]``'s keys that set parameters of ``owner``."""
    return {setting.name: config[section][key] for key, setting in SCHEMA[section].items()
            if isinstance(setting, Param) and setting.owner is owner}


def data_source(config):
    """The :class:`pipeline.data_source.DataSource` of ``config["data"]``."""
    return DataSource(**owned(config, "data", DataSource))


def feature_storage(config):
    """The :class:`pipeline.cached_stages.FeatureStorage` of ``config["features"]``."""
    return FeatureStorage(**owned(config, "features", FeatureStorage))


def build_filter_bank(config):
    """The filter bank of ``filters.method``: extreme points, or one to compare them with."""
    bank = FILTER_BANKS[config["filters"]["method"]]
    if bank is ExtremePointFilters:
        return bank(**owned(config, "filters", bank), n_jobs=config["n_jobs"], verbose=1)
    return bank(n_filters=config["filters"]["count"], random_state=config["seed"])


def build_model(config):
    """The :class:`pipeline.ConvexRFClassifier` that a job config describes.

    ``features.compute_dtype: auto`` is resolved here, once (:func:`features.feature_map.resolve_compute_dtype`):
    every block of images, also on workers, is computed in one dtype, and the stage key names it.
    """
    settings = {**owned(config, "patches", ConvReLUPool), **owned(config, "features", ConvReLUPool)}
    settings["compute_dtype"] = resolve_compute_dtype(settings["compute_dtype"], settings["device"])
    feature_map = ConvReLUPool(**settings, whitener=PatchWhitener(**owned(config, "patches", PatchWhitener)),
                               filter_bank=build_filter_bank(config), random_state=config["seed"], verbose=1)
    output_layer = L1OutputLayer(**owned(config, "output", L1OutputLayer))
    return ConvexRFClassifier(features=feature_map, output_layer=output_layer, **owned(config, "data", ConvexRFClassifier))


def build_pixel_model(config):
    """The estimator of ``config["model"]`` (not ``convex_rf``), from its config section."""
    model = MODELS[config["model"]]
    settings = owned(config, config["model"], model) if config["model"] in SCHEMA else {}
    extra = {BackpropNetwork: {"random_state": config["seed"], "verbose": 1},
             CuttingPlaneNetwork: {"random_state": config["seed"], "n_jobs": config["n_jobs"]}}.get(model, {})
    return model(**settings, **extra)
