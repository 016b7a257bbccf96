"""Benchmark of the l1 output layer's solvers and of the validated path on real features (issue 16).

    python bench/output_layer.py [--dataset mnist|cifar10] [--data-root DIR] [--images 12000]
                                 [--features-cache FILE.npz] [--json FILE] [--variants V [V ...]] [--growth G]
                                 [--skglm-tol TOL] [--set KEY=VALUE ...]

Features of ``configs/<dataset>.yaml`` on a seeded stratified subsample of ``--images`` training images, split
80/20 into fit and validation rows (``--features-cache`` keeps them between runs). On the same features, in
one run:

* ``root-find``: the penalised fit at the config's fixed penalty (0.01 beta_max, group l1, the config's tol),
  SPGL1's LASSO solves in a root-find for ``lambda(tau) = beta`` (the default penalised fit);
* ``lasso at tau*``: SPGL1 in its own LASSO mode at the ``tau`` the root-find found (the same solution);
* ``skglm``: skglm's coordinate descent at the same penalty (``solver="skglm"``), at ``--skglm-tol``
  (default 1e-6: the reference objective);
* ``newton``: coordinate descent and Newton steps on the working sets' Gram matrices (``solver="newton"``),
  at the same penalty and the config's tol;
* ``path``, ``newton path``: ``beta="auto"``: the path on held-out rows (of the fit rows) and the final fit,
  by SPGL1's LASSO solves or by the Newton solver at the grid's penalties.

Each row: ``{dataset, n, features, solver, variant, seconds, objective, rel_objective_vs_best, features_used,
validation_accuracy}`` (``--variants`` runs some of them; objective: the penalised objective at the fixed
penalty; for ``path``, at its own penalty, so no ratio). Prints the BLAS library and thread counts.
"""

import argparse
import json
import logging
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


VARIANTS = ("root-find", "lasso at tau*", "skglm", "newton", "path", "newton path")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    parser.add_argument("--data-root", default=str(Path.home() / "datasets"))
    parser.add_argument("--images", type=int, default=12000, help="training images (fit + validation)")
    parser.add_argument("--features-cache", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--growth", type=float, default=L1OutputLayer().working_set_growth,
                        help="working_set_growth of every variant")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. patches.count=4000 (repeatable)")
    parser.add_argument("--skglm-tol", type=float, default=1e-6, help="tolerance of the skglm variant")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="the variants to run ('lasso at tau*' needs 'root-find')")
    args = parser.parse_args(argv)
    if "lasso at tau*" in args.variants and "root-find" not in args.variants:
        parser.error("'lasso at tau*' runs at the tau that 'root-find' finds: add root-find")
    return args


def features(args):
    """(fit features, fit labels, validation features, validation labels, output-layer config)."""
    config = load_config(REPO / "configs" / f"{args.dataset}.yaml",
                         [f"data.n_train={args.images}", "data.validation_fraction=0.2", *args.overrides],
                         data_root=args.data_root)
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # the path's and rounds' progress
    B, y, B_val, y_val, settings = features(args)
    print(f"{B.shape[0]} fit / {B_val.shape[0]} validation images, {B.shape[1]} features; {blas_description()}")
    common = dict(group=settings["group"], max_iter=settings["max_iter"], tol=settings["tol"],
                  working_set_growth=args.growth)
    fixed = dict(common, beta=0.01)
    fits = []  # (solver, variant, fitted layer, seconds)
    auto = dict(common, beta="auto", refit=settings["refit"])
    for solver, variant in [("spgl1", "root-find"), ("spgl1", "lasso at tau*"), ("skglm", "skglm"),
                            ("newton", "newton"), ("spgl1", "path"), ("newton", "newton path")]:
        if variant not in args.variants:
            continue
        layer = {"root-find": lambda: L1OutputLayer(**fixed),
                 "lasso at tau*": lambda: L1OutputLayer(**common, mode="lasso", tau=fits[0][2].tau_),
                 "skglm": lambda: L1OutputLayer(**dict(fixed, tol=args.skglm_tol), solver="skglm"),
                 "newton": lambda: L1OutputLayer(**fixed, solver="newton"),
                 "path": lambda: L1OutputLayer(**auto),
                 "newton path": lambda: L1OutputLayer(**auto, solver="newton")}[variant]()
        fits.append((solver, variant, *timed_fit(layer, B, y)))
        print(f"{variant}: {fits[-1][3]:.1f} s", flush=True)
    rows = result_rows(args.dataset, fits, B, y, B_val, y_val)
    print_rows(rows)
    paths = {variant: fit for _, variant, fit, _ in fits if variant.endswith("path")}
    for variant, path in paths.items():
        print(f"{variant}: chose {path.beta_ratio_:.4g} of beta_max after {len(path.path_)} penalties")
    if args.json:
        args.json.write_text(json.dumps({"blas": blas_description(), "working_set_growth": args.growth,
                                         "skglm_tol": args.skglm_tol, "rows": rows,
                                         "paths": {variant: path_records(path.path_) for variant, path in paths.items()}},
                                        indent=2))


def result_rows(dataset, fits, B, y, B_val, y_val):
    """The JSON rows of ``fits``; objectives of the fixed-penalty variants at the first one's beta (a
    path has its own penalty: no objective)."""
    fixed = [fit for _, variant, fit, _ in fits if not variant.endswith("path")]
    for fit in fixed[1:]:
        fit.beta_ = fixed[0].beta_  # every fixed-penalty objective at the same beta
    objectives = {id(fit): fit.objective(B, y) for fit in fixed}
    best = min(objectives.values(), default=None)
    return [{"dataset": dataset, "n": int(B.shape[0]), "features": int(B.shape[1]), "solver": solver,
             "variant": variant, "seconds": round(seconds, 1), "objective": objectives.get(id(fit)),
             "rel_objective_vs_best": objectives[id(fit)] / best - 1 if id(fit) in objectives else None,
             "features_used": int(np.count_nonzero(np.any(fit.coef_ != 0, axis=1))),
             "validation_accuracy": float(fit.score(B_val, y_val))}
            for solver, variant, fit, seconds in fits]


def print_rows(rows):
    """The table of ``rows``; speeds relative to the root-find's when it ran."""
    reference = next((row["seconds"] for row in rows if row["variant"] == "root-find"), None)
    print(f"\n{'solver':>6} {'variant':>14} {'seconds':>8} {'vs root-find':>12} {'rel objective':>13} {'used':>6} "
          f"{'val acc':>8}")
    for row in rows:
        rel = "" if row["rel_objective_vs_best"] is None else f"{row['rel_objective_vs_best']:+.2e}"
        speed = "" if reference is None else f"{reference / row['seconds']:.2f}"
        print(f"{row['solver']:>6} {row['variant']:>14} {row['seconds']:8.1f} {speed:>12} "
              f"{rel:>13} {row['features_used']:6d} {row['validation_accuracy']:8.4f}")


if __name__ == "__main__":
    main()
