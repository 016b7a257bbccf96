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


def map_blocks(function, X, block_rows, n_jobs=1, scheduler=None):
    """Yield ``(start, function(X[start:start + block_rows]))`` for consecutive row blocks, in order.

    With ``n_jobs > 1`` or a ``scheduler`` the blocks are computed by joblib workers (locally or on
    the Dask cluster), ``n_jobs`` blocks in flight at a time; the results do not depend on where a
    block was computed when ``function`` treats rows independently.
    """
    starts = range(0, len(X), block_rows)
    if n_jobs == 1 and scheduler is None:
        for start in starts:
            yield start, function(X[start:start + block_rows])
        return
    with parallel_backend(scheduler):
        results = joblib.Parallel(n_jobs=n_jobs, return_as="generator")(
            joblib.delayed(function)(X[start:start + block_rows]) for start in starts)
        yield from zip(starts, results)
