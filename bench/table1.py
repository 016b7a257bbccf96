"""The paper's Table 1 on this machine: every model of the job on one dataset, side by side.

    python bench/table1.py --dataset mnist --data-root DIR [--out runs/table1-mnist] [--convex-rf RUN]

Trains, with ``configs/<dataset>.yaml`` and its model sections, in this order: least squares, the
closed form (Theorem 15), the cutting-plane network, backprop with as many hidden neurons as the
cutting-plane network uses, and Convex-RF (or takes a finished Convex-RF run with ``--convex-rf``).
Models whose cost grows faster than the data train on a seeded stratified subsample
(:data:`SUBSAMPLE`, stated in the report). Each model trains in its own ``run.py train`` process (so its
peak memory is its own) into one run folder under ``--out``; a folder that already holds a finished run
(``metrics.json``) is reused as it is. Writes ``report.html`` / ``report.md`` over all runs into the
first, prints the table, and writes ``table1.json`` (model, training images, accuracy, neurons or filters,
objective, seconds).
"""

import argparse
import json
import sys
from pathlib import Path

from training import REPO, train_run


from pipeline.reporting import write_report

MODELS = ("least_squares", "closed_form", "cutting_plane", "backprop", "convex_rf")
# Training images per model where its cost demands a subsample: the closed form needs n <= rank of the
# pixels (MNIST: 712 non-constant pixels), the cutting plane's seeds and restricted LASSO grow as n^2.
SUBSAMPLE = {"closed_form": {"mnist": 500, "cifar10": 2000}, "cutting_plane": {"mnist": 2000, "cifar10": 2000}}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("mnist", "cifar10"), required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None, help="folder of the runs (default runs/table1-DATASET)")
    parser.add_argument("--convex-rf", type=Path, default=None, help="a finished Convex-RF run to include")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every model")
    return parser.parse_args(argv)


def run_model(model, args, overrides=()):
    """Train ``model`` into ``OUT/model`` (unless it holds a finished run); returns (run folder, metrics)."""
    settings = [f"model={model}", *args.overrides, *overrides]
    if args.dataset in SUBSAMPLE.get(model, {}):
        settings.append(f"data.n_train={SUBSAMPLE[model][args.dataset]}")
    folder = args.out / model
    return folder, train_run(folder, args.dataset, args.data_root, settings)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.out = args.out or REPO / "runs" / f"table1-{args.dataset}"
    folders, rows, neurons = [], [], {}
    for model in MODELS:
        if model == "convex_rf" and args.convex_rf is not None:
            folder, metrics = args.convex_rf, json.loads((args.convex_rf / "metrics.json").read_text())
        else:
            extra = [f"backprop.n_hidden={neurons['cutting_plane']}"] if model == "backprop" else []
            folder, metrics = run_model(model, args, extra)
        folders.append(folder)
        neurons[model] = metrics.get("n_neurons")
        rows.append({"model": model, "n_train": metrics.get("n_train"), "accuracy": metrics["test_accuracy"],
                     "neurons": metrics.get("n_neurons"), "filters": metrics.get("n_filters"),
                     "objective": metrics.get("objective"), "seconds": round(sum(metrics["stage_seconds"].values()), 1),
                     "run": str(folder)})
    html, _ = write_report(folders)
    print(f"\n{'model':>14} {'train images':>12} {'test acc':>9} {'neurons':>8} {'filters':>8} {'seconds':>8}")
    for row in rows:
        print(f"{row['model']:>14} {row['n_train'] or '':>12} {row['accuracy']:9.4f} {row['neurons'] or '':>8} "
              f"{row['filters'] or '':>8} {row['seconds']:8.1f}")
    (args.out / "table1.json").write_text(json.dumps(rows, indent=2))
    print(f"report: {html}; table: {args.out / 'table1.json'}")


if __name__ == "__main__":
    main()
