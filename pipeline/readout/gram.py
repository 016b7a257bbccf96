"""Gram matrices ``X^T X`` of wide feature blocks and their Cholesky factors, through GEMM on column tiles.

numpy computes ``X.T @ X`` with BLAS's SYRK, and OpenBLAS's SYRK writes out of bounds for large
outputs: with numpy 2.4.6 (OpenBLAS 0.3.31, ``libscipy_openblas64_``) on this project's machine,
``X.T @ X`` segfaulted for ``X`` of shape (256, 22,784) and (256, 25,632) while (64, 23,200) passed,
and scipy's ``dsyrk`` failed the same way; GEMM at the same sizes is fine. LAPACK's Cholesky (``potrf``,
behind ``scipy.linalg.solve(assume_a="pos")`` and ``np.linalg.cholesky``) updates with the same SYRK and
segfaulted at F = 25,632. These functions accumulate the upper block triangle tile by tile with GEMM (SYRK's
flop count plus one tile's worth), then mirror it, and factor by a blocked right-looking Cholesky whose
diagonal tiles go to LAPACK (sizes where SYRK is fine) and whose trailing updates are GEMMs (measured:
a 25,632 x 25,632 system solved in 63 s on 2 cores where ``scipy.linalg.solve`` segfaulted).
"""

from dataclasses import dataclass

import numpy as np
import scipy.linalg

_TILE = 2048
# Least reciprocal condition number (1-norm estimate) of a Gram matrix solved by Cholesky: its solution is
# then accurate to about eps / rcond = 1e-6 relative; a worse-conditioned one goes to least squares.
MIN_RCOND = 1e-10


@dataclass(frozen=True)
class NormalEquations:
    """The normal equations of a set of standardised feature columns ``B_set`` (n, m) and targets ``Y`` (n, K).

    index : (m,) sorted feature indices of the set
    gram : (m, m) float64 ``B_set^T B_set``
    correlation : (m, K) float64 ``B_set^T Y``
    """

    index: np.ndarray
    gram: np.ndarray
    correlation: np.ndarray

    def restricted(self, support):
        """``(G_SS, c_S)`` of the sorted features ``support``, or None if one of them is not in the set."""
        at = np.searchsorted(self.index, support)
        if np.any(at >= len(self.index)) or not np.array_equal(self.index[np.minimum(at, len(self.index) - 1)],
                                                                 support):
            return None
        return self.gram[np.ix_(at, at)], self.correlation[at]

    def least_squares(self, support, alpha=0.0):
        """``(B_S^T B_S + alpha I)^-1 B_S^T Y`` (|S|, K) on the sorted features ``support`` by Cholesky (``alpha``
        >= 0: a ridge penalty), or None if one of them is not in the set or the matrix is too badly
        conditioned for it (``MIN_RCOND``)."""
        restricted = self.restricted(support)
        if restricted is None:
            return None
        gram, correlation = restricted  # gram: a copy (fancy indexing)
        gram[np.diag_indices_from(gram)] += alpha
        return solve_well_conditioned(gram, correlation)


def add_upper_gram(gram, block, tile=_TILE):
    """``gram += block.T @ block`` on the upper block triangle only (tiles of ``tile`` columns).

    gram : (F, F) float64, updated in place; block : (n, F) float64. Call :func:`fill_lower` once after
    the last block.
    """
    n_features = block.shape[1]
    for start in range(0, n_features, tile):
        stop = min(start + tile, n_features)
        gram[:stop, start:stop] += block[:, :stop].T @ block[:, start:stop]


def fill_lower(gram, tile=_TILE):
    """Copy the upper block triangle of ``gram`` (F, F) to its lower one, in place; returns ``gram``.
    ``tile`` must be the one the triangle was accumulated with (its diagonal tiles are already full)."""
    for start in range(tile, len(gram), tile):
        stop = min(start + tile, len(gram))
        gram[start:stop, :start] = gram[:start, start:stop].T
    return gram


def gram_matrix(X):
    """``X.T @ X`` (F, F) float64 of ``X`` (n, F), without SYRK."""
    gram = np.zeros((X.shape[1], X.shape[1]))
    add_upper_gram(gram, np.asarray(X, dtype=np.float64))
    return fill_lower(gram)


def regrown_gram(previous_index, previous_gram, index, blocks):
    """``X.T @ X`` (F, F) for the columns ``X`` (n, F) of the features ``index`` (F,), given as an iterable
    of its row blocks (b, F) (e.g. ``block`` of :func:`pipeline.storage.feature_store.standardized_row_blocks`;
    ``[X]`` for the whole), reusing the entries of ``previous_gram`` (the Gram matrix of the sorted features
    ``previous_index``) for the features in both: only the new columns' products are computed, ``n F |new|``
    multiply-adds by GEMM. The same features as before: ``previous_gram`` itself (the blocks are not read;
    the solvers only read Gram matrices)."""
    index = np.asarray(index)
    if np.array_equal(index, previous_index):
        return previous_gram
    kept = np.isin(index, previous_index)
    old = np.searchsorted(previous_index, index[kept])
    kept_at, new_at = np.flatnonzero(kept), np.flatnonzero(~kept)
    gram = np.empty((len(index), len(index)))
    gram[np.ix_(kept_at, kept_at)] = previous_gram[np.ix_(old, old)]
    if len(new_at):
        products = np.zeros((len(index), len(new_at)))
        for X in blocks:
            X = np.asarray(X, dtype=np.float64)
            products += X.T @ np.ascontiguousarray(X[:, new_at])  # (F, |new|): distinct operands, GEMM
        gram[:, new_at] = products
        gram[new_at, :] = products.T
    return gram


def cholesky_lower(a, tile=_TILE):
    """Lower Cholesky factor ``L`` (``L L^T = a``) of a symmetric positive definite ``a`` (F, F) float64,
    computed in place (``a`` is overwritten by ``L``, its upper triangle set to zero); returns it.

    Raises ``numpy.linalg.LinAlgError`` if ``a`` is not positive definite.
    """
    n = len(a)
    for start in range(0, n, tile):
        stop = min(start + tile, n)
        a[start:stop, start:stop] = scipy.linalg.cholesky(a[start:stop, start:stop], lower=True)
        a[start:stop, stop:] = 0.0
        if stop == n:
            break
        # panel L21 = A21 L11^-T, then the lower trailing block A22 -= L21 L21^T, one column tile at a time
        a[stop:, start:stop] = scipy.linalg.solve_triangular(a[start:stop, start:stop], a[stop:, start:stop].T,
                                                             lower=True).T
        panel = a[stop:, start:stop]
        for column in range(stop, n, tile):
            end = min(column + tile, n)
            a[column:, column:end] -= panel[column - stop:] @ panel[column - stop:end - stop].T
    return a


def solve_well_conditioned(a, b, min_rcond=MIN_RCOND):
    """``a^{-1} b`` for symmetric positive definite ``a`` (F, F) (overwritten) and ``b`` (F, K) by Cholesky, or
    None if ``a`` is not positive definite or its reciprocal condition number (LAPACK's ``pocon``
    estimate) is below ``min_rcond``."""
    norm = float(np.abs(a).sum(axis=0).max(initial=0.0))
    try:
        lower = cholesky_lower(a)
    except np.linalg.LinAlgError:
        return None
    rcond, info = scipy.linalg.lapack.dpocon(lower, norm, uplo="L")
    if info or not rcond >= min_rcond:
        return None
    return _cholesky_solve(lower, b)


def _cholesky_solve(lower, b):
    """``(L L^T)^-1 b`` for the lower Cholesky factor ``L`` (F, F) and ``b`` (F, K)."""
    return scipy.linalg.solve_triangular(lower, scipy.linalg.solve_triangular(lower, b, lower=True),
                                         lower=True, trans="T")


def solve_positive_definite(a, b, tile=_TILE):
    """``a^{-1} b`` for symmetric positive definite ``a`` (F, F) (overwritten by its Cholesky factor) and
    ``b`` (F, K), through :func:`cholesky_lower`."""
    return _cholesky_solve(cholesky_lower(a, tile), b)
