"""A job's output folder, held by one job at a time.

:class:`RunFolder` takes an exclusive lock (``OUT/.lock``, ``fcntl.flock``: released by the kernel when
the process ends, however it ends) before anything in the folder is touched, so two jobs on one ``--out``
cannot replace each other's model or delete each other's temporary files; then it removes the
temporary files that a killed job left behind.
"""

import fcntl
import os
from pathlib import Path

from .atomic import remove_stale_temporaries

LOCK_NAME = ".lock"


class RunFolderError(ValueError):
    """The run folder cannot be used (not a folder, or held by another job); the message says why."""


class RunFolder:
    """Context manager: ``with RunFolder(out, log) as folder:`` holds ``out`` (a Path) for the block."""

    def __init__(self, path, log=print):
        self.path = Path(path)
        self.log = log
        self._handle = None

    def check(self):
        """Raise RunFolderError unless the folder exists or can be made: the path and the nearest of its
        parents that exists must be folders this user may write in (cheap: nothing is created)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"--out {self.path} is a file, not a folder: give a folder for the run")
        existing = next(parent for parent in (self.path, *self.path.absolute().parents) if parent.exists())
        if not existing.is_dir():
            raise RunFolderError(f"--out {self.path}: {existing} is a file, not a folder; give a folder path")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise RunFolderError(f"--out {self.path}: this user may not write in {existing}; give another folder")

    def __enter__(self):
        self.check()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / LOCK_NAME, "a+")
        except OSError as error:
            raise RunFolderError(f"--out {self.path} cannot be used as a run folder ({error.strerror}); "
                                 "give another folder") from error
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunFolderError(f"{self.path} is in use by another job ({holder}); wait for it to finish "
                                 "or give another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}\n")
        handle.flush()
        self._handle = handle
        if remove_stale_temporaries(self.path):
            self.log(f"[resume] removed temporary files of an interrupted run in {self.path}")
        return self.path

    def __exit__(self, *exc):
        self._handle.close()  # releases the lock
        self._handle = None
        return False
