"""Command line of convexrf.

    python run.py train --config configs/digits.yaml [--data-root DIR] [--out DIR] [--set key=value ...]
"""

import argparse
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "digits.yaml"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="run.py", description="Convex-RF: extreme-point filters and an "
                                     "l1 output layer, trained by convex optimisation.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train and evaluate a model from a YAML config")
    train.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                       help="YAML job file (default: configs/digits.yaml)")
    train.add_argument("--data-root", help="folder that holds the dataset (sets data.root)")
    train.add_argument("--out", type=Path, default=None,
                       help="run folder for metrics, model and stage cache (default: runs/<config name>)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set patches.count=2000 (repeatable)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Imported here so that --help answers at once, without loading torch.
    from data import DatasetError
    from pipeline.config import ConfigError, load_config
    from pipeline.job import train

    try:
        config = load_config(args.config, args.overrides, data_root=args.data_root)
        out = args.out if args.out is not None else Path("runs") / args.config.stem
        train(config, out, log=lambda line: print(line, flush=True))
    except (ConfigError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
