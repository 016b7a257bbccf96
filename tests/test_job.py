"""The whole job end to end on scikit-learn's digits, through the command line."""

import json

import numpy as np
import pytest

import run

SMALL = ["patches.count=150", "patches.size=4", "output.beta=0.03", "output.tol=1e-3", "n_jobs=1"]


def train(tmp_path, *overrides, out="run"):
    argv = ["train", "--out", str(tmp_path / out)]
    for override in [*SMALL, *overrides]:
        argv += ["--set", override]
    return run.main(argv)


def test_digits_job_end_to_end(tmp_path, capsys):
    assert train(tmp_path) == 0
    printed = capsys.readouterr().out
    last = printed.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert float(last.split(": ")[1]) == pytest.approx(metrics["test_accuracy"], abs=5e-5)
    assert metrics["test_accuracy"] > 0.9
    assert metrics["train_accuracy"] >= metrics["test_accuracy"] - 0.05
    assert metrics["n_filters"] + metrics["n_inside_hull"] == 150
    assert metrics["max_relative_gap"] <= 1e-8
    assert set(metrics["stage_seconds"]) == {"data", "patches", "filters", "features", "output", "evaluate"}
    assert metrics["peak_rss_mb"] > 0
    assert metrics["config"]["patches"]["count"] == 150
    assert np.sum(metrics["confusion_matrix"]) == 450
    with np.load(tmp_path / "run" / "filters.npz") as filters:
        assert filters["filters"].shape == (metrics["n_filters"], 16)
    with np.load(tmp_path / "run" / "output_layer.npz") as layer:
        assert layer["coef"].shape == (metrics["n_features"], 10)


def test_rerun_reuses_cached_stages_and_reruns_changed_ones(tmp_path, capsys):
    assert train(tmp_path) == 0
    first = json.loads((tmp_path / "run" / "metrics.json").read_text())
    capsys.readouterr()
    assert train(tmp_path) == 0
    printed = capsys.readouterr().out
    assert "round 1" not in printed           # the filters came from the cache
    second = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert second["test_accuracy"] == first["test_accuracy"]
    assert train(tmp_path, "features.pooling=max") == 0
    cache = sorted(p.name.split("-")[0] for p in (tmp_path / "run" / "cache").iterdir())
    assert cache == ["features", "features", "filters", "patches"]


def test_same_seed_gives_identical_filters_with_one_or_two_jobs(tmp_path):
    assert train(tmp_path, "n_jobs=1", out="one") == 0
    assert train(tmp_path, "n_jobs=2", "filters.batch_size=64", out="two") == 0
    with np.load(tmp_path / "one" / "filters.npz") as one, np.load(tmp_path / "two" / "filters.npz") as two:
        np.testing.assert_array_equal(one["filters"], two["filters"])


def test_config_errors_exit_2_with_every_problem_and_write_nothing(tmp_path, capsys):
    assert train(tmp_path, "patches.cout=10", "patches.eps=-1") == 2
    error = capsys.readouterr().err
    assert "unknown key patches.cout (did you mean patches.count?)" in error
    assert "patches.eps must be >= 0" in error
    assert not (tmp_path / "run").exists()


def test_missing_dataset_exits_2_naming_the_expected_files(tmp_path, capsys):
    argv = ["train", "--config", "configs/mnist.yaml", "--data-root", str(tmp_path / "nowhere"),
            "--out", str(tmp_path / "run")]
    assert run.main(argv) == 2
    error = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in error
    assert not (tmp_path / "run").exists()
