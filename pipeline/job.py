"""The Convex-RF training job (Algorithm 2 of method.md), stage by stage, top to bottom.

    data -> patches (sample, normalise, ZCA) -> filters (extreme points) -> features (conv, ReLU, pool)
         -> output layer (SPGL1) -> evaluation

Each stage is cached in ``OUT/cache`` under a key of its settings and its inputs' keys, so a re-run
skips finished stages and a changed setting re-runs that stage and those after it.
"""

import json
import resource
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data import load_splits, stratified_subsample
from features.extreme_points import extreme_point_filters
from features.feature_map import conv_relu_pool
from features.patches import normalize_patches, sample_patches
from features.whitening import ZCAWhitener

from .cache import StageCache, save_npz_atomic, stage_key, write_text_atomic
from .config import ConfigError, check_against_images
from .evaluation import classification_metrics
from .output_layer import L1OutputLayer


def train(config, out_dir, log=print):
    """Run the whole job; write ``metrics.json``, ``filters.npz`` and ``output_layer.npz`` to ``out_dir``.

    Returns the metrics dict.
    """
    out_dir = Path(out_dir)
    cache = StageCache(out_dir / "cache")
    seed = config["seed"]
    timer = StageTimer(log)

    with timer("data"):
        train_set, test_set = load_data(config["data"], seed)
        problems = check_against_images(config, train_set.image_shape, len(train_set))
        if problems:
            raise ConfigError(problems)
        log(f"[data] {len(train_set)} training and {len(test_set)} test images of shape "
            f"{train_set.image_shape}, {len(train_set.classes)} classes")
    data_key = stage_key(config["data"], seed)

    with timer("patches"):
        patch_key = stage_key(data_key, config["patches"])
        patches, whitener = cached(cache, "patches", patch_key,
                                   lambda: sample_whitened_patches(train_set.images, config["patches"], seed),
                                   pack_patches, unpack_patches)
        log(f"[patches] {len(patches)} patches of dimension {patches.shape[1]}")

    with timer("filters"):
        filter_key = stage_key(patch_key, config["filters"])
        filters = cached(cache, "filters", filter_key,
                         lambda: compute_filters(patches, config["filters"], config["n_jobs"], log),
                         as_arrays, as_arrays)
        log(f"[filters] {len(filters['filters'])} filters; {int(filters['n_inside_hull'])} patches inside "
            f"the hull dropped; worst relative optimality gap {float(filters['max_relative_gap']):.2e}")

    with timer("features"):
        feature_key = stage_key(filter_key, config["features"])
        features = cached(cache, "features", feature_key,
                          lambda: {"train": feature_map(train_set.images, filters, whitener, config, "train"),
                                   "test": feature_map(test_set.images, filters, whitener, config, "test")},
                          as_arrays, as_arrays)
        log(f"[features] {features['train'].shape[1]} features per image")

    with timer("output"):
        layer = L1OutputLayer(**config["output"]).fit(features["train"], train_set.labels)
        log(f"[output] beta = {layer.beta_:.4g} (beta_max {layer.beta_max_:.4g}), "
            f"{int(np.count_nonzero(np.any(layer.coef_ != 0, axis=1)))} of {layer.coef_.shape[0]} "
            f"features used, {layer.n_iter_} SPGL1 iterations")

    with timer("evaluate"):
        train_metrics = classification_metrics(train_set.labels, layer.predict(features["train"]),
                                               train_set.classes)
        test_metrics = classification_metrics(test_set.labels, layer.predict(features["test"]),
                                              test_set.classes)

    metrics = {
        "test_accuracy": test_metrics["accuracy"],
        "train_accuracy": train_metrics["accuracy"],
        "n_filters": int(len(filters["filters"])),
        "n_patches": int(len(patches)),
        "n_inside_hull": int(filters["n_inside_hull"]),
        "max_relative_gap": float(filters["max_relative_gap"]),
        "certification_rounds": int(filters["rounds"]),
        "n_features": int(features["train"].shape[1]),
        "n_features_used": int(np.count_nonzero(np.any(layer.coef_ != 0, axis=1))),
        "beta": float(layer.beta_),
        "beta_max": float(layer.beta_max_),
        "per_class_accuracy": test_metrics["per_class_accuracy"],
        "confusion_matrix": test_metrics["confusion_matrix"],
        "classes": list(train_set.classes),
        "stage_seconds": timer.seconds,
        "peak_rss_mb": peak_rss_mb(),
        "config": config,
    }
    save_npz_atomic(out_dir / "filters.npz", {**filters, **pack_patches((patches, whitener))})
    save_npz_atomic(out_dir / "output_layer.npz", {
        "coef": layer.coef_, "intercept": layer.intercept_, "mean": layer.mean_, "scale": layer.scale_,
        "classes": np.asarray(train_set.classes)})
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    log(f"train accuracy: {metrics['train_accuracy']:.4f}")
    log(f"test accuracy: {metrics['test_accuracy']:.4f}")
    return metrics


# --- stages -------------------------------------------------------------------------------------

def load_data(data_config, seed):
    """Load (train, test) :class:`data.ImageDataset` splits, subsampled when the config asks."""
    train_set, test_set = load_splits(
        data_config["name"], data_config["root"], download=data_config["download"],
        train_root=data_config["train_root"], test_root=data_config["test_root"],
        test_fraction=data_config["test_fraction"], seed=seed)
    if data_config["n_train"] is not None:
        train_set = stratified_subsample(train_set, data_config["n_train"], seed)
    if data_config["n_test"] is not None:
        test_set = stratified_subsample(test_set, data_config["n_test"], seed + 1)
    return train_set, test_set


def sample_whitened_patches(images, patch_config, seed):
    """Steps 2-4: sampled, normalised and (optionally) ZCA-whitened patches (P, d) and the whitener."""
    rng = np.random.default_rng(seed)
    raw = sample_patches(images, patch_config["size"], patch_config["count"], rng)
    patches = normalize_patches(raw, patch_config["eps"])
    if not patch_config["zca"]:
        return patches, None
    whitener = ZCAWhitener(eps=patch_config["zca_eps"]).fit(patches)
    return whitener.transform(patches), whitener


def compute_filters(patches, filter_config, n_jobs, log):
    """Steps 5-6: extreme-point filters with their certificates, as a dict of arrays."""
    solution = extreme_point_filters(
        patches, n_candidates=filter_config["n_candidates"], hull_tol=filter_config["hull_tol"],
        n_jobs=n_jobs, batch_size=filter_config["batch_size"], scheduler=filter_config["scheduler"],
        progress=lambda line: log(f"[filters] {line}"))
    return {
        "filters": solution.filters,
        "bias": solution.bias if filter_config["use_bias"] else np.zeros(len(solution.kept)),
        "kept": solution.kept,
        "relative_gaps": solution.relative_gaps,
        "residual_norms": solution.residual_norms,
        "support_sizes": solution.support_sizes,
        "n_inside_hull": np.int64(solution.n_inside_hull),
        "max_relative_gap": np.float64(solution.max_relative_gap),
        "rounds": np.int64(solution.rounds),
    }


def feature_map(images, filters, whitener, config, split):
    """Step 7: pooled ReLU responses (N, F * grid**2) of one split, with a progress bar."""
    feature_config = config["features"]
    with tqdm(total=len(images), desc=f"features ({split})", unit="img", disable=None, leave=False) as bar:
        return conv_relu_pool(
            images, filters["filters"], patch_size=config["patches"]["size"], eps=config["patches"]["eps"],
            stride=feature_config["stride"], whitener=whitener, bias=filters["bias"],
            pooling=feature_config["pooling"], grid=feature_config["grid"],
            memory_mb=feature_config["memory_mb"], device=feature_config["device"], progress=bar.update)


# --- helpers ------------------------------------------------------------------------------------

def cached(cache, stage, key, compute, pack, unpack):
    """Load ``stage``'s artifact for ``key`` or compute it, save it (packed to arrays) and return it."""
    arrays = cache.load(stage, key)
    if arrays is None:
        value = compute()
        cache.save(stage, key, pack(value))
        return value
    return unpack(arrays)


def as_arrays(value):
    """Pack/unpack of artifacts that already are a dict of arrays."""
    return value


def pack_patches(patches_and_whitener):
    patches, whitener = patches_and_whitener
    arrays = {"patches": patches}
    if whitener is not None:
        arrays.update(zca_mean=whitener.mean_, zca_whitening=whitener.whitening_,
                      zca_colouring=whitener.colouring_, zca_eps=np.float64(whitener.eps))
    return arrays


def unpack_patches(arrays):
    if "zca_mean" not in arrays:
        return arrays["patches"], None
    whitener = ZCAWhitener(eps=float(arrays["zca_eps"]))
    whitener.mean_, whitener.whitening_ = arrays["zca_mean"], arrays["zca_whitening"]
    whitener.colouring_ = arrays["zca_colouring"]
    whitener.n_features_in_ = len(whitener.mean_)
    return arrays["patches"], whitener


class StageTimer:
    """Context manager factory that records wall-clock seconds per stage in ``seconds``."""

    def __init__(self, log):
        self.log = log
        self.seconds = {}

    @contextmanager
    def __call__(self, stage):
        start = time.perf_counter()
        yield
        self.seconds[stage] = round(time.perf_counter() - start, 3)
        self.log(f"[{stage}] done in {self.seconds[stage]:.1f} s")


def peak_rss_mb():
    """Peak resident memory in MiB of this process and of its largest finished child (joblib workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)
