"""Model files of convexrf's estimators: :func:`save_model` / :func:`load_model` over their allow-list.

The file format and its checks are :mod:`pipeline.storage.model_io`; this module names the classes that
a model file may contain (:data:`REGISTRY`, looked up by name, never imported by name) and the fitted
state each must have when loaded (:data:`FITTED_STATES`).
"""

from pathlib import Path

import numpy as np

from features import (ConvReLUPool, ExtremePointFilters, GaussianFilters, KMeansFilters, PatchWhitener,
                      RandomPatchFilters, ZCAWhitener)
from features.feature_map import output_size, region_edges

from .baselines import (BackpropNetwork, ClosedFormNetwork, CuttingPlaneNetwork,
                        LeastSquaresClassifier)
from .classifier import ConvexRFClassifier
from .readout import L1OutputLayer
from .storage import model_io
from .storage.fitted_state import (ARRAY, ARRAY_OR_REAL, FLAG, IMAGE_SHAPE, INTEGER, LABELS, OPTIONAL_ARRAY,
                                   OPTIONAL_REAL, REAL, REALS,
                                   FittedState, instance_of)
from .storage.model_io import JSON_NAME, ModelFileError

REGISTRY = {cls.__name__: cls for cls in (
    ZCAWhitener, PatchWhitener, ExtremePointFilters, RandomPatchFilters, KMeansFilters, GaussianFilters,
    ConvReLUPool, L1OutputLayer, ConvexRFClassifier, LeastSquaresClassifier, BackpropNetwork,
    CuttingPlaneNetwork, ClosedFormNetwork)}


def save_model(estimator, folder, *, config=None, metrics=None):
    """Save a fitted estimator as ``folder/model.npz`` + ``folder/model.json`` (see
    :func:`pipeline.storage.model_io.save_model`); ``config`` is stored in the manifest, ``metrics``
    written with them as ``folder/metrics.json``."""
    model_io.save_model(estimator, folder, registry=REGISTRY, config=config, metrics=metrics)


def load_model(folder, *, device="cpu"):
    """The fitted estimator saved in ``folder`` (see :func:`pipeline.storage.model_io.load_model`), its
    tree checked against :data:`FITTED_STATES`; estimators with a ``device`` parameter run on ``device``."""
    return model_io.load_model(folder, registry=REGISTRY, fitted_states=FITTED_STATES, device=device)


def load_run(folder, *, device="cpu"):
    """``(model, metrics)`` of a run folder of ``python run.py train``, both of one run (see
    :func:`pipeline.storage.model_io.load_run`), the model checked as by :func:`load_model`."""
    return model_io.load_run(folder, registry=REGISTRY, fitted_states=FITTED_STATES, device=device)


def load_classifier(folder, *, device="cpu"):
    """The fitted image classifier saved in ``folder`` (see :func:`load_model`), once it has classified
    a blank image of its input shape: arrays that do not fit together are refused here, not mid-run."""
    model = load_model(folder, device=device)
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


def _check_feature_map(feature_map):
    """The patch size and pooling grid, as set and as fitted, fit the fitted image shape (ValueError otherwise)."""
    height, width, _ = feature_map.image_shape_
    for name in ("patch_size", "grid"):
        value = getattr(feature_map, name)
        if value is not None and value != getattr(feature_map, f"{name}_"):
            raise ValueError(f"{name} {value} is not the fitted {name}_ {getattr(feature_map, f'{name}_')}")
    if not 1 <= feature_map.patch_size_ <= min(height, width):
        raise ValueError(f"patch_size_ {feature_map.patch_size_} does not fit {height} x {width} images")
    region_edges(output_size(min(height, width), feature_map.patch_size_, feature_map.stride), feature_map.grid_)


def _fitted_states(registry):
    """``{class: FittedState}`` of the convexrf estimators, as ``fit`` leaves them."""
    filter_banks = [registry[name] for name in ("ExtremePointFilters", "RandomPatchFilters", "KMeansFilters",
                                                "GaussianFilters")]
    bank = {"n_features_in_": INTEGER, "filters_": ARRAY, "bias_": ARRAY}
    network = {"image_shape_": IMAGE_SHAPE, "n_features_in_": INTEGER, "classes_": LABELS, "hidden_weights_": ARRAY,
               "hidden_bias_": ARRAY, "output_weights_": ARRAY, "output_bias_": ARRAY, "objective_": REAL}
    kinds = {
        "ZCAWhitener": {"n_features_in_": INTEGER, "mean_": ARRAY, "whitening_": ARRAY, "colouring_": ARRAY},
        "PatchWhitener": {"n_features_in_": INTEGER, "zca_": instance_of(registry["ZCAWhitener"], None)},
        "ExtremePointFilters": {**bank, "kept_": ARRAY, "residual_norms_": ARRAY, "relative_gaps_": ARRAY,
                                "support_sizes_": ARRAY, "n_inside_hull_": INTEGER, "max_relative_gap_": REAL,
                                "n_rounds_": INTEGER},
        "RandomPatchFilters": bank,
        "KMeansFilters": {**bank, "n_iter_": INTEGER},
        "GaussianFilters": bank,
        "ConvReLUPool": {"whitener_": instance_of(registry["PatchWhitener"]),
                         "filter_bank_": instance_of(*filter_banks), "weights_": ARRAY, "offset_": ARRAY,
                         "patch_size_": INTEGER, "grid_": INTEGER, "n_patches_": INTEGER,
                         "image_shape_": IMAGE_SHAPE, "n_features_in_": INTEGER},
        "L1OutputLayer": {"n_features_in_": INTEGER, "intercept_": ARRAY, "mean_": ARRAY_OR_REAL,
                          "scale_": ARRAY_OR_REAL, "n_rounds_": INTEGER, "beta_max_": REAL, "classes_": LABELS,
                          "l1_coef_": ARRAY, "coef_": ARRAY, "tau_": REAL, "dual_norm_": REAL, "beta_": REAL,
                          "n_iter_": INTEGER, "n_solves_": INTEGER, "converged_": FLAG,
                          "path_": OPTIONAL_ARRAY, "beta_ratio_": OPTIONAL_REAL},
        "ConvexRFClassifier": {"features_": instance_of(registry["ConvReLUPool"]),
                               "output_layer_": instance_of(registry["L1OutputLayer"]), "classes_": LABELS,
                               "n_features_in_": INTEGER},
        "LeastSquaresClassifier": {"image_shape_": IMAGE_SHAPE, "n_features_in_": INTEGER, "classes_": LABELS,
                                   "coef_": ARRAY, "intercept_": ARRAY, "objective_": REAL},
        "BackpropNetwork": {**network, "objective_history_": REALS},
        "CuttingPlaneNetwork": {**network, "beta_": REAL, "duality_gap_": REAL, "rounds_": ARRAY,
                                "n_seeds_": INTEGER},
        "ClosedFormNetwork": network,
    }
    checks = {"ConvReLUPool": _check_feature_map, "L1OutputLayer": lambda estimator: estimator.check_params()}
    return {registry[name]: FittedState(kinds[name], *([checks[name]] if name in checks else []))
            for name in kinds}


FITTED_STATES = _fitted_states(REGISTRY)
