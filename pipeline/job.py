"""The Convex-RF training job (Algorithm 2 of method.md), stage by stage, top to bottom.

    data -> whitening (sample, normalise, ZCA) -> filters (extreme points) -> features (conv, ReLU, pool)
         -> output layer (SPGL1) -> test features -> evaluation

The same job trains the other models of the paper's Table 1 on raw pixels (``model: least_squares |
backprop | cutting_plane | closed_form``) as one cached stage: data -> model -> evaluation.

The model is the scikit-learn estimator :class:`pipeline.classifier.ConvexRFClassifier` built from the
config; its ``fit`` runs the stages through :class:`pipeline.stages.CachedStages`, which caches each one in
``OUT/cache`` under a key of its settings and its inputs' keys, so a re-run (also after a kill) skips
finished stages and a changed setting re-runs that stage and those after it.
"""

import json
import resource
import time
from pathlib import Path

import numpy as np

from data import load_splits, stratified_split, stratified_subsample
from features.extreme_points import ExtremePointFilters
from features.feature_map import ConvReLUPool, compute_dtype_report, resolve_compute_dtype
from features.filter_banks import GaussianFilters, KMeansFilters, RandomPatchFilters
from features.whitening import PatchWhitener

from .cache import remove_stale_temporaries, stage_key, write_text_atomic
from .backprop import BackpropNetwork
from .classifier import ConvexRFClassifier
from .closed_form import ClosedFormNetwork, WhiteningError
from .config import ConfigError, check_against_images
from .cutting_plane import CuttingPlaneNetwork
from .evaluation import classification_metrics
from .least_squares import LeastSquaresClassifier
from .model_io import save_model
from .output_layer import L1OutputLayer
from .ridge import ridge_readout as fit_ridge_readout
from .stages import CachedStages


def train(config, out_dir, log=print):
    """Run the whole job; write ``model.npz`` / ``model.json`` and ``metrics.json`` to ``out_dir``.

    ``config["model"]`` picks the model: ``convex_rf`` (the staged pipeline) or one of the other models
    of the paper's Table 1 on raw pixels (:func:`build_pixel_model`). Returns the metrics dict.
    """
    out_dir = Path(out_dir)
    if remove_stale_temporaries(out_dir):
        log(f"[resume] removed temporary files of an interrupted run in {out_dir}")
    seed = config["seed"]
    start = time.perf_counter()
    train_set, test_set = load_data(config["data"], seed)
    problems = check_against_images(config, train_set.image_shape, len(train_set))
    if problems:
        raise ConfigError(problems)
    evaluated_on = "test" if config["data"]["validation_fraction"] is None else "validation"
    log(f"[data] {len(train_set)} training and {len(test_set)} {evaluated_on} images of shape "
        f"{train_set.image_shape}, {len(train_set.classes)} classes")
    feature_config = config["features"]
    stages = CachedStages(out_dir / "cache", stage_key(config["data"], seed), log,
                          storage=feature_config["storage"], dtype=feature_config["dtype"],
                          n_jobs=feature_config["n_jobs"], scheduler=feature_config["scheduler"])
    stages.seconds["data"] = round(time.perf_counter() - start, 3)

    fit = fit_convex_rf if config["model"] == "convex_rf" else fit_pixel_model
    model, (train_predictions, test_predictions), details = fit(config, train_set, test_set, stages, log)
    start = time.perf_counter()
    train_metrics, test_metrics = (classification_metrics(split.labels, predictions, np.asarray(train_set.classes))
                                   for split, predictions in ((train_set, train_predictions),
                                                              (test_set, test_predictions)))
    stages.seconds["evaluate"] = round(stages.seconds.pop("evaluate", 0.0) + time.perf_counter() - start, 3)
    metrics = {
        "model": config["model"],
        f"{evaluated_on}_accuracy": test_metrics["accuracy"],
        "evaluated_on": evaluated_on,
        "train_accuracy": train_metrics["accuracy"],
        "n_train": len(train_set),
        **details,
        "per_class_accuracy": test_metrics["per_class_accuracy"],
        "confusion_matrix": test_metrics["confusion_matrix"],
        "classes": list(train_set.classes),
        "stage_seconds": stages.seconds,
        "peak_rss_mb": peak_rss_mb(),
        "config": config,
    }
    save_model(model, out_dir, config=config)
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    log(f"train accuracy: {metrics['train_accuracy']:.4f}")
    log(f"{evaluated_on} accuracy: {test_metrics['accuracy']:.4f}")
    return metrics


def fit_convex_rf(config, train_set, test_set, stages, log):
    """Algorithm 2 through the cached stages. Returns the model, the (train, test) predicted label
    indices and the metrics particular to Convex-RF (filters, features, output layer, ridge read-out)."""
    classes = np.asarray(train_set.classes)
    compute = compute_dtype_report(config["features"]["compute_dtype"], config["features"]["device"])
    log(f"[features] compute dtype {compute['used']} ({compute['reason']})")
    model = build_model(config).fit(train_set.images, classes[train_set.labels], stages=stages)
    filter_bank, output_layer = model.features_.filter_bank_, model.output_layer_
    certificates = extreme_point_certificates(filter_bank)
    summary = f"[filters] {len(filter_bank.filters_)} {config['filters']['method']} filters"
    if certificates:
        summary += (f"; {certificates['n_inside_hull']} patches inside the hull dropped; worst relative "
                    f"optimality gap {certificates['max_relative_gap']:.2e}")
    log(summary)
    train_features = stages.outputs["features"]
    test_features = stages.transform("test_features", model.features_, test_set.images, after="features")
    n_used = int(np.count_nonzero(np.any(output_layer.coef_ != 0, axis=1)))
    log(f"[output] beta = {output_layer.beta_:.4g} (beta_max {output_layer.beta_max_:.4g}), "
        f"{n_used} of {output_layer.coef_.shape[0]} features used"
        f"{' (least-squares refit on them)' if output_layer.refit else ''}, {output_layer.n_iter_} SPGL1 iterations")
    start = time.perf_counter()
    predictions = tuple(np.searchsorted(classes, output_layer.predict(features))
                        for features in (train_features, test_features))
    ridge = (ridge_readout(train_features, train_set.labels, test_features, test_set.labels, config["seed"], log)
             if config["ridge_readout"] else None)
    stages.seconds["evaluate"] = round(time.perf_counter() - start, 3)
    details = {
        "n_filters": len(filter_bank.filters_),
        "filter_method": config["filters"]["method"],
        **certificates,
        "n_features": int(train_features.shape[1]),
        "n_features_used": n_used,
        "features_compute_dtype": compute,
        "beta": float(output_layer.beta_),
        "beta_max": float(output_layer.beta_max_),
        **({"ridge_readout": ridge} if ridge else {}),
    }
    return model, predictions, details


def fit_pixel_model(config, train_set, test_set, stages, log):
    """One of the other Table-1 models on raw pixels, fitted as one cached stage. Returns the model, the
    (train, test) predicted label indices and its metrics (neurons, objective, cutting-plane figures)."""
    classes = np.asarray(train_set.classes)
    try:
        model = stages.fit(config["model"], build_pixel_model(config), train_set.images, classes[train_set.labels])
    except WhiteningError as error:
        raise ConfigError([f"model closed_form: {error}"]) from None
    start = time.perf_counter()
    predictions = tuple(np.searchsorted(classes, model.predict(split.images)) for split in (train_set, test_set))
    stages.seconds["evaluate"] = round(time.perf_counter() - start, 3)
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


# --- stages -------------------------------------------------------------------------------------

def load_data(data_config, seed):
    """Load (train, test) :class:`data.ImageDataset` splits, subsampled when the config asks.

    With ``validation_fraction`` the second split is a seeded stratified part of the training set
    instead (the test set is not touched): tune on it, and report the test set once at the end.
    """
    train_set, test_set = load_splits(
        data_config["name"], data_config["root"], download=data_config["download"],
        train_root=data_config["train_root"], test_root=data_config["test_root"],
        test_fraction=data_config["test_fraction"], seed=seed)
    if data_config["n_train"] is not None:
        train_set = stratified_subsample(train_set, data_config["n_train"], seed)
    if data_config["n_test"] is not None:
        test_set = stratified_subsample(test_set, data_config["n_test"], seed + 1)
    if data_config["validation_fraction"] is not None:
        return stratified_split(train_set, data_config["validation_fraction"], seed + 2)
    return train_set, test_set


def ridge_readout(train_features, train_labels, eval_features, eval_labels, seed, log):
    """:func:`pipeline.ridge.ridge_readout` on the same features, for comparison with the l1 output layer;
    None (and a log line) for features on disk."""
    if not isinstance(train_features, np.ndarray):
        log("[evaluate] ridge read-out skipped: the features are on disk")
        return None
    result = fit_ridge_readout(train_features, train_labels, eval_features, eval_labels, seed)
    log(f"[evaluate] ridge read-out (alpha {result['alpha']:.3g}): accuracy {result['accuracy']:.4f}")
    return result


def build_pixel_model(config):
    """The estimator of ``config["model"]`` (not ``convex_rf``), from its config section."""
    name, seed = config["model"], config["seed"]
    settings = config.get(name, {})
    if name == "least_squares":
        return LeastSquaresClassifier()
    if name == "closed_form":
        return ClosedFormNetwork(beta=settings["beta"])
    if name == "cutting_plane":
        return CuttingPlaneNetwork(**settings, n_jobs=config["n_jobs"])
    return BackpropNetwork(**settings, random_state=seed, verbose=1)


def build_model(config):
    """The :class:`ConvexRFClassifier` that a job config describes (one estimator per config section)."""
    patches, features = config["patches"], config["features"]
    whitener = PatchWhitener(eps=patches["eps"], normalize=patches["normalize"], zca=patches["zca"],
                             zca_eps=patches["zca_eps"])
    feature_map = ConvReLUPool(
        patch_size=patches["size"], n_patches=patches["count"], whitener=whitener, filter_bank=build_filter_bank(config),
        stride=features["stride"], pooling=features["pooling"], grid=features["grid"],
        memory_mb=features["memory_mb"], device=features["device"],
        # "auto" resolved here, once: every block (also on workers) in one dtype, and the stage key names it
        compute_dtype=resolve_compute_dtype(features["compute_dtype"], features["device"]),
        two_sided=features["two_sided"], threshold=features["threshold"], random_state=config["seed"], verbose=1)
    return ConvexRFClassifier(features=feature_map, output_layer=L1OutputLayer(**config["output"]))


def extreme_point_certificates(filter_bank):
    """Patch count, hull and certificate figures of extreme-point filters ({} for other banks)."""
    if not isinstance(filter_bank, ExtremePointFilters):
        return {}
    return {"n_patches": len(filter_bank.residual_norms_), "n_inside_hull": int(filter_bank.n_inside_hull_),
            "max_relative_gap": float(filter_bank.max_relative_gap_),
            "certification_rounds": int(filter_bank.n_rounds_)}


def build_filter_bank(config):
    """The filter bank of ``filters.method``: extreme points, or one to compare them with."""
    filters, seed = config["filters"], config["seed"]
    method, count = filters["method"], filters["count"]
    if method == "extreme_point":
        return ExtremePointFilters(
            n_candidates=filters["n_candidates"], hull_tol=filters["hull_tol"], use_bias=filters["use_bias"],
            n_jobs=config["n_jobs"], batch_size=filters["batch_size"], scheduler=filters["scheduler"], verbose=1)
    if method == "kmeans":
        return KMeansFilters(n_filters=count, random_state=seed)
    return {"random_patches": RandomPatchFilters, "gaussian": GaussianFilters}[method](count, random_state=seed)


def peak_rss_mb():
    """Peak resident memory in MiB of this process and of its largest finished child (joblib workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)
