"""Filter banks at equal filter count (issue 7): extreme points against random patches, k-means, Gaussian.

    python bench/compare_filters.py --dataset cifar10 --data-root DIR [--counts 1600 4000]
                                    [--out runs/filters-cifar10] [--set KEY=VALUE ...] [--readout ridge]
                                    [--methods extreme_point kmeans ...]

For each count P, trains ``configs/<dataset>.yaml`` with ``filters.method=extreme_point`` on P patches
first; the extreme points are the F <= P patches outside the hull of the others, and every other bank
then gets exactly F filters, same everything else: ``random_patches`` (F of the P patches) and
``gaussian`` on the same P patches' whitening, ``kmeans`` (F centroids) on 10 P patches, since k-means
needs many more samples than centroids (Coates and Ng used 400,000 for 1,600). Each run is a
``run.py train`` process into ``OUT/<method>-<P>`` (a finished run is reused); add ``--set
ridge_readout=true`` for the ridge read-out beside the l1 layer. Writes ``report.html`` / ``report.md``
over all runs into the first, prints the table and writes ``OUT/filters.json``.

``--methods`` limits the banks (extreme points always run: they fix the others' filter count).
``--readout ridge`` measures the banks alone, faster: each bank's features (same config and settings; the
training images' mirrors too with ``data.horizontal_flips``, each held out with its image) are read out in
this process by the job's ridge read-out (:func:`pipeline.ridge_readout`: penalty chosen
on a stratified fifth of the training images, then fitted on all of them; the test set only scores it);
no l1 layer or report; each bank's row is kept in ``OUT/<method>-<P>/ridge.json`` and reused by a later
call with the same ``OUT`` (so a stopped comparison resumes; give another ``--out`` for other settings), then
the table, ``filters.json`` and the accuracy-against-filters plot ``OUT/accuracy_vs_filters.png``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from training import REPO, train_run


from pipeline.storage import write_text_atomic
from pipeline.config import load_config
from pipeline.schema import build_model, data_source
from pipeline.reporting import write_report
from pipeline.reporting.report import save_accuracy_plot
from pipeline.readout.ridge import ridge_readout

METHODS = ("extreme_point", "random_patches", "kmeans", "gaussian")
KMEANS_PATCHES_PER_FILTER = 10


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("mnist", "cifar10"), required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--counts", type=int, nargs="+", default=[1600, 4000], help="patches P per comparison")
    parser.add_argument("--out", type=Path, default=None, help="folder of the runs (default runs/filters-DATASET)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="banks to compare (extreme_point, which fixes the others' filter count, runs first)")
    parser.add_argument("--readout", choices=("job", "ridge"), default="job",
                        help="job: full training runs (l1 layer, reports); ridge: features + ridge read-out only")
    return parser.parse_args(argv)


def method_settings(method, n_patches, n_filters):
    """Config overrides of one bank: ``n_patches`` sampled patches, ``n_filters`` filters (other banks)."""
    if method == "extreme_point":
        return ["filters.method=extreme_point", f"patches.count={n_patches}"]
    patches = n_patches * KMEANS_PATCHES_PER_FILTER if method == "kmeans" else n_patches
    return [f"filters.method={method}", f"filters.count={n_filters}", f"patches.count={patches}"]


def job_row(folder, args, settings):
    """Train (or reuse) the run in ``folder``; its row of the table."""
    metrics = train_run(folder, args.dataset, args.data_root, settings)
    return {"filters": metrics["n_filters"], "accuracy": metrics["test_accuracy"],
            "train_accuracy": metrics["train_accuracy"], "ridge_accuracy": metrics.get("ridge_readout", {}).get("accuracy"),
            "features_used": metrics.get("n_features_used"), "features": metrics.get("n_features"),
            "seconds": round(sum(metrics["stage_seconds"].values()), 1), "run": str(folder)}


def ridge_row(folder, args, settings):
    """The bank's features read out by :func:`pipeline.ridge_readout` in this process (or the row a
    previous call kept in ``folder/ridge.json``); its row."""
    kept = folder / "ridge.json"
    if kept.exists():
        return json.loads(kept.read_text())
    start = time.perf_counter()
    config = load_config(REPO / "configs" / f"{args.dataset}.yaml", settings, data_root=args.data_root)
    train_set, test_set = data_source(config).load(config["seed"])
    model = build_model(config)  # its training rows: the images, and their mirrors with data.horizontal_flips
    feature_map = model.features.set_params(verbose=0).fit(train_set.images)
    labels, groups = model.training_labels(train_set.labels)
    train, test = feature_map.transform(model.training_images(train_set.images)), feature_map.transform(test_set.images)
    ridge = ridge_readout(train, labels, test, test_set.labels, config["seed"], groups=groups)
    row = {"filters": len(feature_map.filter_bank_.filters_), "features": int(train.shape[1]),
           "ridge_alpha": ridge["alpha"], "validation_accuracy": ridge["validation_accuracy"],
           "ridge_accuracy": ridge["accuracy"], "seconds": round(time.perf_counter() - start, 1)}
    write_text_atomic(kept, json.dumps(row, indent=2))
    return row


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out or REPO / "runs" / f"filters-{args.dataset}"
    out.mkdir(parents=True, exist_ok=True)
    measure = job_row if args.readout == "job" else ridge_row
    folders, rows = [], []
    for n_patches in args.counts:
        n_filters = None
        for method in sorted(set(args.methods) | {"extreme_point"}, key=METHODS.index):
            folder = out / f"{method}-{n_patches}"
            row = measure(folder, args, [*args.overrides, *method_settings(method, n_patches, n_filters)])
            n_filters = n_filters or row["filters"]
            folders.append(folder)
            rows.append({"method": method, "patches": n_patches, **row})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'method':>15} {'filters':>8} {'l1 test':>8} {'l1 train':>8} {'ridge':>7} {'used':>7} {'seconds':>8}")
    for row in rows:
        cells = [f"{row[key]:.4f}" if row.get(key) is not None else "" for key in ("accuracy", "train_accuracy",
                                                                                  "ridge_accuracy")]
        print(f"{row['method']:>15} {row['filters']:>8} {cells[0]:>8} {cells[1]:>8} {cells[2]:>7} "
              f"{row.get('features_used') or '':>7} {row['seconds']:8.1f}")
    (out / "filters.json").write_text(json.dumps(rows, indent=2))
    if args.readout == "job":
        html, _ = write_report(folders)
        print(f"report: {html}")
    else:
        curves = {}
        for row in rows:
            curves.setdefault(f"{args.dataset}, {row['method']} (ridge read-out)", []).append(
                (row["filters"], row["ridge_accuracy"]))
        print(f"plot: {out / save_accuracy_plot(curves, out / 'accuracy_vs_filters.png')}")
    print(f"table: {out / 'filters.json'}")


if __name__ == "__main__":
    main()
