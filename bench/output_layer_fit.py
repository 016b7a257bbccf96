"""Benchmark of the l1 output layer's settings on real features (issue 7).

    python bench/output_layer_fit.py [--data-root DIR] [--images 12000] [--patches 1000] [--json FILE]

Features of ``configs/mnist.yaml`` (its patches, encoding and pooling; ``--patches`` of them) on a seeded
stratified subsample of ``--images`` MNIST training images, split 80/20 into fit and validation rows.
:class:`pipeline.L1OutputLayer` at the config's ``beta`` is fitted on the same features with:

* ``reference``: ``tol 1e-4``, float64 products, SPGL1 on all features at once (the settings before this
  benchmark's changes, except the root-find tolerance rule);
* ``tol 1e-3``: the same in float64, then with float32 products (the default from ``tol 1e-3``);
* ``working set``: the same on working sets of features (the first F / 4, then twice the support),
  certified on all; matching ``beta`` to the tolerance's own precision in every round (``exact beta``),
  then the default: to 5 % until the set settles, exactly on the settled set (``rough beta``); at
  ``tol 1e-4`` (exact: 1e-2 of beta) and ``tol 1e-3`` (exact: 3.2 % of beta, close to rough);
* ``refit``: the last with least squares on the selected features.

Each row gives the fit time and its ratio to the reference measured in the same run, SPGL1 iterations,
features used, the penalised objective relative to the reference's (before a refit) and validation accuracy.
Prints the BLAS library and thread counts.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from filter_stage import blas_description  # (bench/filter_stage.py)
from training import REPO


from pipeline import L1OutputLayer
from pipeline.readout import solve, working_set
from pipeline.config import load_config
from pipeline.schema import build_model, data_source


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(Path.home() / "datasets"))
    parser.add_argument("--images", type=int, default=12000, help="training images (fit + validation)")
    parser.add_argument("--patches", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def features(args):
    """(fit features, fit labels, validation features, validation labels, output-layer config)."""
    config = load_config(REPO / "configs" / "mnist.yaml", [f"data.n_train={args.images}", "data.validation_fraction=0.2",
                                                           f"patches.count={args.patches}"], data_root=args.data_root)
    fit_set, validation_set = data_source(config).load(config["seed"])
    feature_map = build_model(config).features.set_params(verbose=0).fit(fit_set.images)
    return (feature_map.transform(fit_set.images), fit_set.labels, feature_map.transform(validation_set.images),
            validation_set.labels, config["output"])


def variants(n_features):
    """(name, L1OutputLayer parameters, float32 products allowed, rough beta in unsettled rounds)."""
    direct, sets = dict(working_set=n_features), dict(working_set=max(1, n_features // 4))
    return [("reference", dict(tol=1e-4, **direct), False, False),
            ("tol 1e-3, float64", dict(tol=1e-3, **direct), False, False),
            ("tol 1e-4, working set, exact beta", dict(tol=1e-4, **sets), False, False),
            ("tol 1e-4, working set, rough beta", dict(tol=1e-4, **sets), False, True),
            ("tol 1e-3, float32", dict(tol=1e-3, **direct), True, False),
            ("... working set, exact beta", dict(tol=1e-3, **sets), True, False),
            ("... working set, rough beta", dict(tol=1e-3, **sets), True, True),
            ("... + refit", dict(tol=1e-3, **sets, refit=True), True, True)]


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    B, y, B_val, y_val, settings = features(args)
    print(f"{B.shape[0]} fit / {B_val.shape[0]} validation images, {B.shape[1]} features; {blas_description()}")
    rows, reference = [], None
    default_float32_tol, default_rough = solve.FLOAT32_TOL, working_set._ROUGH_BETA_RTOL
    for name, params, float32, rough in variants(B.shape[1]):
        solve.FLOAT32_TOL = default_float32_tol if float32 else np.inf
        working_set._ROUGH_BETA_RTOL = default_rough if rough else None  # None: the tolerance's own rtol
        layer = L1OutputLayer(beta=settings["beta"], group=settings["group"], max_iter=20000, **params)
        start = time.perf_counter()
        layer.fit(B, y)
        seconds = time.perf_counter() - start
        objective = None if layer.refit else layer.objective(B, y)
        reference = reference or dict(seconds=seconds, objective=objective)
        rows.append({"variant": name, "seconds": round(seconds, 1), "ratio": round(reference["seconds"] / seconds, 2),
                     "n_iter": int(layer.n_iter_), "n_solves": int(layer.n_solves_), "rounds": int(layer.n_rounds_),
                     "features_used": int(np.count_nonzero(np.any(layer.coef_ != 0, axis=1))),
                     "objective_vs_reference": None if objective is None else objective / reference["objective"] - 1,
                     "validation_accuracy": float(layer.score(B_val, y_val))})
    solve.FLOAT32_TOL, working_set._ROUGH_BETA_RTOL = default_float32_tol, default_rough
    print(f"\n{'variant':>34} {'seconds':>8} {'speed-up':>8} {'iters':>6} {'solves':>6} {'rounds':>6} {'used':>6} "
          f"{'objective':>10} {'val acc':>8}")
    for row in rows:
        objective = "" if row["objective_vs_reference"] is None else f"{row['objective_vs_reference']:+.1e}"
        print(f"{row['variant']:>34} {row['seconds']:8.1f} {row['ratio']:8.2f} {row['n_iter']:6d} {row['n_solves']:6d} "
              f"{row['rounds']:6d} {row['features_used']:6d} {objective:>10} {row['validation_accuracy']:8.4f}")
    if args.json:
        args.json.write_text(json.dumps({"blas": blas_description(), "n_features": int(B.shape[1]),
                                         "n_fit": int(B.shape[0]), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
