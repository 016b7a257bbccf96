"""Linear operators of the output-layer problem: ``vec(W) -> vec(B W)`` in three forms.

Layout. The unknown is ``vec(W)`` in **row-major** (C) order, ``W.ravel()``: the K entries of a
feature's row are contiguous. That is the layout of spgl1's own MMV mode (``spg_mmv`` wraps ``A`` in
a block operator that reshapes ``x`` to ``(n_features, n_groups)``, and its ``_norm_l12_*`` functions
group consecutive runs of ``n_groups`` entries), so the group norm of
:mod:`pipeline.readout.penalties` is exactly spgl1's. The data vector is ``Y.ravel()`` (row-major too).

* :func:`stacked_operator`: in-memory features, one GEMM per product, ``B`` never copied;
* :class:`StreamedOperator`: features in a :class:`pipeline.storage.FeatureStore`, standardised on the
  fly, block by block;
* :func:`compressed_problem`: the ``F x F`` factor with the same least squares, when ``n > F``.
"""

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator

from .gram import cholesky_lower, gram_matrix



def stacked_operator(B, n_classes):
    """``vec(W) -> vec(B W)`` for ``W`` of shape ``(F, n_classes)``, both vectorised row-major.

    Shape ``(n * n_classes, F * n_classes)``: the block operator of spgl1's ``spg_mmv``
    (``I_K``-structured, i.e. ``B`` applied to every column of ``W``) without forming it; the adjoint
    is ``vec(R) -> vec(B^T R)``. ``B`` is used as is (no copy); the products run in ``B``'s precision
    (float32 or float64) and are returned as float64.
    """
    n, n_features = B.shape
    k = int(n_classes)

    def matvec(w):
        return (B @ np.reshape(w, (n_features, k)).astype(B.dtype, copy=False)).ravel().astype(np.float64, copy=False)

    def rmatvec(r):
        return (B.T @ np.reshape(r, (n, k)).astype(B.dtype, copy=False)).ravel().astype(np.float64, copy=False)

    return LinearOperator((n * k, n_features * k), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)


class StreamedOperator(LinearOperator):
    """``vec(W) -> vec(B_std W)`` (row-major, :func:`stacked_operator`'s layout)
    over a feature store, ``B_std = (B - mean) / scale``, computed block by block in float64.

    Shape ``(n K, F K)``. Never holds more than one block of ``B``.
    """

    def __init__(self, store, mean, scale, n_classes):
        self.store, self.mean, self.scale, self.k = store, mean, scale, int(n_classes)
        n_rows, n_features = store.shape
        super().__init__(dtype=np.float64, shape=(n_rows * self.k, n_features * self.k))

    def _matvec(self, w):
        weights = np.reshape(w, (-1, self.k)) / self.scale[:, None]
        out = np.empty((len(self.store), self.k))
        for start, block in self.store.row_blocks(dtype=np.float64):
            out[start:start + len(block)] = block @ weights
        out -= self.mean @ weights
        return out.ravel()

    def _rmatvec(self, r):
        residual = np.reshape(r, (-1, self.k))
        gradient = np.zeros((len(self.mean), self.k))
        for start, block in self.store.row_blocks(dtype=np.float64):
            gradient += block.T @ residual[start:start + len(block)]
        gradient -= np.outer(self.mean, residual.sum(axis=0))
        return (gradient / self.scale[:, None]).ravel()

    def residual_correlation(self, Y, W):
        """``(R, B_std^T R)`` for ``R = Y - B_std W`` (n, K), ``W`` (F, K), in one pass over the store
        (a :meth:`matvec` and an :meth:`rmatvec` would read it twice)."""
        weights = np.asarray(W, dtype=np.float64) / self.scale[:, None]
        offset = self.mean @ weights  # (K,): B_std W = B (W / scale) - mean . (W / scale)
        residual = np.empty((len(self.store), self.k))
        correlation = np.zeros((len(self.mean), self.k))
        for start, block in self.store.row_blocks(dtype=np.float64):
            rows = slice(start, start + len(block))
            residual[rows] = Y[rows] - block @ weights + offset
            correlation += block.T @ residual[rows]
        correlation -= np.outer(self.mean, residual.sum(axis=0))
        return residual, correlation / self.scale[:, None]



def compressed_problem(B, Y):
    """An (F, F) factor ``R`` and targets ``Y_r`` (F, K) with the least squares of ``(B, Y)``.

    For ``n > F`` samples: ``R^T R = B^T B`` and ``R^T Y_r = B^T Y``, so for every ``W``
    ``||B W - Y||^2 = ||R W - Y_r||^2 + offset`` with ``offset = ||Y||^2 - ||Y_r||^2 >= 0`` (the part
    of ``Y`` outside the range of ``B``), and the gradients ``B^T (Y - B W) = R^T (Y_r - R W)`` agree:
    LASSO and penalised solutions are the same, BPDN's ``sigma^2`` shifts by ``offset``. SPGL1 then
    works on ``F x F`` instead of ``n x F``. ``R`` is the transposed Cholesky factor of ``B^T B``, or
    ``sqrt(D) V^T`` from its eigendecomposition when it is singular.

    Returns ``R``, ``Y_r`` and ``offset``.
    """
    gram = gram_matrix(B)
    correlation = B.T @ Y
    try:
        lower = cholesky_lower(gram.copy())
        factor = lower.T
        targets = scipy.linalg.solve_triangular(lower, correlation, lower=True)
    except np.linalg.LinAlgError:
        eigenvalues, eigenvectors = np.linalg.eigh(gram)
        keep = eigenvalues > eigenvalues.max() * len(gram) * np.finfo(np.float64).eps
        roots = np.sqrt(eigenvalues[keep])
        factor = roots[:, None] * eigenvectors[:, keep].T
        targets = (eigenvectors[:, keep].T @ correlation) / roots[:, None]
    offset = max(float(np.einsum("ij,ij->", Y, Y) - np.einsum("ij,ij->", targets, targets)), 0.0)
    return factor, targets, offset
