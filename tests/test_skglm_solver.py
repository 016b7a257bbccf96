"""skglm behind the output layer (pipeline/readout/skglm_solver.py), checked against SPGL1 in every mode."""

import numpy as np
import pytest

from pipeline import L1OutputLayer
from pipeline.readout.penalties import group_norms, row_duals
from pipeline.readout.skglm_solver import solve_skglm
from pipeline.readout.solve import solve_standardized

from planted_features import centred_problem


def objective(B, Y, W, beta, group):
    return 0.5 * float(np.sum((Y - B @ W) ** 2)) + beta * group_norms(W, group)[0]


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("mode, level", [("penalized", 0.2), ("lasso", 0.5), ("bpdn", 1.2)])
def test_skglm_matches_spgl1_in_every_mode(group, mode, level):
    """SPGL1's solution in each mode is the penalised optimum for its dual norm lambda; skglm solving
    the penalised problem at that lambda reaches the same objective to 1e-6 relative."""
    B, Y = centred_problem(seed=3)
    beta_max = row_duals(B.T @ Y, group).max()
    levels = dict(beta=None, tau=None, sigma=None)
    if mode == "penalized":
        levels["beta"] = level * beta_max
    elif mode == "lasso":
        reference = solve_standardized(B, Y, group=group, mode="penalized", beta=0.2 * beta_max, tau=None,
                                       sigma=None, beta_max=beta_max, tol=1e-9, max_iter=100000)
        levels["tau"] = level * reference.tau
    else:
        levels["sigma"] = level * np.linalg.norm(Y - B @ np.linalg.lstsq(B, Y, rcond=None)[0])
    spgl1 = solve_standardized(B, Y, group=group, mode=mode, **levels, beta_max=beta_max, tol=1e-10,
                               max_iter=100000, precision="float64")
    lam = levels["beta"] if mode == "penalized" else spgl1.dual_norm
    skglm = solve_skglm(B, Y, group=group, beta=lam, beta_max=beta_max, tol=1e-10, max_iter=200)
    assert skglm.converged
    assert objective(B, Y, spgl1.W, lam, group) == pytest.approx(objective(B, Y, skglm.W, lam, group), rel=1e-6)
    assert skglm.dual_norm == pytest.approx(lam, rel=1e-6)


def test_estimator_with_skglm_and_newton_matches_spgl1_in_memory_and_on_working_sets():
    rng = np.random.default_rng(1)
    B = rng.standard_normal((150, 40))
    y = np.argmax(B[:, [1, 5, 9]] + 0.3 * rng.standard_normal((150, 3)), axis=1)
    fits = [L1OutputLayer(beta=0.1, tol=1e-9, max_iter=100000, solver=solver, working_set=size).fit(B, y)
            for solver in ("spgl1", "skglm", "newton") for size in (1024, 8)]
    objectives = [fit.objective(B, y) for fit in fits]
    assert objectives == pytest.approx([objectives[0]] * 6, rel=1e-6)


@pytest.mark.parametrize("solver", ["skglm", "newton"])
@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="lasso", tau=1.0), "solves mode='penalized' only"),
    (dict(out_of_core="stream", working_set=4), "'stream' strategy runs SPGL1"),
])
def test_penalized_only_solvers_refuse_what_they_cannot_solve(solver, kwargs, match):
    B = np.random.default_rng(2).standard_normal((40, 10))
    with pytest.raises(ValueError, match=match):
        L1OutputLayer(solver=solver, **kwargs).fit(B, np.arange(40) % 2)
