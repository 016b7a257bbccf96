"""Encodings and pooling at one filter bank (issue 20): each variant's features read out on a validation split.

    python bench/encodings.py --dataset cifar10 --data-root DIR [--set data.n_train=15000 ...]
                              [--variants plain centered=true threshold=0.25,two_sided=true ...]
                              [--readout ridge l1] [--json FILE]

Loads ``configs/<dataset>.yaml`` with ``data.validation_fraction`` set (default 1/3 of the training
images; the test set is never read), fits the whitening and the filter bank once, and for each variant
folds the same filters into a feature map with the variant's settings (``KEY=VALUE`` pairs of
:class:`features.ConvReLUPool`, comma-separated, and ``horizontal_flips`` of :class:`pipeline.ConvexRFClassifier`:
the fit rows' mirrors added, each held out with its image; ``plain`` is the config as it is). A variant that
changes the patches (``patch_size``, ``n_patches``) samples and solves its own filters. Each variant's fit and
validation features are read out by the ridge read-out (:func:`pipeline.readout.ridge.ridge_readout`,
its penalty chosen on a fifth of the fit rows) and/or the config's l1 output layer (``beta: auto``: its
penalty path on held-out fit rows); both are scored on the validation images. Prints a table and, with
``--json``, writes one row per variant (kept after each variant, so a stopped sweep leaves its rows).
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from sklearn.base import clone

from filter_stage import blas_description  # (bench/filter_stage.py)
from training import REPO

from features.stage_protocol import Uncached
from pipeline.config import load_config
from pipeline.readout.ridge import ridge_readout
from pipeline.schema import build_model, data_source
from pipeline.storage import write_text_atomic
DEFAULT_VARIANTS = ("plain", "centered=true", "threshold=0.25", "threshold=0.5", "centered=true,threshold=0.25",
                    "two_sided=true,threshold=0.5", "grid=3", "pooling=max")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("digits", "mnist", "cifar10"), required=True)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every variant (e.g. data.n_train=15000, patches.count=1600)")
    parser.add_argument("--validation-fraction", type=float, default=1 / 3,
                        help="stratified share of the training images the variants are scored on")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        help="'plain' or comma-separated KEY=VALUE settings of the feature map")
    parser.add_argument("--readout", nargs="+", choices=("ridge", "l1"), default=["ridge"])
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    return parser.parse_args(argv)


def variant_settings(variant):
    """``{"centered": True, "threshold": 0.25}`` from ``"centered=true,threshold=0.25"`` (``{}`` for plain)."""
    if variant == "plain":
        return {}
    settings = {}
    for pair in variant.split(","):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"variant {variant!r}: expected KEY=VALUE pairs separated by commas, e.g. centered=true")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


class ReusedStages(Uncached):
    """A stage runner (:mod:`features.stage_protocol`) that fits each stage once per input: variants that
    share their patches share their whitening and filters (the estimators are the config's, unchanged)."""

    def __init__(self):
        self.fitted = {}

    def fit(self, name, estimator, X, y=None):
        key = (name, hashlib.sha1(np.ascontiguousarray(X).view(np.uint8)).hexdigest())
        if key not in self.fitted:
            self.fitted[key] = estimator.fit(X)
        return self.fitted[key]


def read_out(kind, model, seed, train, train_labels, validation, validation_labels, groups=None):
    """Validation accuracy and details of one read-out of the features (N, F) / (N', F) (``groups``: rows
    held out together where the read-out chooses its penalty); ``model``: the config's
    :class:`pipeline.ConvexRFClassifier`, whose output layer is the l1 read-out."""
    start = time.perf_counter()
    if kind == "ridge":
        ridge = ridge_readout(train, train_labels, validation, validation_labels, seed, groups=groups)
        return {"ridge_accuracy": ridge["accuracy"], "ridge_alpha": ridge["alpha"],
                "ridge_seconds": round(time.perf_counter() - start, 1)}
    layer = clone(model.output_layer).fit(train, train_labels, groups=groups)
    return {"l1_accuracy": float(layer.score(validation, validation_labels)),
            "l1_features_used": int(np.count_nonzero(np.any(layer.coef_ != 0, axis=1))), "l1_beta_ratio": float(layer.beta_ / layer.beta_max_),
            "l1_seconds": round(time.perf_counter() - start, 1)}


def variant_row(variant, model, seed, stages, data, readouts):
    """Features of one variant and their read-outs: the variant's row."""
    (train_images, train_labels), (validation_images, validation_labels) = data
    start = time.perf_counter()
    settings = variant_settings(variant)
    classifier = clone(model).set_params(horizontal_flips=settings.pop("horizontal_flips", model.horizontal_flips))
    features = clone(model.features).set_params(**settings, verbose=0)
    features.fit(train_images, stages=stages)
    train = features.transform(classifier.training_images(train_images))
    validation = features.transform(validation_images)
    fit_labels, groups = classifier.training_labels(train_labels)
    row = {"variant": variant, "filters": int(features.weights_.shape[1]), "features": int(train.shape[1]),
           "fit_rows": len(train), "feature_seconds": round(time.perf_counter() - start, 1)}
    for kind in readouts:
        row.update(read_out(kind, model, seed, train, fit_labels, validation, validation_labels, groups))
    return row


def print_table(rows):
    columns = ("variant", "filters", "features", "feature_seconds", "ridge_accuracy", "l1_accuracy",
               "l1_features_used", "l1_seconds")
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(f"{row[key]:.4f}" if isinstance(row.get(key), float) and key.endswith("accuracy")
                         else str(row.get(key, "")) for key in columns))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    overrides = [f"data.validation_fraction={args.validation_fraction}", *args.overrides]
    config = load_config(REPO / "configs" / f"{args.dataset}.yaml", overrides, data_root=args.data_root)
    train_set, validation_set = data_source(config).load(config["seed"])
    print(f"{len(train_set.labels)} fit / {len(validation_set.labels)} validation images; {blas_description()}",
          flush=True)
    data = (train_set.images, train_set.labels), (validation_set.images, validation_set.labels)
    model, stages, rows = build_model(config), ReusedStages(), []
    for variant in args.variants:
        rows.append({"dataset": args.dataset, "settings": overrides,
                     **variant_row(variant, model, config["seed"], stages, data, args.readout)})
        print(json.dumps(rows[-1]), flush=True)
        if args.json:
            write_text_atomic(args.json, json.dumps(rows, indent=2))
    print_table(rows)


if __name__ == "__main__":
    main()
