"""Benchmark of the l1 output layer's solvers and of the validated path on real features (issue 16).

    python bench/output_layer.py [--dataset mnist|cifar10] [--data-root DIR] [--images 12000]
                                 [--features-cache FILE.npz] [--json FILE]

Features of ``configs/<dataset>.yaml`` on a seeded stratified subsample of ``--images`` training images, split
80/20 into fit and validation rows (``--features-cache`` keeps them between runs). On the same features, in
one run:

* ``root-find``: the penalised fit at the config's fixed penalty (0.01 beta_max, group l1, the config's tol),
  SPGL1's LASSO solves in a root-find for ``lambda(tau) = beta`` (the default penalised fit);
* ``lasso at tau*``: SPGL1 in its own LASSO mode at the ``tau`` the root-find found (the same solution);
* ``skglm``: skglm's coordinate descent at the same penalty (``solver="skglm"``), to a tight tolerance:
  the reference objective;
* ``path``: ``beta="auto"``: the path on held-out rows (of the fit rows) and the final fit.

Each row: ``{dataset, n, features, solver, variant, seconds, objective, rel_objective_vs_best, features_used,
validation_accuracy}`` (objective: the penalised objective at the fixed penalty; for ``path``, at its own
penalty, so no ratio). Prints the BLAS library and thread counts.
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
from pipeline.config import load_config
from pipeline.readout.path import path_records
from pipeline.schema import build_model, data_source


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    parser.add_argument("--data-root", default=str(Path.home() / "datasets"))
    parser.add_argument("--images", type=int, default=12000, help="training images (fit + validation)")
    parser.add_argument("--features-cache", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def features(args):
    """(fit features, fit labels, validation features, validation labels, output-layer config)."""
    config = load_config(REPO / "configs" / f"{args.dataset}.yaml",
                         [f"data.n_train={args.images}", "data.validation_fraction=0.2"], data_root=args.data_root)
    if args.features_cache and args.features_cache.is_file():
        with np.load(args.features_cache) as cached:
            return cached["B"], cached["y"], cached["Bv"], cached["yv"], config["output"]
    fit_set, validation_set = data_source(config).load(config["seed"])
    feature_map = build_model(config).features.set_params(verbose=0).fit(fit_set.images)
    arrays = dict(B=feature_map.transform(fit_set.images), y=fit_set.labels,
                  Bv=feature_map.transform(validation_set.images), yv=validation_set.labels)
    if args.features_cache:
        np.savez(args.features_cache, **arrays)
    return arrays["B"], arrays["y"], arrays["Bv"], arrays["yv"], config["output"]


def timed_fit(layer, B, y):
    start = time.perf_counter()
    layer.fit(B, y)
    return layer, time.perf_counter() - start


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    B, y, B_val, y_val, settings = features(args)
    print(f"{B.shape[0]} fit / {B_val.shape[0]} validation images, {B.shape[1]} features; {blas_description()}")
    common = dict(group=settings["group"], max_iter=settings["max_iter"], tol=settings["tol"])
    fixed = dict(common, beta=0.01)
    root_find, root_seconds = timed_fit(L1OutputLayer(**fixed), B, y)
    fits = [("spgl1", "root-find", root_find, root_seconds)]
    for solver, variant, layer in [
            ("spgl1", "lasso at tau*", L1OutputLayer(**common, mode="lasso", tau=root_find.tau_)),
            ("skglm", "penalized", L1OutputLayer(**dict(fixed, tol=1e-6), solver="skglm")),
            ("spgl1", "path", L1OutputLayer(**common, beta="auto", refit=settings["refit"]))]:
        print(f"{fits[-1][1]}: {fits[-1][3]:.1f} s", flush=True)
        fits.append((solver, variant, *timed_fit(layer, B, y)))
    for _, _, fit, _ in fits[1:3]:
        fit.beta_ = root_find.beta_  # every fixed-penalty objective at the same beta
    objectives = [fit.objective(B, y) for _, _, fit, _ in fits[:3]] + [None]  # the path has its own penalty
    best = min(objectives[:3])
    rows = [{"dataset": args.dataset, "n": int(B.shape[0]), "features": int(B.shape[1]), "solver": solver,
             "variant": variant, "seconds": round(seconds, 1), "objective": objective,
             "rel_objective_vs_best": None if objective is None else objective / best - 1,
             "features_used": int(np.count_nonzero(np.any(fit.coef_ != 0, axis=1))),
             "validation_accuracy": float(fit.score(B_val, y_val))}
            for (solver, variant, fit, seconds), objective in zip(fits, objectives)]
    print(f"\n{'solver':>6} {'variant':>14} {'seconds':>8} {'vs root-find':>12} {'rel objective':>13} {'used':>6} "
          f"{'val acc':>8}")
    for row in rows:
        rel = "" if row["rel_objective_vs_best"] is None else f"{row['rel_objective_vs_best']:+.2e}"
        print(f"{row['solver']:>6} {row['variant']:>14} {row['seconds']:8.1f} {root_seconds / row['seconds']:12.2f} "
              f"{rel:>13} {row['features_used']:6d} {row['validation_accuracy']:8.4f}")
    path = fits[3][2]
    print(f"path: chose {path.beta_ratio_:.4g} of beta_max after {len(path.path_)} penalties")
    if args.json:
        args.json.write_text(json.dumps({"blas": blas_description(), "rows": rows,
                                         "path": path_records(path.path_)}, indent=2))


if __name__ == "__main__":
    main()
