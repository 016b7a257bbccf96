"""Command line of convexrf: ``convexrf`` (the installed console script) or ``python run.py``.

    python run.py train --config configs/digits.yaml [--data-root DIR] [--out DIR] [--set key=value ...]
    python run.py predict --run OUT --images PATH [--csv FILE] [--device cpu|cuda]
    python run.py visualize --run OUT
    python run.py report --run OUT [--run OUT2 ...]
"""

import argparse
import errno
import logging
import sys
from pathlib import Path

# The built-in default job (scikit-learn's digits) of a checkout; without one, the schema's defaults.
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits.yaml"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="convexrf", description="Convex-RF: extreme-point filters and an "
                                     "l1 output layer, trained by convex optimisation.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train and evaluate a model from a YAML config")
    train.add_argument("--config", type=Path, default=DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None,
                       help="YAML job file (default: configs/digits.yaml)")
    train.add_argument("--data-root", help="folder that holds the dataset (sets data.root)")
    train.add_argument("--out", type=Path, default=None,
                       help="run folder for metrics, model and stage cache (default: runs/<config name>)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set patches.count=2000 (repeatable)")
    predict = commands.add_parser("predict", help="classify an image file, a folder of images or an "
                                  "ImageFolder tree with a trained model; writes a CSV")
    predict.add_argument("--run", type=Path, required=True, help="run folder of `train` (holds model.npz)")
    predict.add_argument("--images", type=Path, required=True, help="image file or folder (searched recursively)")
    predict.add_argument("--csv", type=Path, default=None,
                         help="output CSV of file, predicted_class, score (default: RUN/predictions.csv)")
    predict.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                         help="torch device that computes the features (default: cpu, whatever "
                         "the model was trained on)")
    visualize = commands.add_parser("visualize", help="write OUT/filters.png and OUT/filters_by_class.png")
    visualize.add_argument("--run", type=Path, required=True, help="run folder of `train`")
    visualize.add_argument("--max-filters", type=positive_int, default=400,
                           help="filters in the montage (default 400)")
    report = commands.add_parser("report", help="write OUT/report.html and OUT/report.md for one or more runs")
    report.add_argument("--run", type=Path, action="append", required=True,
                        help="run folder of `train` (repeat to compare runs; the report goes to the first)")
    return parser.parse_args(argv)


def positive_int(text):
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    # Imported here so that --help answers at once, without loading torch.
    from data import DatasetError
    from pipeline import ConfigError, ModelFileError, RunFolderError

    try:
        commands = {"train": train, "predict": predict, "visualize": visualize, "report": report}
        commands[args.command](args)
    except (ConfigError, DatasetError, ModelFileError, RunFolderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the file system's answer to a path the user gave (or a full disk)
        print(f"error: {os_error_message(error)}", file=sys.stderr)
        return 2
    return 0


def os_error_message(error):
    """What went wrong for an OSError, on which path, and what to do (the text of its ``error:`` line)."""
    if error.errno is None:
        return str(error)
    where = f" ({error.filename})" if error.filename else ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device{where}: free some space or write to another disk, then run the "
                "command again (files being written were removed; finished stages are kept and reused)")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{error.strerror}{where}: give this user access to it, or use another path"
    return f"{error.strerror}{where}"


def train(args):
    from pipeline import load_config
    from pipeline import train as train_job

    config = load_config(args.config, args.overrides, data_root=args.data_root)
    out = args.out if args.out is not None else Path("runs") / (args.config.stem if args.config else "defaults")
    train_job(config, out, log=lambda line: print(line, flush=True))


def visualize(args):
    from pipeline.reporting import save_filter_pictures

    for path in save_filter_pictures(args.run, max_filters=args.max_filters):
        print(f"wrote {path}")


def report(args):
    from pipeline.reporting import write_report

    for path in write_report(args.run):
        print(f"wrote {path}")


def predict(args):
    import torch

    from data.image_files import read_images_for_prediction
    from pipeline.reporting.predictions import check_predictions_csv, write_predictions_csv
    from pipeline import ConfigError
    from pipeline.model_files import load_classifier

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError([f"--device {args.device}: torch finds no CUDA device here; use --device cpu"])
    csv_path = args.csv if args.csv is not None else args.run / "predictions.csv"
    check_predictions_csv(csv_path)  # before the work, not after it
    model = load_classifier(args.run, device=args.device)
    files, images = read_images_for_prediction(args.images, model.image_shape_)
    scores = model.class_scores(images)
    best = scores.argmax(axis=1)
    write_predictions_csv(csv_path, files, model.classes_[best], scores[range(len(best)), best])
    print(f"{len(files)} images classified; predictions written to {csv_path}")
