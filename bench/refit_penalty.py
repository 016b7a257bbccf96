"""Held-out accuracy of the l1 layer's refit against its ridge penalty ``output.refit_alpha``, on a finished run.

    python bench/refit_penalty.py RUN [--alphas 0 1 10 30 100 300 1000] [--json FILE]

``RUN`` is a ``run.py train`` folder of a convex_rf job with ``output.refit: true`` (its ``metrics.json``,
``model.npz`` and the training features in its stage cache). Its final model's support (the features the
l1 layer kept) is refitted on the output layer's own fit rows (the held-out split of ``beta: auto``:
``output.validation_fraction``, ``output.random_state``, mirrors kept with their images) for each penalty,
``min ||X_S W - Y||^2 + alpha ||W||^2`` on the standardised features and centred one-hot targets (alpha 0:
least squares), and scored on the held-out rows. The support was chosen with all rows, held-out ones
included, so the scores favour it a little; they compare penalties, not runs. No test image is read.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from pipeline.readout.ridge import held_out_scores
from pipeline.schema import data_source
from pipeline.storage import write_text_atomic


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="folder of a finished run.py train job")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 1.0, 10.0, 30.0, 100.0, 300.0, 1000.0])
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    return parser.parse_args(argv)


def training_rows(config):
    """(labels (N,), groups (N,) or None) of the job's training rows: the images, then their mirrors."""
    train_set, _ = data_source(config).load(config["seed"])
    if not config["data"]["horizontal_flips"]:
        return train_set.labels, None
    n = len(train_set.labels)
    return np.concatenate([train_set.labels, train_set.labels]), np.tile(np.arange(n), 2)


def support_columns(run):
    """(sorted indices of the features the final model uses, (N, |S|) their training features)."""
    with np.load(run / "model.npz") as model:
        support = np.flatnonzero(np.any(model["output_layer_/coef_"] != 0, axis=1))
    stored = sorted((run / "cache").glob("features-*.npz"))
    if len(stored) != 1:
        raise SystemExit(f"{run / 'cache'} holds {len(stored)} training feature files, not one: give the "
                         "folder of one finished job")
    with np.load(stored[0]) as features:
        return support, np.ascontiguousarray(features["array"][:, support])


def refit_scores(X, labels, groups, output, alphas):
    """Held-out accuracy of the refit on ``X`` (N, |S|) for each penalty in ``alphas``."""
    # alpha 0: a floor of 1e-9 N keeps Cholesky defined on a singular Gram block, below any rounding
    floored = [max(alpha, 1e-9 * len(X)) for alpha in alphas]
    scores = held_out_scores(X, labels, floored, output["validation_fraction"], output["random_state"], groups)
    return [scores[alpha] for alpha in floored]


def main(argv=None):
    args = parse_args(argv)
    metrics = json.loads((args.run / "metrics.json").read_text())
    config = metrics["config"]
    labels, groups = training_rows(config)
    support, X = support_columns(args.run)
    scores = refit_scores(X, labels, groups, config["output"], args.alphas)
    rows = [{"refit_alpha": alpha, "held_out_accuracy": score} for alpha, score in zip(args.alphas, scores)]
    print(f"{args.run}: {len(support)} of {metrics['n_features']} features, {len(labels)} rows "
          f"(refit_alpha of the run: {config['output'].get('refit_alpha', 0.0)})")
    print(f"{'refit_alpha':>11} {'held-out':>9}")
    for row in rows:
        print(f"{row['refit_alpha']:>11g} {row['held_out_accuracy']:>9.4f}")
    if args.json:
        write_text_atomic(args.json, json.dumps({"run": str(args.run), "support": len(support),
                                                 "n_features": metrics["n_features"], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
