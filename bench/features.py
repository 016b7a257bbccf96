"""Benchmark of the feature stage (conv + ReLU + pool) and of the out-of-core output layer.

    python bench/features.py [--filters 1600,4000,16000] [--images 512] [--json FILE] [--data-root DIR]

``--json FILE`` writes the throughput rows (a list, one object per filter count: ``filters``,
``gflops``, ``gemm_gflops``, ``ratio``, ...) to FILE and the output-layer comparison next to it,
to ``FILE-stem-output-layer.json``.

1. Feature throughput. For each filter count F: :func:`features.feature_map.conv_relu_pool` on
   CIFAR-10 training images (6x6 patches, stride 1, 4-quadrant sum pooling: 729 positions of
   d = 108 values per image), against a plain float32 GEMM of the same shape measured in the same
   run: the chunk's (images x 729, 108) x (108, F) product that the feature stage makes, with a
   preallocated output, repeated over the same number of images. Both count ``2 N 729 108 F``
   floating-point operations; ``ratio`` is the feature stage's GFLOP/s over the GEMM's. The filters
   are random unit vectors (the throughput depends on the shapes only). The two-sided encoding
   (``negated_offset``: the responses to F filters and their negations from one GEMM) is timed against
   the same 2F features computed as 2F filters (the previous version): ``two_sided_ratio``.
2. Output layer, in memory against streamed from disk. Features of ``--fit-images`` images and
   ``--fit-filters`` filters, fitted by :class:`pipeline.L1OutputLayer` from an
   in-memory array and from a :class:`pipeline.FeatureStore` (both out-of-core
   strategies); time, peak of numpy/Python allocations (tracemalloc) and the objective of each.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import DatasetError, load_splits  # noqa: E402
from features.feature_map import chunk_size, conv_relu_pool  # noqa: E402
from filters import blas_description, load_images  # noqa: E402  (bench/filters.py)
from pipeline.storage import FeatureStore  # noqa: E402
from pipeline import L1OutputLayer  # noqa: E402

PATCH_SIZE, POSITIONS, PATCH_DIM, MEMORY_MB = 6, 27 * 27, 108, 32


def load_labelled(data_root):
    """CIFAR-10 training images and labels in a seeded random order, or synthetic ones."""
    try:
        train, _ = load_splits("image_folder", data_root, train_root="cifar10-jpeg/train",
                               test_root="cifar10-jpeg/test")
    except DatasetError:
        images, source = load_images(data_root)  # prints why, falls back to synthetic images
        return images, np.arange(len(images)) % 10, source
    order = np.random.default_rng(0).permutation(len(train))
    return train.images[order], train.labels[order], "CIFAR-10 (JPEG) training images"


def torch_blas():
    """torch's BLAS and CPU capability, from its build configuration (e.g. "BLAS_INFO=mkl, AVX512")."""
    config = torch.__config__.show()
    blas = next((part.strip() for part in config.split(",") if "BLAS_INFO" in part), "BLAS_INFO=unknown")
    capability = next((line.split(":")[1].strip() for line in config.splitlines() if "CPU capability" in line), "")
    return f"{blas.split('=')[-1]} ({capability})"


def random_filters(n_filters, seed=0):
    """(d, F) float32 unit-norm filters and a zero offset."""
    weights = np.random.default_rng(seed).normal(size=(PATCH_DIM, n_filters)).astype(np.float32)
    return weights / np.linalg.norm(weights, axis=0), np.zeros(n_filters, np.float32)


def feature_seconds(images, weights, offset, **options):
    conv_relu_pool(images[:2], weights, offset, patch_size=PATCH_SIZE, eps=0.01, memory_mb=MEMORY_MB, **options)
    start = time.perf_counter()
    conv_relu_pool(images, weights, offset, patch_size=PATCH_SIZE, eps=0.01, memory_mb=MEMORY_MB, **options)
    return time.perf_counter() - start


def gemm_seconds(n_images, weights):
    """The same products as plain GEMMs: chunks of (chunk x 729, 108) x (108, F) into one output."""
    chunk = chunk_size(POSITIONS, PATCH_DIM, weights.shape[1], MEMORY_MB)
    rows = torch.randn(chunk * POSITIONS, PATCH_DIM)
    weights = torch.from_numpy(weights)
    out = torch.empty(chunk * POSITIONS, weights.shape[1])
    torch.matmul(rows, weights, out=out)
    start = time.perf_counter()
    for first in range(0, n_images, chunk):
        n_rows = min(chunk, n_images - first) * POSITIONS
        torch.matmul(rows[:n_rows], weights, out=out[:n_rows])
    return time.perf_counter() - start


def throughput(images, n_filters):
    weights, offset = random_filters(n_filters)
    flops = 2.0 * len(images) * POSITIONS * PATCH_DIM * n_filters
    ours, gemm = feature_seconds(images, weights, offset), gemm_seconds(len(images), weights)
    two_sided = feature_seconds(images, weights, offset, negated_offset=offset)
    as_filters = feature_seconds(images, np.hstack([weights, -weights]), np.hstack([offset, offset]))
    return {"filters": n_filters, "images": len(images), "seconds": round(ours, 3),
            "gflops": round(flops / ours / 1e9, 1), "gemm_seconds": round(gemm, 3),
            "gemm_gflops": round(flops / gemm / 1e9, 1), "ratio": round(gemm / ours, 3),
            "two_sided_seconds": round(two_sided, 3), "two_sided_as_2f_seconds": round(as_filters, 3),
            "two_sided_ratio": round(as_filters / two_sided, 3)}


def measured_fit(features, labels, **layer):
    tracemalloc.start()
    start = time.perf_counter()
    model = L1OutputLayer(beta=0.01, tol=1e-6, **layer).fit(features, labels)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return model, {"seconds": round(seconds, 2), "peak_alloc_mb": round(peak / 2**20, 1)}


def output_layer_comparison(images, labels, n_filters, folder):
    """In-memory against streamed fits of the same features; objectives on the in-memory array."""
    weights, offset = random_filters(n_filters, seed=1)
    features = conv_relu_pool(images, weights, offset, patch_size=PATCH_SIZE, eps=0.01)
    store = FeatureStore(Path(folder) / "features.npy").fill(np.asarray, features)
    rows = []
    for name, source, layer in [("in memory", features, {}), ("disk, working set", store, {}),
                                ("disk, stream", store, {"out_of_core": "stream"})]:
        model, row = measured_fit(source, labels, **layer)
        rows.append({"fit": name, **row, "objective": model.objective(features, labels),
                     "features_used": int(np.any(model.coef_ != 0, axis=1).sum())})
    reference = rows[0]["objective"]
    for row in rows:
        row["objective_rel_diff"] = abs(row["objective"] - reference) / reference
    return {"fit_images": len(images), "fit_features": features.shape[1],
            "feature_mb": round(features.nbytes / 2**20, 1), "fits": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--filters", default="1600,4000,16000")
    parser.add_argument("--images", type=int, default=512, help="images per throughput measurement")
    parser.add_argument("--fit-images", type=int, default=2000)
    parser.add_argument("--fit-filters", type=int, default=400)
    parser.add_argument("--data-root", default=os.path.expanduser("~/datasets"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    images, labels, source = load_labelled(args.data_root)
    print(f"{source}; numpy BLAS: {blas_description()}; torch {torch.__version__}: {torch_blas()}, "
          f"{torch.get_num_threads()} threads")
    results = []
    print(f"{'filters':>8} {'images':>7} {'ours s':>8} {'GFLOP/s':>8} {'GEMM s':>8} {'GEMM GFLOP/s':>13} {'ratio':>6}"
          f" {'2-sided s':>10} {'as 2F s':>8} {'speed-up':>9}")
    for n_filters in [int(f) for f in args.filters.split(",")]:
        row = throughput(images[:args.images], n_filters)
        results.append({**row, "data": source, "torch_blas": torch_blas(), "torch_threads": torch.get_num_threads()})
        print(f"{row['filters']:>8} {row['images']:>7} {row['seconds']:>8.2f} {row['gflops']:>8.1f} "
              f"{row['gemm_seconds']:>8.2f} {row['gemm_gflops']:>13.1f} {row['ratio']:>6.2f} "
              f"{row['two_sided_seconds']:>10.2f} {row['two_sided_as_2f_seconds']:>8.2f} {row['two_sided_ratio']:>9.2f}")
    with tempfile.TemporaryDirectory() as folder:
        comparison = output_layer_comparison(images[:args.fit_images], labels[:args.fit_images],
                                             args.fit_filters, folder)
    print(f"\noutput layer on {comparison['fit_images']} x {comparison['fit_features']} features "
          f"({comparison['feature_mb']} MB float32):")
    print(f"{'fit':>18} {'seconds':>8} {'peak alloc MB':>14} {'objective':>14} {'rel diff':>9} {'used':>5}")
    for row in comparison["fits"]:
        print(f"{row['fit']:>18} {row['seconds']:>8.2f} {row['peak_alloc_mb']:>14.1f} {row['objective']:>14.6f} "
              f"{row['objective_rel_diff']:>9.1e} {row['features_used']:>5}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        second = args.json.with_name(args.json.stem + "-output-layer.json")
        second.write_text(json.dumps(comparison, indent=2))
        print(f"wrote {args.json} and {second}")


if __name__ == "__main__":
    main()
