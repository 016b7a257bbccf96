"""The Convex-RF training job (Algorithm 2 of method.md), stage by stage, top to bottom.

    data -> whitening (sample, normalise, ZCA) -> filters (extreme points) -> features (conv, ReLU, pool)
         -> output (l1 output layer, SPGL1) -> test_features -> evaluate

:func:`train` loads the data, fits ``config["model"]`` with :func:`fit_convex_rf` (the stages above,
through :meth:`pipeline.ConvexRFClassifier.fit`) or :func:`fit_pixel_model` (one of the other models of
the paper's Table 1 on raw pixels, as one stage: data -> model -> evaluate), scores both splits and
writes the model and its metrics.
Every stage goes through :class:`pipeline.cached_stages.CachedStages`, which caches it in ``OUT/cache``
under a key of its settings and its inputs (data included), so a re-run (also after a kill) skips the
finished stages and a changed setting or changed data re-runs what depends on it.
"""

import resource
from pathlib import Path

import numpy as np

from data import DatasetError
from features import ExtremePointFilters
from features.compute_dtype import compute_dtype_report
from features.feature_map import EmptyFilterBankError

from .baselines import CuttingPlaneNetwork, WhiteningError
from .cached_stages import CachedStages
from .config import ConfigError, check_against_images
from .model_files import save_model
from .readout import ridge_readout as fit_ridge_readout
from .readout.path import path_records
from .reporting.metrics import classification_metrics
from .schema import build_model, build_pixel_model, data_source, feature_storage
from .storage.run_folder import RunFolder


def train(config, out_dir, log=print):
    """Run the whole job; write ``model.npz`` / ``model.json`` and ``metrics.json`` to ``out_dir``.

    ``config`` is a resolved configuration (:func:`pipeline.load_config`). Returns the metrics dict.
    """
    stages = CachedStages(Path(out_dir) / "cache", log, feature_storage(config))
    RunFolder(out_dir, log).check()  # a bad --out is refused before minutes of data loading
    with stages.timed("data"):  # before the run folder is made: bad data leaves nothing behind
        train_set, eval_set = load_checked_data(config, log)
    with RunFolder(out_dir, log) as folder:
        fit = fit_convex_rf if config["model"] == "convex_rf" else fit_pixel_model
        model, predictions, details = fit(config, train_set, eval_set, stages, log)
        # (the predictions are the fit's timed "evaluate" stage; scoring them is bookkeeping)
        classes = np.asarray(train_set.classes)
        scores = [classification_metrics(split.labels, predicted, classes)
                  for split, predicted in zip((train_set, eval_set), predictions)]
        metrics = run_metrics(config, train_set, scores, details, stages.seconds)
        save_model(model, folder, config=config, metrics=metrics)  # one group: never a mixed pair
    evaluated_on = metrics["evaluated_on"]
    log(f"train accuracy: {metrics['train_accuracy']:.4f}")
    log(f"{evaluated_on} accuracy: {metrics[f'{evaluated_on}_accuracy']:.4f}")
    return metrics


def load_checked_data(config, log):
    """The (train, evaluation) splits of the config's data, checked against the model's settings."""
    source = data_source(config)
    train_set, eval_set = source.load(config["seed"])
    check_trainable(train_set)
    problems = check_against_images(config, train_set.image_shape, len(train_set))
    if problems:
        raise ConfigError(problems)
    log(f"[data] {len(train_set)} training and {len(eval_set)} {source.evaluated_on} images of shape "
        f"{train_set.image_shape}, {len(train_set.classes)} classes")
    return train_set, eval_set


def check_trainable(train_set):
    """Raise DatasetError unless the training images hold two classes and are not all flat (one value each)."""
    present = [train_set.classes[label] for label in np.unique(train_set.labels)]
    if len(present) < 2:
        raise DatasetError(f"training needs images of at least 2 classes; the training set has only {present}: "
                           "add a sub-folder of images for every other class (ImageFolder: one per class)")
    flat = train_set.images.reshape(len(train_set), -1)
    if np.all(flat == flat[:, :1]):
        raise DatasetError(f"all {len(train_set)} training images are flat (every pixel of an image has one "
                           "value, e.g. all black): there is nothing to learn filters from; check the images "
                           "(blank exports, a wrong channel) and replace them")


def fit_convex_rf(config, train_set, eval_set, stages, log):
    """Algorithm 2 through the cached stages. Returns the model, the (train, evaluation) predicted label
    indices and the metrics particular to Convex-RF (filters, features, output layer, ridge read-out)."""
    classes = np.asarray(train_set.classes)
    compute = compute_dtype_report(config["features"]["compute_dtype"], config["features"]["device"])
    log(f"[features] compute dtype {compute['used']} ({compute['reason']})")
    try:
        model = build_model(config).fit(train_set.images, classes[train_set.labels], stages=stages)
    except EmptyFilterBankError as error:
        raise DatasetError(str(error)) from None
    log_filters(config, model.features_.filter_bank_, log)
    # the fit's own stage results, by their keys: nothing is computed again
    train_features = stages.transform("features", model.features_, model.training_images(train_set.images))
    train_labels, groups = model.training_labels(train_set.labels)
    eval_features = stages.transform("test_features", model.features_, eval_set.images)
    output_layer = model.output_layer_
    n_used = int(np.count_nonzero(np.any(output_layer.coef_ != 0, axis=1)))
    log(f"[output] beta = {output_layer.beta_:.4g} (beta_max {output_layer.beta_max_:.4g}), "
        f"{n_used} of {output_layer.coef_.shape[0]} features used{_refit_description(output_layer)}, "
        f"{output_layer.n_iter_} {output_layer.solver} iterations")
    if output_layer.path_ is not None:
        log(f"[output] beta chosen on held-out rows: {output_layer.beta_ratio_:.4g} of beta_max, after "
            f"{len(output_layer.path_)} penalties of the path")
    with stages.timed("evaluate"):
        n_train = len(train_set)  # the training images' rows; the mirrors of horizontal_flips follow them
        predictions = (np.searchsorted(classes, output_layer.predict(train_features)[:n_train]),
                       np.searchsorted(classes, output_layer.predict(eval_features)))
        ridge = (ridge_readout(train_features, train_labels, eval_features, eval_set.labels, config["seed"], log,
                               groups) if config["ridge_readout"] else None)
    details = {
        "n_filters": len(model.features_.filter_bank_.filters_),
        "filter_method": config["filters"]["method"],
        **extreme_point_certificates(model.features_.filter_bank_),
        "features_compute_dtype": compute,
        "n_features": int(train_features.shape[1]),
        "n_features_used": n_used,
        "beta": float(output_layer.beta_),
        "beta_max": float(output_layer.beta_max_),
        **({"beta_path": path_records(output_layer.path_)} if output_layer.path_ is not None else {}),
        **({"ridge_readout": ridge} if ridge else {}),
    }
    return model, predictions, details


def fit_pixel_model(config, train_set, eval_set, stages, log):
    """One of the other Table-1 models on raw pixels, fitted as one cached stage. Returns the model, the
    (train, evaluation) predicted label indices and its metrics (neurons, objective, cutting-plane figures)."""
    classes = np.asarray(train_set.classes)
    try:
        model = stages.fit(config["model"], build_pixel_model(config), train_set.images, classes[train_set.labels])
    except WhiteningError as error:
        raise ConfigError([f"model closed_form: {error}"]) from None
    with stages.timed("evaluate"):
        predictions = tuple(np.searchsorted(classes, model.predict(split.images)) for split in (train_set, eval_set))
    details = {"objective": float(model.objective_)}
    if hasattr(model, "n_neurons_"):
        details["n_neurons"] = model.n_neurons_
    if isinstance(model, CuttingPlaneNetwork):
        details.update(beta=float(model.beta_), n_seed_neurons=int(model.n_seeds_),
                       rounds_per_class=model.rounds_.tolist(), duality_gap=float(model.duality_gap_),
                       relative_duality_gap=float(model.duality_gap_ / model.objective_))
    log(f"[{config['model']}] objective {model.objective_:.6g}"
        + "".join(f", {key} {value}" for key, value in details.items() if key != "objective"))
    return model, predictions, details


def run_metrics(config, train_set, scores, details, seconds):
    """The metrics.json of a run: accuracies, the model's figures, timings, memory and the config."""
    evaluated_on = data_source(config).evaluated_on
    train_scores, eval_scores = scores
    return {
        "model": config["model"],
        f"{evaluated_on}_accuracy": eval_scores["accuracy"],
        "evaluated_on": evaluated_on,
        "train_accuracy": train_scores["accuracy"],
        "n_train": len(train_set),
        **details,
        "per_class_accuracy": eval_scores["per_class_accuracy"],
        "confusion_matrix": eval_scores["confusion_matrix"],
        "classes": list(train_set.classes),
        "stage_seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "config": config,
    }


def log_filters(config, filter_bank, log):
    """One line: the filter count, and for extreme points the hull and certificate figures."""
    certificates = extreme_point_certificates(filter_bank)
    summary = f"[filters] {len(filter_bank.filters_)} {config['filters']['method']} filters"
    if certificates:
        summary += (f"; {certificates['n_inside_hull']} patches inside the hull dropped; worst relative "
                    f"optimality gap {certificates['max_relative_gap']:.2e}")
    log(summary)


def _refit_description(output_layer):
    """How the output layer's kept features were refitted, for the log ("" without a refit)."""
    if not output_layer.refit:
        return ""
    if output_layer.refit_alpha:
        return f" (ridge refit on them, alpha {output_layer.refit_alpha:g})"
    return " (least-squares refit on them)"


def ridge_readout(train_features, train_labels, eval_features, eval_labels, seed, log, groups=None):
    """:func:`pipeline.ridge_readout` on the same features (and ``groups`` of rows), for comparison with the
    l1 output layer; None (and a log line) for features on disk."""
    if not isinstance(train_features, np.ndarray):
        log("[evaluate] ridge read-out skipped: the features are on disk")
        return None
    result = fit_ridge_readout(train_features, train_labels, eval_features, eval_labels, seed, groups=groups)
    log(f"[evaluate] ridge read-out (alpha {result['alpha']:.3g}): accuracy {result['accuracy']:.4f}")
    return result


def extreme_point_certificates(filter_bank):
    """Patch count, hull and certificate figures of extreme-point filters ({} for other banks)."""
    if not isinstance(filter_bank, ExtremePointFilters):
        return {}
    return {"n_patches": len(filter_bank.residual_norms_), "n_inside_hull": int(filter_bank.n_inside_hull_),
            "max_relative_gap": float(filter_bank.max_relative_gap_),
            "certification_rounds": int(filter_bank.n_rounds_)}


def peak_rss_mb():
    """Peak resident memory in MiB of this process and of its largest finished child (joblib workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)
