"""Tests of the output layer's operators (pipeline/readout/operators.py)."""

import importlib

import numpy as np
import pytest
from scipy.sparse.linalg import aslinearoperator

from pipeline.readout.operators import StreamedOperator, compressed_problem, stacked_operator
from pipeline.storage.feature_store import ArrayFeatures


def test_stacked_operator_is_row_major_bw_and_its_adjoint():
    rng = np.random.default_rng(1)
    B = rng.standard_normal((7, 5))
    W = rng.standard_normal((5, 3))
    R = rng.standard_normal((7, 3))
    A = stacked_operator(B, 3)
    assert A.shape == (21, 15)
    np.testing.assert_allclose(A.matvec(W.ravel()), (B @ W).ravel(), rtol=1e-13)
    np.testing.assert_allclose(A.rmatvec(R.ravel()), (B.T @ R).ravel(), rtol=1e-13)
    # same layout as spgl1's spg_mmv block operator
    blockdiag = importlib.import_module("spgl1.spgl1")._blockdiag
    mmv = blockdiag(aslinearoperator(B), 7, 5, 3)
    np.testing.assert_allclose(A.matvec(W.ravel()), mmv.matvec(W.ravel()), rtol=1e-13)


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_compressed_problem_keeps_residuals_and_gradients(rank_deficient):
    rng = np.random.default_rng(3)
    B = rng.normal(size=(120, 15))
    if rank_deficient:
        B[:, -1] = B[:, 0] - B[:, 1]     # B^T B is singular: the eigendecomposition path
    Y = rng.normal(size=(120, 4))
    factor, targets, offset = compressed_problem(B, Y)
    for _ in range(3):
        W = rng.normal(size=(15, 4))
        full = np.sum((B @ W - Y) ** 2)
        assert np.sum((factor @ W - targets) ** 2) + offset == pytest.approx(full, rel=1e-10)
        np.testing.assert_allclose(factor.T @ (targets - factor @ W), B.T @ (Y - B @ W), atol=1e-9)


def test_streamed_residual_correlation_is_one_matvec_and_rmatvec():
    rng = np.random.default_rng(5)
    B, Y, W = rng.standard_normal((50, 8)) + 3.0, rng.standard_normal((50, 3)), rng.standard_normal((8, 3))
    mean, scale = B.mean(axis=0), B.std(axis=0)
    operator = StreamedOperator(ArrayFeatures(B), mean, scale, 3)
    residual, correlation = operator.residual_correlation(Y, W)
    expected = Y - ((B - mean) / scale) @ W
    np.testing.assert_allclose(residual, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(correlation, ((B - mean) / scale).T @ expected, rtol=1e-10, atol=1e-10)
