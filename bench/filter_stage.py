"""Benchmark of the extreme-point filter stage on real CIFAR-10 patches.

    python bench/filter_stage.py [--sizes 1000,4000,16000,40000] [--json FILE] [--data-root DIR]

For each patch count P: normalised, ZCA-whitened 6x6x3 patches sampled from the CIFAR-10 training
images (a synthetic fallback when the images are not found), all P filters computed by
:func:`features.extreme_points.extreme_point_filters` in a fresh process (so its peak memory is its
own), and, on a random sample of the same patches in the same run, two references:

* a generic QP solver, Clarabel through qpsolvers, on ``min ||r||^2  s.t.  r + A_{-i}^T lambda = a_i,
  1^T lambda = 1, lambda >= 0`` (sparse, the formulation a modelling tool would build), timed per patch;
* scipy's NNLS on the exact augmented system ``[Y^T; 1^T] mu ~ [0; 1]`` (``Y_j = a_i - a_j``; see
  tests/test_extreme_points.py), whose normalised solution is the exact simplex minimiser.

``speedup_vs_generic`` is Clarabel's seconds per patch over ours (total time / P), at the same P.
"""

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import qpsolvers
import scipy.optimize
import scipy.sparse
from threadpoolctl import threadpool_info


from data import DatasetError, load_splits
from features.extreme_points import extreme_point_filters
from features.patches import normalize_patches, sample_patches
from features.whitening import ZCAWhitener

PATCH_SIZE, EPS, ZCA_EPS = 6, 0.01, 0.1


def load_images(data_root):
    """CIFAR-10 training images (N, 32, 32, 3) from ``data_root``, or synthetic smooth images."""
    try:
        train, _ = load_splits("image_folder", data_root, train_root="cifar10-jpeg/train",
                               test_root="cifar10-jpeg/test")
        return train.images, "CIFAR-10 (JPEG) training images"
    except DatasetError as error:
        print(f"note: {error}\nnote: using synthetic images instead", file=sys.stderr)
    rng = np.random.default_rng(0)
    noise = rng.random((5000, 35, 35, 3))
    smooth = sum(noise[:, r:r + 32, c:c + 32] for r in range(4) for c in range(4)) / 16
    return np.round(smooth * 255).astype(np.uint8), "synthetic smoothed-noise images"


def whitened_patches(images, n_patches, seed):
    """(P, 108) normalised, ZCA-whitened patches, as the pipeline makes them."""
    raw = sample_patches(images, PATCH_SIZE, n_patches, np.random.default_rng(seed))
    return ZCAWhitener(ZCA_EPS).fit_transform(normalize_patches(raw, EPS))


def solve_in_child(path, n_jobs, queue):
    """Child process: time the solver on the patches saved at ``path``; report peak memory."""
    patches = np.load(path)
    start = time.perf_counter()
    solution = extreme_point_filters(patches, n_jobs=n_jobs)
    seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rounds": solution.rounds,
               "max_rel_gap": solution.max_relative_gap, "n_inside_hull": solution.n_inside_hull,
               "mean_support": float(solution.support_sizes.mean()),
               "objectives": (solution.residual_norms ** 2).tolist()})


def peak_rss_mb():
    """Peak RSS of this process plus the peaks of its live joblib workers, MiB (an upper bound)."""
    total_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        from joblib.externals.loky import get_reusable_executor
        for pid in get_reusable_executor()._processes:
            status = Path(f"/proc/{pid}/status").read_text()
            total_kb += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    except (OSError, StopIteration, AttributeError):
        pass
    return round(total_kb / 1024, 1)


def clarabel_objective(patches, i):
    """Generic QP solve of patch ``i``: (objective, seconds)."""
    others = np.delete(patches, i, axis=0)
    n, d = others.shape
    start = time.perf_counter()
    quadratic = scipy.sparse.block_diag([scipy.sparse.csc_matrix((n, n)), 2 * scipy.sparse.identity(d)],
                                        format="csc")
    equality = scipy.sparse.vstack([
        scipy.sparse.hstack([scipy.sparse.csc_matrix(others.T), scipy.sparse.identity(d)]),
        scipy.sparse.hstack([np.ones((1, n)), scipy.sparse.csc_matrix((1, d))])], format="csc")
    lower = np.r_[np.zeros(n), np.full(d, -np.inf)]
    solution = qpsolvers.solve_qp(quadratic, np.zeros(n + d), A=equality, b=np.r_[patches[i], 1.0],
                                  lb=lower, solver="clarabel")
    seconds = time.perf_counter() - start
    return float(np.sum((patches[i] - solution[:n] @ others) ** 2)), seconds


def nnls_objective(patches, i):
    """Exact reference of patch ``i`` through NNLS on the augmented system: (objective, seconds)."""
    start = time.perf_counter()
    differences = patches[i] - np.delete(patches, i, axis=0)
    system = np.vstack([differences.T, np.ones(len(differences))])
    target = np.append(np.zeros(patches.shape[1]), 1.0)
    mu, _ = scipy.optimize.nnls(system, target, maxiter=50 * len(differences))
    seconds = time.perf_counter() - start
    return float(np.sum((mu / mu.sum() @ differences) ** 2)), seconds


def benchmark_size(images, n_patches, n_reference, n_jobs, seed):
    patches = whitened_patches(images, n_patches, seed)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "patches.npy"
        np.save(path, patches)
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(target=solve_in_child, args=(str(path), n_jobs, queue))
        child.start()
        ours = queue.get()
        child.join()
    sample = np.random.default_rng(seed + 1).choice(n_patches, size=min(n_reference, n_patches), replace=False)
    generic = [clarabel_objective(patches, i) for i in sample]
    exact = [nnls_objective(patches, i) for i in sample]
    objectives = np.asarray(ours.pop("objectives"))[sample]
    exact_objectives = np.array([value for value, _ in exact])
    generic_seconds = float(np.mean([seconds for _, seconds in generic]))
    return {
        "patches": n_patches,
        **{key: ours[key] for key in ("seconds", "peak_rss_mb", "max_rel_gap", "rounds", "n_inside_hull",
                                      "mean_support")},
        "reference_patches": len(sample),
        "max_rel_objective_diff": float(np.max(np.abs(objectives - exact_objectives) / exact_objectives)),
        "max_rel_objective_diff_generic": float(np.max(
            np.abs(objectives - [value for value, _ in generic]) / exact_objectives)),
        "generic_seconds_per_patch": generic_seconds,
        "nnls_seconds_per_patch": float(np.mean([seconds for _, seconds in exact])),
        "ours_seconds_per_patch": ours["seconds"] / n_patches,
        "speedup_vs_generic": generic_seconds / (ours["seconds"] / n_patches),
    }


def blas_description():
    return "; ".join(f"{lib['internal_api']} {lib.get('version')} ({lib['num_threads']} threads)"
                     for lib in threadpool_info())


COLUMNS = [("P", "patches", "d"), ("seconds", "seconds", ".1f"), ("peak MB", "peak_rss_mb", ".0f"),
           ("max gap", "max_rel_gap", ".1e"), ("obj diff", "max_rel_objective_diff", ".1e"),
           ("ours s/pt", "ours_seconds_per_patch", ".2e"), ("QP s/pt", "generic_seconds_per_patch", ".2e"),
           ("speedup", "speedup_vs_generic", ".0f"), ("rounds", "rounds", "d"), ("inside", "n_inside_hull", "d")]


def table_row(values):
    return "".join(f"{value:>11}" for value in values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,4000,16000,40000")
    parser.add_argument("--json", type=Path, help="write the results as a JSON list to this file")
    parser.add_argument("--data-root", default=os.path.expanduser("~/datasets"),
                        help="folder holding cifar10-jpeg/train (default: ~/datasets)")
    parser.add_argument("--reference-patches", type=int, default=5, help="patches checked per size")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images, source = load_images(args.data_root)
    print(f"data: {source}; {PATCH_SIZE}x{PATCH_SIZE}x3 patches, eps {EPS}, ZCA eps {ZCA_EPS}")
    print(f"BLAS: {blas_description()}; n_jobs {args.n_jobs}; {os.cpu_count()} CPUs")
    print(table_row(header for header, _, _ in COLUMNS))
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        row = benchmark_size(images, size, args.reference_patches, args.n_jobs, args.seed)
        results.append({**row, "data": source, "blas": blas_description(), "n_jobs": args.n_jobs})
        print(table_row(format(row[key], spec) for _, key, spec in COLUMNS), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
