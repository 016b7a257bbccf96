"""Test accuracy against the number of training images for one shipped config (issue 20).

    python bench/learning_curve.py --dataset cifar10 --data-root DIR [--sizes 10000 20000 50000]
                                   [--out runs/curve-cifar10] [--set KEY=VALUE ...] [--json FILE]

Trains ``configs/<dataset>.yaml`` once per size N on a seeded stratified subsample of N training images
(``data.n_train``; the full training set when N is at least its size), each in its own ``run.py train``
process into ``OUT/n-N`` (a finished run is reused, so a stopped curve resumes; give another ``--out`` for
other settings). The test set scores each run once, at its end. Prints one row per size (rows fitted:
images, doubled by ``data.horizontal_flips``; the l1 layer's penalty and features; the ridge read-out
beside it when the config has one; seconds and peak memory of the run) and writes them to ``--json``.
"""

import argparse
import json
from pathlib import Path

from training import REPO, train_run

from pipeline.storage import write_text_atomic


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("mnist", "cifar10"), required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 20000, 50000],
                        help="training images per run")
    parser.add_argument("--out", type=Path, default=None, help="folder of the runs (default runs/curve-DATASET)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    return parser.parse_args(argv)


def curve_row(n_images, metrics):
    """One size's row of the table, from its run's ``metrics.json``."""
    ridge = metrics.get("ridge_readout") or {}
    rows = metrics["n_train"] * (2 if metrics["config"]["data"]["horizontal_flips"] else 1)
    return {"n_images": n_images, "n_train": metrics["n_train"], "rows": rows,
            "n_features": metrics.get("n_features"), "features_used": metrics.get("n_features_used"),
            "beta_ratio": metrics["beta"] / metrics["beta_max"] if metrics.get("beta_max") else None,
            "path_points": len(metrics.get("beta_path", [])),
            "chosen_at_grid_end": metrics["beta"] <= 1.01 * metrics["beta_max"]
            * metrics["config"]["output"]["min_penalty_ratio"],
            "train_accuracy": metrics["train_accuracy"], "test_accuracy": metrics["test_accuracy"],
            "ridge_test_accuracy": ridge.get("accuracy"), "seconds": sum(metrics["stage_seconds"].values()),
            "output_seconds": metrics["stage_seconds"].get("output"), "peak_rss_mb": metrics.get("peak_rss_mb")}


def print_table(rows):
    print(f"{'images':>7} {'rows':>7} {'used':>6} {'beta/max':>9} {'points':>6} {'train':>7} {'l1 test':>8} "
          f"{'ridge':>7} {'seconds':>8} {'output s':>8} {'peak GiB':>8}")
    for row in rows:
        ridge = f"{row['ridge_test_accuracy']:.4f}" if row["ridge_test_accuracy"] is not None else "-"
        end = "*" if row["chosen_at_grid_end"] else " "
        print(f"{row['n_train']:>7} {row['rows']:>7} {row['features_used']:>6} {row['beta_ratio']:>8.2g}{end} "
              f"{row['path_points']:>6} {row['train_accuracy']:>7.4f} {row['test_accuracy']:>8.4f} {ridge:>7} "
              f"{row['seconds']:>8.0f} {row['output_seconds']:>8.0f} {row['peak_rss_mb'] / 1024:>8.1f}")
    if any(row["chosen_at_grid_end"] for row in rows):
        print("* the path chose the end of its grid (output.min_penalty_ratio): a smaller penalty may score better")


def main(argv=None):
    args = parse_args(argv)
    out = args.out or REPO / "runs" / f"curve-{args.dataset}"
    rows = []
    for n_images in sorted(args.sizes):
        metrics = train_run(out / f"n-{n_images}", args.dataset, args.data_root,
                            [f"data.n_train={n_images}"] + args.overrides)
        rows.append(curve_row(n_images, metrics))
    print_table(rows)
    if args.json:
        write_text_atomic(args.json, json.dumps({"dataset": args.dataset, "overrides": args.overrides,
                                                 "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
