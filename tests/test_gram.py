"""Gram matrices by GEMM tiles (pipeline.gram) against numpy's X.T @ X."""

import numpy as np
import pytest

from pipeline.gram import add_upper_gram, fill_lower, gram_matrix


@pytest.mark.parametrize("n_features, tile", [(50, 16), (48, 16), (7, 16), (33, 1), (1, 4)])
def test_tiled_gram_over_row_blocks_equals_the_full_product(n_features, tile):
    X = np.random.default_rng(n_features).normal(size=(40, n_features))
    gram = np.zeros((n_features, n_features))
    for rows in (slice(0, 13), slice(13, 14), slice(14, 40)):  # blocks of any size, one of one row
        add_upper_gram(gram, X[rows], tile)
    np.testing.assert_allclose(fill_lower(gram, tile), X.T @ X, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(gram, gram.T)


def test_gram_matrix_takes_float32_and_returns_float64():
    X = np.random.default_rng(0).random((20, 3000)).astype(np.float32)  # wider than one tile
    gram = gram_matrix(X)
    assert gram.dtype == np.float64
    np.testing.assert_allclose(gram, X.astype(np.float64).T @ X.astype(np.float64), rtol=1e-12)
