"""The whole job end to end on scikit-learn's digits, through the command line."""

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from pipeline import cli, load_model

REPO = Path(__file__).resolve().parents[1]

SMALL = ["patches.count=150", "patches.size=4", "output.beta=0.03", "output.tol=1e-3", "n_jobs=1"]


def train(tmp_path, *overrides, out="run"):
    argv = ["train", "--out", str(tmp_path / out)]
    for override in [*SMALL, *overrides]:
        argv += ["--set", override]
    return cli.main(argv)


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
    assert set(metrics["stage_seconds"]) == {"data", "whitening", "filters", "features", "output",
                                             "test_features", "evaluate"}
    assert metrics["peak_rss_mb"] > 0
    assert metrics["config"]["patches"]["count"] == 150
    assert np.sum(metrics["confusion_matrix"]) == 450
    model = load_model(tmp_path / "run")
    assert model.features_.filter_bank_.filters_.shape == (metrics["n_filters"], 16)
    assert model.output_layer_.coef_.shape == (metrics["n_features"], 10)
    np.testing.assert_array_equal(model.classes_, metrics["classes"])


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
    assert cache == ["features", "features", "filters", "output", "output", "test_features", "test_features",
                     "whitening"]


def test_same_seed_gives_identical_filters_with_one_or_two_jobs(tmp_path):
    assert train(tmp_path, "n_jobs=1", out="one") == 0
    assert train(tmp_path, "n_jobs=2", "filters.batch_size=64", out="two") == 0
    assert_same_model(tmp_path / "one", tmp_path / "two")


def assert_same_model(run_a, run_b):
    """Bit-identical model arrays, except the parameters that only say how to run (n_jobs, batch size)."""
    with np.load(run_a / "model.npz") as a, np.load(run_b / "model.npz") as b:
        arrays = [name for name in a.files if name != "__manifest_sha256__"]
        assert sorted(arrays) == sorted(name for name in b.files if name != "__manifest_sha256__")
        for name in arrays:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_job_killed_mid_stage_resumes_to_the_same_model(tmp_path):
    killed = tmp_path / "killed"
    argv = [sys.executable, "run.py", "train", "--out", str(killed)]
    for override in SMALL:
        argv += ["--set", override]
    child = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not list(killed.glob("cache/features-*.npz")) and child.poll() is None:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)  # in the output stage: features are cached, the model is not
    assert child.wait() == -signal.SIGKILL
    assert not (killed / "metrics.json").exists() and not (killed / "model.npz").exists()
    stale = killed / "cache" / ".output-0123.npz.999.tmp"
    stale.write_bytes(b"half a file")      # what a kill during a write leaves behind
    assert train(tmp_path, out="killed") == 0
    assert not stale.exists()
    assert train(tmp_path, out="straight") == 0
    assert_same_model(killed, tmp_path / "straight")
    assert (json.loads((killed / "metrics.json").read_text())["confusion_matrix"]
            == json.loads((tmp_path / "straight" / "metrics.json").read_text())["confusion_matrix"])


def load_digits_images(count):
    """The last ``count`` of scikit-learn's digits as uint8 (count, 8, 8) images."""
    return np.round(load_digits().images[-count:] * (255 / 16)).astype(np.uint8)


def test_predict_writes_a_csv_for_an_image_folder_tree_and_refuses_other_sizes(tmp_path, capsys):
    assert train(tmp_path) == 0
    digits = load_digits()
    images = load_digits_images(12)
    for i, (image, label) in enumerate(zip(images, digits.target[-12:])):
        (tmp_path / "new" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "new" / str(label) / f"{i:02d}.png")
    assert cli.main(["predict", "--run", str(tmp_path / "run"), "--images", str(tmp_path / "new")]) == 0
    with open(tmp_path / "run" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    model = load_model(tmp_path / "run")
    by_file = {Path(row["file"]).name: row for row in rows}
    expected = model.predict(images)
    assert [by_file[f"{i:02d}.png"]["predicted_class"] for i in range(12)] == list(expected)
    assert np.mean(expected == digits.target[-12:].astype(str)) >= 0.75
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "new" / "odd.png")
    capsys.readouterr()
    assert cli.main(["predict", "--run", str(tmp_path / "run"), "--images", str(tmp_path / "new")]) == 2
    assert "odd.png is 8x9 grayscale" in capsys.readouterr().err
    assert cli.main(["predict", "--run", str(tmp_path / "nothing"), "--images", str(tmp_path / "new")]) == 2


def test_config_errors_exit_2_with_every_problem_and_write_nothing(tmp_path, capsys):
    assert train(tmp_path, "patches.cout=10", "patches.eps=-1") == 2
    error = capsys.readouterr().err
    assert "unknown key patches.cout (did you mean patches.count?)" in error
    assert "patches.eps must be a float in the range (0.0, inf), got -1" in error
    assert not (tmp_path / "run").exists()


def test_missing_dataset_exits_2_naming_the_expected_files(tmp_path, capsys):
    argv = ["train", "--config", "configs/mnist.yaml", "--data-root", str(tmp_path / "nowhere"),
            "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in error
    assert not (tmp_path / "run").exists()


def test_features_on_disk_give_the_model_of_the_in_memory_run(tmp_path):
    assert train(tmp_path, out="memory") == 0
    assert train(tmp_path, "features.storage=disk", "features.dtype=float16", "output.working_set=64",
                 out="disk") == 0
    stores = sorted(p.name.split("-")[0] for p in (tmp_path / "disk" / "cache").glob("*.npy"))
    assert stores == ["features", "test_features"]
    memory, disk = (json.loads((tmp_path / run_dir / "metrics.json").read_text()) for run_dir in ("memory", "disk"))
    assert disk["n_features"] == memory["n_features"]
    assert disk["test_accuracy"] == pytest.approx(memory["test_accuracy"], abs=0.01)
    assert disk["beta_max"] == pytest.approx(memory["beta_max"], rel=1e-3)  # float16 features


@pytest.mark.parametrize("method", ["random_patches", "kmeans", "gaussian"])
def test_other_filter_methods_train_from_the_config(tmp_path, method):
    assert train(tmp_path, f"filters.method={method}", "filters.count=60") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_filters"] == 60 and metrics["filter_method"] == method
    assert metrics["test_accuracy"] > 0.8
    assert "n_inside_hull" not in metrics


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_visualize_and_report_write_pictures_and_pages_that_render(tmp_path):
    assert train(tmp_path, "patches.count=60", "output.beta=auto", out="small") == 0
    assert train(tmp_path) == 0
    assert cli.main(["visualize", "--run", str(tmp_path / "run")]) == 0
    for name in ("filters.png", "filters_by_class.png"):
        assert Image.open(tmp_path / "run" / name).size[0] > 100
    assert cli.main(["report", "--run", str(tmp_path / "run"), "--run", str(tmp_path / "small")]) == 0
    markdown = (tmp_path / "run" / "report.md").read_text()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert f"| run | convex_rf | digits (1347) | {metrics['n_filters']} extreme_point filters |" in markdown
    assert "| small | convex_rf | digits (1347) | " in markdown and "accuracy_vs_filters.png" in markdown
    page = (tmp_path / "run" / "report.html").read_text()
    path = json.loads((tmp_path / "small" / "metrics.json").read_text())["beta_path"]
    chosen = next(i for i, point in enumerate(path, 1) if point["chosen"])
    assert "## Run small" in markdown and "path_1.png" in markdown and "path_0.png" not in markdown
    assert f"| {chosen} | {path[chosen - 1]['beta_ratio']:.4g} | {path[chosen - 1]['n_features']} |" in markdown
    for image in ("confusion_0.png", "confusion_1.png", "accuracy_vs_filters.png", "filters.png", "path_1.png"):
        assert f'src="{image}"' in page and (tmp_path / "run" / image).is_file()
    if CHROMIUM is None:
        pytest.skip("no chromium here to render the report (apt-get install chromium)")
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=5000", "--dump-dom",
                          (tmp_path / "run" / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert '<body data-images="ok">' in dom  # every picture loaded (the page's own check)


TABLE_MODELS = {"least_squares": [], "closed_form": ["data.n_train=40", "closed_form.beta=0.5"],
                "backprop": ["backprop.n_hidden=50", "backprop.learning_rate=1e-2"],
                "cutting_plane": ["data.n_train=300", "cutting_plane.max_rounds=5"]}


def test_the_other_table_1_models_train_report_and_visualize(tmp_path, capsys):
    for model, settings in TABLE_MODELS.items():
        assert train(tmp_path, f"model={model}", *settings, out=model) == 0
        metrics = json.loads((tmp_path / model / "metrics.json").read_text())
        assert metrics["model"] == model and metrics["objective"] > 0
        assert metrics["test_accuracy"] > {"closed_form": 0.3}.get(model, 0.85), model
        assert set(metrics["stage_seconds"]) == {"data", model, "evaluate"}
    cutting_plane = json.loads((tmp_path / "cutting_plane" / "metrics.json").read_text())
    assert 0 <= cutting_plane["relative_duality_gap"] < 1 and len(cutting_plane["rounds_per_class"]) == 10
    images = load_digits_images(4)
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    assert cli.main(["predict", "--run", str(tmp_path / "backprop"), "--images", str(tmp_path)]) == 0
    with open(tmp_path / "backprop" / "predictions.csv", newline="") as handle:
        predicted = [row["predicted_class"] for row in csv.DictReader(handle)]
    assert predicted == list(load_model(tmp_path / "backprop").predict(images))
    assert cli.main(["visualize", "--run", str(tmp_path / "cutting_plane")]) == 0
    assert Image.open(tmp_path / "cutting_plane" / "filters.png").size[0] > 100
    assert cli.main(["report"] + [f"--run={tmp_path / model}" for model in TABLE_MODELS]) == 0
    markdown = (tmp_path / "least_squares" / "report.md").read_text()
    for model, n_train in (("least_squares", 1347), ("closed_form", 40), ("backprop", 1347), ("cutting_plane", 300)):
        assert f"| {model} | {model} | digits ({n_train}) |" in markdown
    assert "duality gap" in markdown and "accuracy_vs_filters.png" not in markdown
    capsys.readouterr()
    assert train(tmp_path, "model=closed_form", out="too_many") == 2
    assert "needs at most as many samples as pixels (n <= d); got 1347 samples of 64 pixels" in capsys.readouterr().err
    assert train(tmp_path, "model=closed_form", "data.n_train=60", out="low_rank") == 2
    assert "span only 53 dimensions" in capsys.readouterr().err


def test_report_of_a_folder_without_a_finished_run_exits_2(tmp_path, capsys):
    assert cli.main(["report", "--run", str(tmp_path)]) == 2
    assert "metrics.json not found" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text('{"model": ')
    assert cli.main(["report", "--run", str(tmp_path)]) == 2
    assert "metrics.json is not valid JSON" in capsys.readouterr().err


def test_a_validation_split_replaces_the_test_set_for_tuning(tmp_path, capsys):
    assert train(tmp_path, "data.validation_fraction=0.2", "ridge_readout=true") == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("validation accuracy: ")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["evaluated_on"] == "validation" and "test_accuracy" not in metrics
    assert metrics["validation_accuracy"] > 0.9
    assert metrics["ridge_readout"]["accuracy"] > 0.9 and metrics["ridge_readout"]["alpha"] > 0
    assert np.sum(metrics["confusion_matrix"]) == 270   # 20% of the 1347 digits training images
    assert cli.main(["report", "--run", str(tmp_path / "run")]) == 0
    assert "(validation)" in (tmp_path / "run" / "report.md").read_text()


def test_a_full_disk_while_saving_exits_2_and_leaves_the_previous_run_whole(tmp_path, capsys, monkeypatch):
    """The model and its metrics are saved as one group: a failed save replaces neither (no mixed pair)."""
    assert train(tmp_path) == 0
    files = ("model.npz", "model.json", "metrics.json")
    before = {name: (tmp_path / "run" / name).read_bytes() for name in files}
    real_write = Path.write_text

    def full_disk(path, *args, **kwargs):
        if path.name.startswith(".metrics.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    capsys.readouterr()
    assert train(tmp_path, "output.beta=0.05") == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: no space left on the device ({tmp_path / 'run'}): free some space")
    monkeypatch.undo()
    assert {name: (tmp_path / "run" / name).read_bytes() for name in files} == before
    assert not list((tmp_path / "run").glob(".*.tmp"))
    assert cli.main(["report", "--run", str(tmp_path / "run")]) == 0


def image_folder(root, classes, pixels):
    """``root/{train,test}/<class>/<i>.png`` of 8 x 8 grayscale images ``pixels(rng)``; the train --set overrides."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(pixels(rng)).save(root / split / name / f"{i}.png")
    return ["data.name=image_folder", f"data.train_root={root / 'train'}", f"data.test_root={root / 'test'}",
            "patches.count=20", "patches.size=3"]


def nearly_flat(rng):
    """Black but for one grey corner pixel: texture that hardly any 3 x 3 patch sees."""
    image = np.zeros((8, 8), np.uint8)
    image[0, 0] = rng.integers(1, 256)
    return image


@pytest.mark.parametrize("classes, pixels, message", [
    ("a", lambda rng: rng.integers(0, 256, (8, 8), dtype=np.uint8),
     "training needs images of at least 2 classes; the training set has only ['a']: add a sub-folder"),
    ("ab", lambda rng: np.zeros((8, 8), np.uint8), "all 12 training images are flat"),
    ("ab", nearly_flat, "the filter bank is empty: all 20 patches lie inside the convex hull")])
def test_data_that_cannot_train_a_model_exits_2_with_what_is_wrong(tmp_path, capsys, classes, pixels, message):
    settings = image_folder(tmp_path / "data", classes, pixels)
    assert train(tmp_path, *settings) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error
    assert not (tmp_path / "run" / "model.npz").exists()


def test_an_out_that_is_or_lies_under_a_file_exits_2_before_the_data_are_read(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out in ("file", "file/run"):
        assert train(tmp_path, out=out) == 2
        printed = capsys.readouterr()
        assert "[data]" not in printed.out and "is a file, not a folder" in printed.err
    assert (tmp_path / "file").read_text() == "x"


def test_bad_command_line_values_exit_2_before_any_work(tmp_path, capsys):
    for argv in (["visualize", "--run", str(tmp_path), "--max-filters", "0"],
                 ["visualize", "--run", str(tmp_path), "--max-filters", "-3"],
                 ["predict", "--run", str(tmp_path), "--images", str(tmp_path), "--device", "gpu"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "expected a whole number of at least 1, got '0'" in error and "got '-3'" in error
    assert "argument --device: invalid choice: 'gpu'" in error


def test_horizontal_flips_double_the_training_rows_of_the_output_layer_and_the_ridge_read_out(tmp_path, capsys):
    assert train(tmp_path, "data.horizontal_flips=true", "ridge_readout=true") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_train"] == 1347 and np.sum(metrics["confusion_matrix"]) == 450
    assert metrics["train_accuracy"] > 0.9 and metrics["ridge_readout"]["accuracy"] > 0.9
    stored, = (tmp_path / "run" / "cache").glob("features-*")
    assert np.load(stored)["array"].shape == (2 * 1347, metrics["n_features"])
    assert train(tmp_path, "data.horizontal_flips=true", "model=least_squares", out="pixels") == 2
    assert "data.horizontal_flips augments the Convex-RF output layer's rows" in capsys.readouterr().err
