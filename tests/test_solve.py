"""Tests of the output-layer problem's solves (pipeline/readout/solve.py)."""

import numpy as np

from pipeline.readout.operators import stacked_operator
from pipeline.readout.penalties import group_norms
from pipeline.readout.solve import solve_l1

TRUE_ROWS = (3, 11, 19, 30, 42)


def test_solve_l1_recovers_planted_rows():
    rng = np.random.default_rng(3)
    B = rng.standard_normal((200, 50))
    W_true = np.zeros((50, 4))
    W_true[list(TRUE_ROWS)] = 3.0 * rng.standard_normal((len(TRUE_ROWS), 4))
    Y = B @ W_true + 0.01 * rng.standard_normal((200, 4))
    A = stacked_operator(B, 4)
    beta_max = group_norms(B.T @ Y, True)[1]
    res = solve_l1(A, Y, group=True, mode="penalized", beta=0.05 * beta_max)
    assert res.converged
    support = np.flatnonzero(np.linalg.norm(res.W, axis=1) > 0)
    assert tuple(support) == TRUE_ROWS
    # shrunk towards 0 but close: the residual is the penalty's pull, beta-sized
    assert np.abs(res.W - W_true).max() < 0.1 * np.abs(W_true).max()
    np.testing.assert_allclose(res.R, Y - B @ res.W, atol=1e-9)
