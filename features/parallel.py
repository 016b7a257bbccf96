"""Where parallel work runs: local joblib workers, or a Dask cluster through joblib's dask backend."""

from contextlib import contextmanager

import joblib


@contextmanager
def parallel_backend(scheduler=None, scatter=None):
    """Run the ``joblib.Parallel`` calls inside on a Dask cluster when ``scheduler`` is given.

    Parameters
    ----------
    scheduler : None, a scheduler address such as ``"tcp://10.0.0.5:8786"``, or a
        ``dask.distributed.Client``. None keeps joblib's local (loky) workers.
    scatter : list of arrays to send to the workers once, instead of with every task.
    """
    if scheduler is None:
        yield
        return
    try:
        from dask.distributed import Client
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError("a Dask scheduler was given but dask.distributed is not installed: "
                          "pip install 'dask[distributed]'") from error
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        with joblib.parallel_config(backend="dask", scatter=scatter):
            yield
    finally:
        if client is not scheduler:
            client.close()
