"""Benchmark of the feature stage (conv + ReLU + pool), float32 and bfloat16, and of the out-of-core output layer.

    python bench/feature_stage.py [--filters 1600,4000,16000] [--images 256] [--repeats 2] [--json FILE]
                             [--data-root DIR]

``--json FILE`` writes the throughput rows (a list, one object per filter count: ``filters``,
``gflops``, ``gemm_gflops``, ``ratio``, ``compute_dtype``, ``bf16_gflops``, ``bf16_gemm_gflops``,
``bf16_ratio``, ``speedup_vs_float32``, ...) to FILE and the output-layer comparison next to it, to
``FILE-stem-output-layer.json`` (with ``--stage-filters``, the stage estimate to ``FILE-stem-stage.json``).

1. Feature throughput. For each filter count F: :func:`features.feature_map.conv_relu_pool` on
   CIFAR-10 training images (6x6 patches, stride 1, 4-quadrant sum pooling: 729 positions of
   d = 108 values per image) in float32 and in bfloat16, against plain GEMMs of the same shapes in the
   same dtypes measured in the same run: the chunk's (images x 729, 108) x (108, F) product that the
   feature stage makes (chunks of each dtype's size), with a preallocated output, repeated over the same
   number of images. All count ``2 N 729 108 F`` floating-point operations. ``ratio`` (float32) and
   ``bf16_ratio`` are the feature stage's GFLOP/s over its dtype's GEMM's; ``speedup_vs_float32`` is the
   bfloat16 feature stage's GFLOP/s over the float32 one's; ``compute_dtype`` is what ``"auto"`` chose
   here (the calibration's GFLOP/s beside it). The four are timed round-robin, ``--repeats`` times, and
   each keeps its fastest time, so that load from other jobs on the machine skews them alike. The filters
   are random unit vectors (the throughput depends on the shapes only). The two-sided encoding
   (``negated_offset``: the responses to F filters and their negations from one GEMM), in
   ``compute_dtype``, is timed against the same 2F features computed as 2F filters: ``two_sided_ratio``.
2. With ``--stage-filters F``: the two feature stages of ``configs/cifar10-40k.yaml`` (F filters, float16
   storage), timed in both dtypes on ``--stage-images`` images and extrapolated linearly to CIFAR-10's
   60,000 images (an extrapolation, not a run of the stage).
3. Output layer (unless ``--fit-images 0``), in memory against streamed from disk. Features of
   ``--fit-images`` images and ``--fit-filters`` filters, fitted by :class:`pipeline.L1OutputLayer` from an
   in-memory array and from a :class:`pipeline.FeatureStore` (both out-of-core
   strategies); time, peak of numpy/Python allocations (tracemalloc) and the objective of each.
"""

import argparse
import json
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch


from data import DatasetError, load_splits
from features.compute_dtype import TORCH_DTYPES, calibrate
from features.feature_map import chunk_size, conv_relu_pool
from filter_stage import blas_description, load_images  # (bench/filter_stage.py)
from pipeline.storage import FeatureStore
from pipeline import L1OutputLayer

PATCH_SIZE, POSITIONS, PATCH_DIM, MEMORY_MB = 6, 27 * 27, 108, 32
CIFAR10_IMAGES = 60_000  # training and test images: the two feature stages of a CIFAR-10 job


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


def feature_run(images, weights, offset, **options):
    """A callable computing the features of ``images`` (``options``: those of ``conv_relu_pool``)."""
    options = {"memory_mb": MEMORY_MB, **options}
    return lambda: conv_relu_pool(images, weights, offset, patch_size=PATCH_SIZE, eps=0.01, **options)


def gemm_run(n_images, weights, dtype):
    """A callable making the feature stage's products as plain GEMMs in ``dtype`` ("float32" or
    "bfloat16"): chunks (of that dtype's size) of (chunk x 729, 108) x (108, F) into one output."""
    dtype = TORCH_DTYPES[dtype]
    chunk = chunk_size(POSITIONS, PATCH_DIM, weights.shape[1], MEMORY_MB, dtype.itemsize)
    rows = torch.randn(chunk * POSITIONS, PATCH_DIM).to(dtype)
    weights = torch.from_numpy(weights).to(dtype)
    out = torch.empty(chunk * POSITIONS, weights.shape[1], dtype=dtype)

    def run():
        for first in range(0, n_images, chunk):
            n_rows = min(chunk, n_images - first) * POSITIONS
            torch.matmul(rows[:n_rows], weights, out=out[:n_rows])

    return run


def best_seconds(runs, repeats):
    """{name: fastest of ``repeats`` timed calls} of the callables ``runs``, after one warm-up call each,
    called round-robin so that a change of load on the machine affects all of them alike."""
    seconds = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in seconds.items()}


def throughput(images, n_filters, repeats):
    weights, offset = random_filters(n_filters)
    compute_dtype = calibrate().compute_dtype
    seconds = best_seconds({
        "float32": feature_run(images, weights, offset, compute_dtype="float32"),
        "bfloat16": feature_run(images, weights, offset, compute_dtype="bfloat16"),
        "gemm_float32": gemm_run(len(images), weights, "float32"),
        "gemm_bfloat16": gemm_run(len(images), weights, "bfloat16"),
        "two_sided": feature_run(images, weights, offset, negated_offset=offset, compute_dtype=compute_dtype),
        "as_2f": feature_run(images, np.hstack([weights, -weights]), np.hstack([offset, offset]),
                             compute_dtype=compute_dtype),
    }, repeats)
    gflops = {name: 2.0 * len(images) * POSITIONS * PATCH_DIM * n_filters / value / 1e9
              for name, value in seconds.items()}
    return {"filters": n_filters, "images": len(images), "seconds": round(seconds["float32"], 3),
            "gflops": round(gflops["float32"], 1), "gemm_seconds": round(seconds["gemm_float32"], 3),
            "gemm_gflops": round(gflops["gemm_float32"], 1), "ratio": round(gflops["float32"] / gflops["gemm_float32"], 3),
            "compute_dtype": compute_dtype, "bf16_seconds": round(seconds["bfloat16"], 3),
            "bf16_gflops": round(gflops["bfloat16"], 1), "bf16_gemm_gflops": round(gflops["gemm_bfloat16"], 1),
            "bf16_ratio": round(gflops["bfloat16"] / gflops["gemm_bfloat16"], 3),
            "speedup_vs_float32": round(gflops["bfloat16"] / gflops["float32"], 3),
            "two_sided_seconds": round(seconds["two_sided"], 3), "two_sided_as_2f_seconds": round(seconds["as_2f"], 3),
            "two_sided_ratio": round(seconds["as_2f"] / seconds["two_sided"], 3)}


def stage_estimate(images, n_filters, total_images, repeats, memory_mb=256):
    """The feature stages of ``configs/cifar10-40k.yaml`` (one-sided, quadrant sums, float16 storage,
    ``memory_mb`` 256) timed on ``images`` in both dtypes (round-robin, fastest of ``repeats``) and
    extrapolated linearly to ``total_images`` (train + test): minutes per dtype and their ratio."""
    weights, offset = random_filters(n_filters)
    out = np.empty((len(images), 4 * n_filters), dtype=np.float16)
    seconds = best_seconds({dtype: feature_run(images, weights, offset, memory_mb=memory_mb, out=out,
                                               compute_dtype=dtype) for dtype in ("float32", "bfloat16")}, repeats)
    minutes = {dtype: value / len(images) * total_images / 60 for dtype, value in seconds.items()}
    return {"filters": n_filters, "images_timed": len(images), "extrapolated_to_images": total_images,
            **{f"{dtype}_ms_per_image": round(value / len(images) * 1e3, 2) for dtype, value in seconds.items()},
            **{f"{dtype}_minutes": round(value, 1) for dtype, value in minutes.items()},
            "speedup_vs_float32": round(seconds["float32"] / seconds["bfloat16"], 3)}


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


THROUGHPUT_HEADER = (f"{'filters':>8} {'images':>7} {'fp32 s':>7} {'GFLOP/s':>8} {'GEMM':>6} {'ratio':>6} "
                     f"{'bf16 s':>7} {'GFLOP/s':>8} {'GEMM':>6} {'ratio':>6} {'speed-up':>9} {'2-sided s':>10} "
                     f"{'as 2F s':>8} {'speed-up':>9}")


def print_throughput(row):
    print(f"{row['filters']:>8} {row['images']:>7} {row['seconds']:>7.2f} {row['gflops']:>8.1f} "
          f"{row['gemm_gflops']:>6.0f} {row['ratio']:>6.2f} {row['bf16_seconds']:>7.2f} {row['bf16_gflops']:>8.1f} "
          f"{row['bf16_gemm_gflops']:>6.0f} {row['bf16_ratio']:>6.2f} {row['speedup_vs_float32']:>9.2f} "
          f"{row['two_sided_seconds']:>10.2f} {row['two_sided_as_2f_seconds']:>8.2f} {row['two_sided_ratio']:>9.2f}")


def print_comparison(comparison):
    print(f"\noutput layer on {comparison['fit_images']} x {comparison['fit_features']} features "
          f"({comparison['feature_mb']} MB float32):")
    print(f"{'fit':>18} {'seconds':>8} {'peak alloc MB':>14} {'objective':>14} {'rel diff':>9} {'used':>5}")
    for row in comparison["fits"]:
        print(f"{row['fit']:>18} {row['seconds']:>8.2f} {row['peak_alloc_mb']:>14.1f} {row['objective']:>14.6f} "
              f"{row['objective_rel_diff']:>9.1e} {row['features_used']:>5}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--filters", default="1600,4000,16000")
    parser.add_argument("--images", type=int, default=256, help="images per throughput measurement")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls of each measurement (the fastest counts)")
    parser.add_argument("--fit-images", type=int, default=2000, help="images of the output-layer comparison (0: skip)")
    parser.add_argument("--fit-filters", type=int, default=400)
    parser.add_argument("--stage-filters", type=int, default=0,
                        help="also time the 40k config's feature stages at this many filters (0: skip)")
    parser.add_argument("--stage-images", type=int, default=128, help="images timed for --stage-filters")
    parser.add_argument("--data-root", default=os.path.expanduser("~/datasets"))
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    images, labels, source = load_labelled(args.data_root)
    calibration = calibrate()
    environment = {"data": source, "torch_blas": torch_blas(), "torch_threads": torch.get_num_threads(),
                   "calibration_bf16_gflops": round(calibration.bfloat16_gflops, 1),
                   "calibration_fp32_gflops": round(calibration.float32_gflops, 1)}
    print(f"{source}; numpy BLAS: {blas_description()}; torch {torch.__version__}: {torch_blas()}, "
          f"{torch.get_num_threads()} threads; compute dtype auto -> {calibration.compute_dtype} (calibration: "
          f"bf16 {calibration.bfloat16_gflops:.0f} GFLOP/s vs fp32 {calibration.float32_gflops:.0f} GFLOP/s)")
    print(THROUGHPUT_HEADER)
    results = []
    for n_filters in [int(f) for f in args.filters.split(",")]:
        results.append({**throughput(images[:args.images], n_filters, args.repeats), **environment})
        print_throughput(results[-1])
    outputs = {"": results}
    if args.stage_filters:
        stage = {**stage_estimate(images[:args.stage_images], args.stage_filters, CIFAR10_IMAGES, args.repeats),
                 **environment}
        print(f"\nfeature stages of configs/cifar10-40k.yaml at {stage['filters']} filters, timed on "
              f"{stage['images_timed']} images and extrapolated to {stage['extrapolated_to_images']}: float32 "
              f"{stage['float32_ms_per_image']} ms/image ({stage['float32_minutes']} min), bfloat16 "
              f"{stage['bfloat16_ms_per_image']} ms/image ({stage['bfloat16_minutes']} min), "
              f"{stage['speedup_vs_float32']}x")
        outputs["-stage"] = stage
    if args.fit_images:
        with tempfile.TemporaryDirectory() as folder:
            outputs["-output-layer"] = output_layer_comparison(images[:args.fit_images], labels[:args.fit_images],
                                                              args.fit_filters, folder)
        print_comparison(outputs["-output-layer"])
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        for suffix, value in outputs.items():
            path = args.json.with_name(args.json.stem + suffix + args.json.suffix)
            path.write_text(json.dumps(value, indent=2))
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
