"""Gram matrices ``X^T X`` of wide feature blocks, through GEMM on column tiles.

numpy computes ``X.T @ X`` with BLAS's SYRK, and OpenBLAS's SYRK writes out of bounds for large
outputs: with numpy 2.4.6 (OpenBLAS 0.3.31, ``libscipy_openblas64_``) on this project's machine,
``X.T @ X`` segfaulted for ``X`` of shape (256, 22,784) and (256, 25,632) while (64, 23,200) passed,
and scipy's ``dsyrk`` failed the same way; GEMM at the same sizes is fine. These functions accumulate
the upper block triangle tile by tile with GEMM (SYRK's flop count plus one tile's worth), then mirror it.
"""

import numpy as np

_TILE = 2048


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
