"""Shared by the benchmark runners: train one job in its own ``run.py train`` process, or reuse it."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train_run(folder, dataset, data_root, settings):
    """Train ``configs/<dataset>.yaml`` with ``--set`` ``settings`` into ``folder`` unless it already holds
    a finished run (``metrics.json``); returns the run's metrics. Each run is its own process, so its peak
    memory is its own."""
    folder = Path(folder)
    if not (folder / "metrics.json").is_file():
        command = [sys.executable, str(REPO / "run.py"), "train", "--config", str(REPO / "configs" / f"{dataset}.yaml"),
                   "--data-root", str(data_root), "--out", str(folder)]
        subprocess.run(command + [arg for setting in settings for arg in ("--set", setting)], check=True)
    return json.loads((folder / "metrics.json").read_text())
