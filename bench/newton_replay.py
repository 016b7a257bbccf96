"""Replay one Newton solve (``pipeline.readout.newton.solve_gram``) in this checkout and in a reference one.

    python bench/newton_replay.py PROBLEM.npz [PROBLEM.npz ...] --reference CHECKOUT [--json FILE]

``PROBLEM.npz`` holds a solve's inputs: ``G`` (m, m), ``c`` (m, K), ``beta``, ``W0`` (m, K) and ``tol`` (saved
from a path's solves by wrapping ``solve_gram``, e.g. the CIFAR-10 path's points with all features in the
set). Each version runs in its own subprocess on the same machine, one after the other; the rows give
seconds, Newton iterations, the final violation, objective and support, and the ratio to the reference.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from filter_stage import blas_description  # (bench/filter_stage.py)
from training import REPO

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from pipeline.readout.newton import solve_gram
with np.load(sys.argv[2]) as problem:
    G, c, beta, tol = np.ascontiguousarray(problem["G"]), problem["c"], float(problem["beta"]), float(problem["tol"])
    W0 = problem["W0"].reshape(c.shape)
solve_gram(G[:50, :50], c[:50], beta, None, group=True, tol=tol)  # numba's compilation, not timed
start = time.perf_counter()
W, n_iter, violation = solve_gram(G, c, beta, W0, group=True, tol=tol, max_iter=500)
seconds = time.perf_counter() - start
objective = 0.5 * np.sum(W * (G @ W)) - np.sum(c * W) + beta * np.linalg.norm(W, axis=1).sum()
print(json.dumps(dict(seconds=seconds, iterations=n_iter, violation=violation, objective=float(objective),
                      support=int(np.count_nonzero(np.any(W != 0, axis=1))),
                      start_support=int(np.count_nonzero(np.any(W0 != 0, axis=1))), m=len(G))))
"""


def replay(checkout, problem):
    """The child's JSON row for ``problem`` solved by the code in ``checkout``."""
    output = subprocess.run([sys.executable, "-c", CHILD, str(checkout), str(problem)], check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("problems", nargs="+", type=Path)
    parser.add_argument("--reference", type=Path, required=True, help="checkout of the version to compare with")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    print(blas_description())
    rows = []
    print(f"{'problem':>12} {'version':>9} {'m':>6} {'start':>6} {'support':>7} {'iter':>5} {'seconds':>8} "
          f"{'vs ref':>7} {'violation':>9} {'objective':>16}")
    for problem in args.problems:
        reference = None
        for version, checkout in (("reference", args.reference), ("this", REPO)):
            row = dict(problem=problem.name, version=version, **replay(checkout, problem))
            reference = reference or row["seconds"]
            rows.append(row)
            print(f"{row['problem']:>12} {version:>9} {row['m']:6d} {row['start_support']:6d} {row['support']:7d} "
                  f"{row['iterations']:5d} {row['seconds']:8.1f} {row['seconds'] / reference:7.2f} "
                  f"{row['violation']:9.2e} {row['objective']:16.9f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"blas": blas_description(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
