"""Tests of the output layer's penalties (pipeline/readout/penalties.py)."""

import importlib

import numpy as np
import pytest

from pipeline.readout.penalties import group_dual, group_primal, group_project


def testgroup_norms_match_spgl1_mmv_functions():
    module = importlib.import_module("spgl1.spgl1")
    rng = np.random.default_rng(2)
    W = rng.standard_normal((6, 3))
    W[2] = 0.0
    x = W.ravel()
    assert group_primal(x, 1, n_classes=3) == pytest.approx(module._norm_l12_primal(3, x, 1))
    assert group_primal(x, 1, n_classes=3) == pytest.approx(np.linalg.norm(W, axis=1).sum())
    assert group_dual(x, 1, n_classes=3) == pytest.approx(module._norm_l12_dual(3, x, 1))
    tau = 0.4 * group_primal(x, 1, n_classes=3)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = module._norm_l12_project(3, x, 1, tau)
    projected = group_project(x, 1, tau, n_classes=3)
    np.testing.assert_allclose(projected, expected, atol=1e-12)
    assert group_primal(projected, 1, n_classes=3) == pytest.approx(tau)
