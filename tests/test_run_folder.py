"""The run folder's lock (pipeline/storage/run_folder.py)."""

import multiprocessing

import pytest

from pipeline.storage import RunFolder, RunFolderError


def hold(folder, started, release):
    with RunFolder(folder, log=lambda line: None):
        started.set()
        release.wait(30)


def test_a_second_job_on_a_held_folder_is_refused_naming_the_holder(tmp_path):
    context = multiprocessing.get_context("spawn")
    started, release = context.Event(), context.Event()
    holder = context.Process(target=hold, args=(tmp_path / "run", started, release))
    holder.start()
    try:
        assert started.wait(60)
        stale = tmp_path / "run" / ".model.npz.1.tmp"
        stale.write_text("the holder's temporary file")
        with pytest.raises(RunFolderError, match=rf"in use by another job \(process {holder.pid}\)"):
            with RunFolder(tmp_path / "run", log=lambda line: None):
                pass
        assert stale.exists()  # the refused job touched nothing of the holder's
    finally:
        release.set()
        holder.join(60)
    with RunFolder(tmp_path / "run", log=lambda line: None):  # free again once the holder is done
        assert not stale.exists()  # and the new holder cleans up what is stale


def test_a_file_is_not_a_run_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        with RunFolder(tmp_path / "file"):
            pass


def test_a_path_under_a_file_is_refused_before_anything_is_made(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match=r"--out .*file/run: .*file is a file, not a folder"):
        RunFolder(tmp_path / "file" / "run").check()
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        with RunFolder(tmp_path / "file" / "run" / "deeper"):
            pass
    assert (tmp_path / "file").read_text() == "x"
