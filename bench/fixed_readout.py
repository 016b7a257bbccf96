"""A trained run's output layer scored on test features computed in float32 and in bfloat16.

    python bench/fixed_readout.py --run RUN_FOLDER [--data-root DIR] [--block 500] [--json FILE]

The fitted model of ``python run.py train`` (``RUN_FOLDER``; a CIFAR-10 JPEG run by default, whose
ImageFolder copy ``--train-root`` / ``--test-root`` name; ``--dataset`` another dataset, split by its
defaults) keeps its filters and its output layer (the fixed read-out); its feature map transforms the test images once per compute dtype, block by block (``--block`` images, so
that no (10,000 x 160,000) float32 matrix is held), and the read-out scores both. Prints and writes (``--json``)
each dtype's test accuracy and feature-stage seconds, the accuracy difference, the share of test images
classified differently and the relative error of the bfloat16 pooled features in norm.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from data import load_splits
from filter_stage import blas_description  # (bench/filter_stage.py)
from pipeline.model_files import load_run

DTYPES = ("float32", "bfloat16")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder of `python run.py train`")
    parser.add_argument("--dataset", default="image_folder", help="data.name of the run (its default splits)")
    parser.add_argument("--data-root", default=os.path.expanduser("~/datasets"))
    parser.add_argument("--train-root", default="cifar10-jpeg/train")
    parser.add_argument("--test-root", default="cifar10-jpeg/test")
    parser.add_argument("--block", type=int, default=500, help="test images transformed at a time")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def score_blocks(model, images, block):
    """Per dtype: predicted labels and feature-stage seconds; and the squared norms of the float32 features
    and of the bfloat16 ones' difference from them, accumulated block by block."""
    predictions = {dtype: [] for dtype in DTYPES}
    seconds = dict.fromkeys(DTYPES, 0.0)
    norms = {"float32": 0.0, "difference": 0.0}
    for start in range(0, len(images), block):
        features = {}
        for dtype in DTYPES:
            began = time.perf_counter()
            features[dtype] = model.features_.set_params(compute_dtype=dtype).transform(images[start:start + block])
            seconds[dtype] += time.perf_counter() - began
            predictions[dtype].append(model.output_layer_.predict(features[dtype]))
        norms["float32"] += float(np.sum(features["float32"].astype(np.float64) ** 2))
        norms["difference"] += float(np.sum((features["bfloat16"].astype(np.float64) - features["float32"]) ** 2))
        print(f"  {start + len(features['float32'])}/{len(images)} test images", flush=True)
    return {dtype: np.concatenate(values) for dtype, values in predictions.items()}, seconds, norms


def main(argv=None):
    args = parse_args(argv)
    model, metrics = load_run(args.run)
    folders = {"train_root": args.train_root, "test_root": args.test_root} if args.dataset == "image_folder" else {}
    _, test = load_splits(args.dataset, args.data_root, **folders)
    print(f"{args.run}: {model.features_.weights_.shape[1]} filters, trained with features in "
          f"{metrics.get('features_compute_dtype', {}).get('used')}; numpy BLAS: {blas_description()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    predictions, seconds, norms = score_blocks(model, test.images, args.block)
    truth = np.asarray(test.classes)[test.labels]
    accuracy = {dtype: float(np.mean(predicted == truth)) for dtype, predicted in predictions.items()}
    result = {"run": str(args.run), "test_images": len(test.images), "filters": int(model.features_.weights_.shape[1]),
              "trained_with": metrics.get("features_compute_dtype", {}).get("used"), "run_test_accuracy": metrics.get("test_accuracy"),
              **{f"{dtype}_test_accuracy": accuracy[dtype] for dtype in DTYPES},
              **{f"{dtype}_seconds": round(seconds[dtype], 1) for dtype in DTYPES},
              "accuracy_difference_points": round(100 * (accuracy["bfloat16"] - accuracy["float32"]), 3),
              "share_classified_differently": float(np.mean(predictions["bfloat16"] != predictions["float32"])),
              "feature_relative_error": float(np.sqrt(norms["difference"] / norms["float32"])),
              "torch_threads": torch.get_num_threads()}
    print(f"{'dtype':>9} {'test acc':>9} {'seconds':>8}")
    for dtype in DTYPES:
        print(f"{dtype:>9} {accuracy[dtype]:>9.4f} {seconds[dtype]:>8.1f}")
    print(f"difference {result['accuracy_difference_points']:+.3f} points, {result['share_classified_differently']:.4f} "
          f"of the test images classified differently, bfloat16 features {result['feature_relative_error']:.2e} "
          "off in norm")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
