"""Tests for the predictions CSV (pipeline/reporting/predictions.py)."""

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from data.core import DatasetError
from pipeline import cli
from pipeline.reporting.predictions import check_predictions_csv, write_predictions_csv


def test_predictions_csv_round_trip(tmp_path):
    out = tmp_path / "out"
    files = [tmp_path / "a,b.png", tmp_path / "plain.png", tmp_path / 'quote"d.png']
    classes = np.array(["cat", "dog, small", "cat"])
    scores = np.array([0.123456789, 1.0, 2.5e-7], dtype=np.float32)
    write_predictions_csv(out / "predictions.csv", files, classes, scores)
    with open(out / "predictions.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["file", "predicted_class", "score"]
        rows = list(reader)
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert [r["predicted_class"] for r in rows] == ["cat", "dog, small", "cat"]
    assert [r["score"] for r in rows] == ["0.123457", "1", "2.5e-07"]
    assert [p.name for p in out.iterdir()] == ["predictions.csv"]

def test_predictions_csv_overwrites_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "predictions.csv"
    target.write_text("old")
    write_predictions_csv(target, [tmp_path / "x.png"], ["cat"], [0.5])
    assert target.read_text(encoding="utf-8") == "file,predicted_class,score\n" + f"{tmp_path / 'x.png'},cat,0.5\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]

def test_predictions_csv_length_mismatch(tmp_path):
    with pytest.raises(ValueError, match=r"differ in length: 2, 1, 1"):
        write_predictions_csv(tmp_path / "p.csv", [tmp_path / "a.png", tmp_path / "b.png"], ["cat"], [0.5])
    assert list(tmp_path.iterdir()) == []

def test_predictions_csv_escapes_formulas_and_undecodable_names(tmp_path):
    names = [os.fsdecode(b"caf\xe9.png"), "=HYPERLINK(1).png", "+1.png", "-1.png", "@SUM.png", "\tx.png", "ok.png"]
    classes = ["cat", "dog", "=1+1", "cat", "cat", "cat", "-neg"]
    write_predictions_csv(tmp_path / "p.csv", [Path(name) for name in names], classes, [-0.5] * len(names))
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["file"] for row in rows] == ["caf\\xe9.png", "'=HYPERLINK(1).png", "'+1.png", "'-1.png",
                                             "'@SUM.png", "'\tx.png", "ok.png"]
    assert [row["predicted_class"] for row in rows] == ["cat", "dog", "'=1+1", "cat", "cat", "cat", "'-neg"]
    assert {row["score"] for row in rows} == {"-0.5"}  # numbers stay numbers

def test_predictions_csv_path_is_checked_before_any_work(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    check_predictions_csv(tmp_path / "new" / "deeper" / "p.csv")  # missing folders are created later
    with pytest.raises(DatasetError, match=r"a-folder: it is a folder; give a file name"):
        check_predictions_csv(tmp_path / "a-folder")
    with pytest.raises(DatasetError, match=r"a-file is not a folder this user may write in"):
        check_predictions_csv(tmp_path / "a-file" / "p.csv")
    with pytest.raises(DatasetError, match=r"cannot write the predictions to .*p\.csv: "):
        write_predictions_csv(tmp_path / "a-file" / "p.csv", [Path("x.png")], ["cat"], [0.5])
    # run.py refuses the --csv path before it loads a model (there is none here) or reads an image
    argv = ["predict", "--run", str(tmp_path / "no-model"), "--images", str(tmp_path)]
    assert cli.main([*argv, "--csv", str(tmp_path / "a-folder")]) == 2
    assert "it is a folder" in capsys.readouterr().err
