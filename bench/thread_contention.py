"""Benchmark of the Newton direction's thread settings: numpy's OpenBLAS pool against torch's OpenMP pool.

    python bench/thread_contention.py [--supports 500,1000,1500,2000,2500,3000,4000] [--repeats 5] [--json FILE]

:func:`pipeline.readout.newton.solve_gram` alternates numpy products (OpenBLAS) with the Newton
direction's factorisations (torch: MKL / OpenMP). After an OpenBLAS product its workers spin for a while
on the cores that torch's workers then need, and the other way round; on 2 cores small factorisations lose
more to that than a second thread gains. This script times, for each support size ``s``, the sequence one
Newton iteration makes: an OpenBLAS product ``G[:, S] @ Delta`` (the line search's, ``m = 2 s`` rows,
K = 10 classes), then :func:`pipeline.readout.newton.newton_direction`'s Woodbury solve (float32
Cholesky, inverse, capacitance Cholesky, refinement against float64 residuals), once with torch on one
thread and once on all of its threads, round-robin, keeping each one's fastest of ``--repeats``. The
problem is a random well-conditioned support (Gram matrix of Gaussian columns plus the penalty's diagonal).
``serial_faster`` says which setting won; ``project_choice`` is the setting ``newton_direction`` uses
(one thread below ``newton._SERIAL_BELOW``), so a row where the two disagree shows a threshold to move.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from feature_stage import best_seconds, torch_blas  # (bench/feature_stage.py)
from filter_stage import blas_description  # (bench/filter_stage.py)
from pipeline.readout import newton

N_CLASSES = 10


def support_problem(s, rng):
    """``(G_columns (2s, s), G_support (s, s), gradient (s, K), W_support (s, K), beta)`` of a random
    well-conditioned problem: the Gram matrix of ``3 s`` Gaussian rows, a warm start with no zero row."""
    B = rng.normal(size=(3 * s, 2 * s)) / np.sqrt(3 * s)
    G = B.T @ B
    W = rng.normal(size=(s, N_CLASSES))
    return G[:, :s], G[:s, :s].copy(), rng.normal(size=(s, N_CLASSES)), W, 0.1


def iteration_run(problem, n_threads):
    """A callable making one Newton iteration's product and direction with torch on ``n_threads``."""
    G_columns, G_support, gradient, W, beta = problem

    def run():
        G_columns @ W  # the OpenBLAS product that precedes the next factorisation
        with newton._torch_threads(n_threads):
            newton._woodbury_direction(G_support, beta / np.linalg.norm(W, axis=1),
                                       W / np.linalg.norm(W, axis=1)[:, None],
                                       lambda step: G_support @ step, -gradient)
    return run


def measure(s, repeats, all_threads, rng):
    problem = support_problem(s, rng)
    seconds = best_seconds({1: iteration_run(problem, 1), all_threads: iteration_run(problem, all_threads)},
                           repeats)
    return {"support": s, "classes": N_CLASSES, "ms_1_thread": round(1e3 * seconds[1], 2),
            f"ms_{all_threads}_threads": round(1e3 * seconds[all_threads], 2),
            "speedup_of_serial": round(seconds[all_threads] / seconds[1], 3),
            "serial_faster": bool(seconds[1] < seconds[all_threads]),
            "project_choice": 1 if s < newton._SERIAL_BELOW else all_threads}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supports", default="500,1000,1500,2000,2500,3000,4000",
                        help="comma-separated support sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the rows (and the BLAS setup) to this file")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    all_threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    setup = {"numpy_blas": blas_description(), "torch_blas": torch_blas(), "torch_threads": all_threads,
             "serial_below": newton._SERIAL_BELOW}
    print("; ".join(f"{key}: {value}" for key, value in setup.items()))
    print(f"{'support':>8} {'1 thread ms':>12} {f'{all_threads} threads ms':>12} {'serial x':>9} {'ours':>5}")
    rows = []
    for s in (int(value) for value in args.supports.split(",")):
        row = measure(s, args.repeats, all_threads, rng)
        rows.append(row)
        print(f"{s:>8} {row['ms_1_thread']:>12.1f} {row[f'ms_{all_threads}_threads']:>12.1f} "
              f"{row['speedup_of_serial']:>9.2f} {row['project_choice']:>5}")
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
