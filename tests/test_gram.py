"""Gram matrices by GEMM tiles (pipeline.readout.gram) against numpy's X.T @ X."""

import numpy as np
import pytest

from pipeline.readout.gram import (NormalEquations, add_upper_gram, cholesky_lower, fill_lower, gram_matrix,
                                   regrown_gram, solve_positive_definite, solve_well_conditioned)


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


@pytest.mark.parametrize("n, tile", [(50, 16), (48, 16), (7, 16), (33, 1)])
def test_blocked_cholesky_and_solve_match_lapack(n, tile):
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n + 5, n))
    a, b = X.T @ X + 0.1 * np.eye(n), rng.normal(size=(n, 3))
    np.testing.assert_allclose(cholesky_lower(a.copy(), tile), np.linalg.cholesky(a), atol=1e-12)
    np.testing.assert_allclose(solve_positive_definite(a.copy(), b, tile), np.linalg.solve(a, b), rtol=1e-9, atol=1e-12)


def test_blocked_cholesky_refuses_a_matrix_that_is_not_positive_definite():
    a = np.eye(6)
    a[4, 4] = -1.0  # in the third tile: the earlier tiles factor, then this one fails
    with pytest.raises(np.linalg.LinAlgError):
        cholesky_lower(a, tile=2)


def test_regrown_gram_reuses_the_kept_features_and_equals_the_gram_matrix():
    rng = np.random.default_rng(3)
    B = rng.standard_normal((30, 12))
    previous = np.array([1, 4, 5, 9])
    index = np.array([0, 4, 6, 9, 11])
    stale = gram_matrix(B[:, previous]) + 0.0
    got = regrown_gram(previous, stale, index, [B[:, index]])
    np.testing.assert_allclose(got, B[:, index].T @ B[:, index], rtol=1e-12, atol=1e-12)
    marked = stale.copy()
    marked[1, 3] = marked[3, 1] = 123.0  # features 4 and 9: taken from the previous matrix, not recomputed
    assert regrown_gram(previous, marked, index, [B[:, index]])[1, 3] == 123.0
    blocks = (B[start:start + 7][:, index] for start in range(0, len(B), 7))  # summed over row blocks
    np.testing.assert_allclose(regrown_gram(previous, stale, index, blocks), got, rtol=1e-12, atol=1e-12)


def test_normal_equations_solve_least_squares_on_a_support_inside_their_set():
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((80, 10)), rng.standard_normal((80, 3))
    index = np.arange(0, 20, 2)  # features 0, 2, ..., 18 are the columns of X
    equations = NormalEquations(index, gram_matrix(X), X.T @ Y)
    support = np.array([2, 8, 18])
    np.testing.assert_allclose(equations.least_squares(support), np.linalg.lstsq(X[:, [1, 4, 9]], Y, rcond=None)[0],
                               rtol=1e-10, atol=1e-12)
    for outside in ([1, 2], [2, 20], [19]):
        assert equations.restricted(np.array(outside)) is None and equations.least_squares(np.array(outside)) is None


def test_a_singular_or_badly_conditioned_system_is_refused():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((50, 6))
    b = rng.standard_normal((6, 2))
    np.testing.assert_allclose(solve_well_conditioned(X.T @ X, b), np.linalg.solve(X.T @ X, b), rtol=1e-10)
    X[:, 5] = X[:, 0] + 1e-7 * X[:, 1]  # condition number of X^T X about 1e14 or more
    assert solve_well_conditioned(X.T @ X, b) is None
    X[:, 5] = X[:, 0]
    assert solve_well_conditioned(X.T @ X, b) is None


def test_regrown_gram_of_the_same_features_is_the_previous_matrix_and_reads_no_block():
    index = np.array([0, 2, 5])
    previous = gram_matrix(np.random.default_rng(4).standard_normal((9, 3)))

    def blocks():
        raise AssertionError("no row block should be read")
        yield

    assert regrown_gram(index, previous, index.copy(), blocks()) is previous
