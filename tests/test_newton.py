"""Coordinate descent and Newton steps on the Gram matrix (pipeline/readout/newton.py), checked against
SPGL1 and skglm and against the optimality conditions."""

import numpy as np
import pytest

from pipeline.readout.newton import gram_columns, kkt_violation, newton_direction, solve_gram
from pipeline.readout.penalties import group_norms, row_duals
from pipeline.readout.skglm_solver import solve_skglm
from pipeline.readout.solve import solve_standardized

from planted_features import centred_problem


def correlated_problem(n=150, seed=0):
    """Centred, correlated features (60 of them sharing a common factor) and centred targets (4 classes)."""
    return centred_problem(n=n, n_features=60, k=4, seed=seed, common_factor=0.8, support=(3, 11, 40))


def objective(B, Y, W, beta, group):
    return 0.5 * float(np.sum((Y - B @ W) ** 2)) + beta * group_norms(W, group)[0]


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("ratio", [0.5, 0.1, 0.01])
@pytest.mark.parametrize("n", [150, 40])  # more rows than features, and fewer (a singular Gram matrix)
def test_newton_reaches_skglm_objective_and_the_optimality_conditions(group, ratio, n):
    B, Y = correlated_problem(n=n)
    G, c = B.T @ B, B.T @ Y
    beta_max = row_duals(c, group).max()
    beta = ratio * beta_max
    W, n_iter, violation = solve_gram(G, c, beta, group=group, tol=1e-10, max_iter=200)
    assert violation <= 1e-10 and n_iter < 200
    assert violation == pytest.approx(kkt_violation(W, G @ W, c, beta, group), abs=1e-12)
    reference = solve_skglm(B, Y, group=group, beta=beta, beta_max=beta_max, tol=1e-10, max_iter=500)
    assert reference.converged
    assert objective(B, Y, W, beta, group) == pytest.approx(objective(B, Y, reference.W, beta, group), rel=1e-9)


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("mode", ["penalized", "lasso"])
def test_newton_matches_spgl1_at_spgl1s_penalty(group, mode):
    """SPGL1's solution (penalised, or LASSO at half the penalised solution's tau) is the penalised optimum
    for its dual norm lambda; Newton at that lambda reaches the same objective (1e-6 relative: SPGL1's
    own accuracy at tol 1e-10 is limited by its line search) and the same support."""
    B, Y = correlated_problem(seed=2)
    beta_max = row_duals(B.T @ Y, group).max()
    common = dict(group=group, sigma=None, beta_max=beta_max, tol=1e-10, max_iter=100000, precision="float64")
    spgl1 = solve_standardized(B, Y, mode="penalized", beta=0.2 * beta_max, tau=None, **common)
    if mode == "lasso":
        spgl1 = solve_standardized(B, Y, mode="lasso", beta=None, tau=0.5 * spgl1.tau, **common)
    lam = 0.2 * beta_max if mode == "penalized" else spgl1.dual_norm
    newton = solve_standardized(B, Y, mode="penalized", beta=lam, tau=None, **dict(common, precision="auto"),
                                solver="newton")
    assert newton.converged
    assert objective(B, Y, newton.W, lam, group) == pytest.approx(objective(B, Y, spgl1.W, lam, group), rel=1e-6)
    assert newton.dual_norm == pytest.approx(lam, rel=1e-9)
    np.testing.assert_allclose(newton.R, Y - B @ newton.W)
    assert np.array_equal(np.abs(newton.W).max(axis=1) > 1e-6 * np.abs(newton.W).max(),
                          np.abs(spgl1.W).max(axis=1) > 1e-6 * np.abs(spgl1.W).max())


def dense_newton_system(G, W, smooth, beta):
    """The (s K, s K) Hessian G (x) I + blockdiag(d_f (I - u_f u_f^T)) and the right-hand side -(gradient)."""
    s, k = W.shape
    norms = np.linalg.norm(W, axis=1)
    units = W / norms[:, None]
    hessian = np.kron(G, np.eye(k))
    for f in range(s):
        block = slice(f * k, (f + 1) * k)
        hessian[block, block] += beta / norms[f] * (np.eye(k) - np.outer(units[f], units[f]))
    return hessian, -(smooth + beta * units).ravel()


def test_newton_direction_solves_the_hessian_system():
    """The Woodbury solve (float32 factorisations, refined) equals the dense Newton system's solution:
    relative residual at most 1e-6 (the refinement's target), the solution to the same digits times the
    condition number."""
    rng = np.random.default_rng(4)
    s, k, beta = 7, 3, 0.7
    A = rng.standard_normal((20, s))
    G = A.T @ A
    W = rng.standard_normal((s, k))
    smooth = rng.standard_normal((s, k))
    hessian, rhs = dense_newton_system(G, W, smooth, beta)
    step = newton_direction(G, smooth, W, beta).ravel()
    assert np.linalg.norm(hessian @ step - rhs) <= 1e-6 * np.linalg.norm(rhs)
    np.testing.assert_allclose(step, np.linalg.solve(hessian, rhs), rtol=1e-6 * np.linalg.cond(hessian))


@pytest.mark.parametrize("offset", [1e-3, 1e-5])
def test_newton_direction_on_a_system_too_ill_conditioned_for_float32(offset):
    """Two support rows nearly collinear (Hessians with condition numbers of about 1e6 and 1e9, against
    float32's 6e-8 relative rounding: its refinement stalls at 1.8e-4 relative residual, its Cholesky
    factorisation fails): the step still meets the residual target, from float64 factorisations."""
    rng = np.random.default_rng(5)
    A = rng.standard_normal((40, 6))
    A[:, 5] = A[:, 4] + offset * rng.standard_normal(40)
    G = A.T @ A
    W = rng.standard_normal((6, 4))
    smooth = rng.standard_normal((6, 4))
    hessian, rhs = dense_newton_system(G, W, smooth, 1e-6)
    assert np.linalg.cond(hessian) > 1e-2 / offset ** 2
    step = newton_direction(G, smooth, W, 1e-6).ravel()
    assert np.linalg.norm(hessian @ step - rhs) <= 1e-6 * np.linalg.norm(rhs)


def test_warm_start_at_the_solution_takes_no_iteration_and_beta_max_gives_zero():
    B, Y = correlated_problem(seed=5)
    G, c = B.T @ B, B.T @ Y
    beta_max = row_duals(c, True).max()
    W, _, _ = solve_gram(G, c, 0.05 * beta_max, group=True, tol=1e-9)
    again, n_iter, violation = solve_gram(G, c, 0.05 * beta_max, W, group=True, tol=1e-9)
    assert n_iter == 0 and violation <= 1e-9
    np.testing.assert_array_equal(again, W)
    zero = solve_standardized(B, Y, group=True, mode="penalized", beta=beta_max, tau=None, sigma=None,
                              beta_max=beta_max, tol=1e-6, max_iter=100, solver="newton")
    assert zero.converged and not np.any(zero.W)


def test_newton_reports_what_it_did_not_finish():
    B, Y = correlated_problem(seed=6)
    beta_max = row_duals(B.T @ Y, True).max()
    result = solve_standardized(B, Y, group=True, mode="penalized", beta=0.01 * beta_max, tau=None, sigma=None,
                                beta_max=beta_max, tol=1e-12, max_iter=1, solver="newton")
    assert not result.converged and "after 1 Newton iterations" in result.message


def test_refinement_converges_where_the_approximate_inverse_is_poor():
    """Conjugate gradients preconditioned by an approximate inverse reach the residual target where plain
    iterative refinement (error factor ``||I - P^-1 A|| > 1``) would diverge: ``P`` has two of ``A``'s
    eigenvalues wrong by a factor 3 and 0.3 (two outliers: about two extra steps)."""
    from pipeline.readout.newton import _refined
    rng = np.random.default_rng(7)
    basis, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    eigenvalues = np.geomspace(1e-3, 1e3, 30)
    A = (basis * eigenvalues) @ basis.T
    wrong = eigenvalues.copy()
    wrong[[3, 20]] *= [3.0, 0.3]
    P_inverse = (basis / wrong) @ basis.T
    assert np.linalg.norm(np.eye(30) - P_inverse @ A, 2) > 1  # refinement's error would grow
    rhs = rng.standard_normal((30, 2))
    x, accurate = _refined(lambda r: P_inverse @ r, lambda v: A @ v, rhs)
    assert accurate
    assert np.linalg.norm(rhs - A @ x) <= 1e-6 * np.linalg.norm(rhs)


def test_rows_carried_through_zero_are_dropped_and_the_optimum_is_the_same(caplog):
    """A warm start from a large penalty to a small one on strongly correlated features: single coordinate-
    descent passes leave rows that the full Newton step carries through zero, the step with them dropped
    is taken (logged), and the solution has skglm's objective and meets the optimality conditions."""
    B, Y = centred_problem(n=120, n_features=200, k=4, seed=8, common_factor=0.95, support=(3, 11, 40, 77, 150))
    G, c = B.T @ B, B.T @ Y
    beta_max = row_duals(c, True).max()
    start, _, _ = solve_gram(G, c, 0.3 * beta_max, group=True, tol=1e-8)
    beta = 0.005 * beta_max
    with caplog.at_level("DEBUG", logger="pipeline.readout.newton"):
        W, n_iter, violation = solve_gram(G, c, beta, start, group=True, tol=1e-10, max_iter=200, cd_epochs=1)
    assert violation <= 1e-10
    assert any("rows dropped" in message for message in caplog.messages)
    reference = solve_skglm(B, Y, group=True, beta=beta, beta_max=beta_max, tol=1e-10, max_iter=2000)
    assert objective(B, Y, W, beta, True) == pytest.approx(objective(B, Y, reference.W, beta, True), rel=1e-9)


def test_a_single_row_carried_through_zero_is_dropped_in_one_step():
    """From the optimum with one zero row given a small norm against its correlation, the full Newton step
    carries that row (under 1 % of the support) through zero and, on correlated features, moves the others
    to compensate for it; the step with it dropped is taken and lands on the optimum."""
    from pipeline.readout import newton

    B, Y = centred_problem(n=600, n_features=300, k=2, seed=1, common_factor=0.9, support=tuple(range(0, 300, 2)))
    G, c = B.T @ B, B.T @ Y
    beta = 0.01 * row_duals(c, True).max()
    optimum, _, _ = solve_gram(G, c, beta, group=True, tol=1e-12, max_iter=200)
    correlation = c - G @ optimum
    zero_rows = np.flatnonzero(~np.any(optimum, axis=1))
    row = zero_rows[np.argmax(np.linalg.norm(correlation[zero_rows], axis=1))]
    W = optimum.copy()
    W[row] = -1e-3 * correlation[row] / np.linalg.norm(correlation[row])
    GW = G @ W
    support = np.flatnonzero(np.any(W, axis=1))
    step = newton_direction(G[np.ix_(support, support)], (GW - c)[support], W[support], beta)
    crossing = newton._crossing(W[support], step)
    assert list(support[crossing]) == [row] and crossing.mean() < 0.01
    _, _, dropped = newton._newton_step(G, c, beta, W, GW, support)
    assert dropped == 1
    np.testing.assert_allclose(W, optimum, atol=1e-9)


def test_the_dropped_candidate_drops_again_the_rows_its_own_step_carries_through_zero():
    """After one coordinate-descent pass from a large penalty's solution, the rows the full step carries
    through zero are dropped, then the ones the remaining support's step carries through zero too; the
    candidate's reported change of the objective is the exact one."""
    from pipeline.readout import newton

    B, Y = centred_problem(n=120, n_features=200, k=4, seed=8, common_factor=0.95, support=(3, 11, 40, 77, 150))
    G, c = B.T @ B, B.T @ Y
    beta_max = row_duals(c, True).max()
    W, _, _ = solve_gram(G, c, 0.3 * beta_max, group=True, tol=1e-8)
    beta = 0.005 * beta_max
    GW = G @ W
    newton._coordinate_descent(G, c, beta, W, GW, 1)
    support = np.flatnonzero(np.linalg.norm(W, axis=1) > 0)
    step = newton_direction(G[np.ix_(support, support)], (GW - c)[support], W[support], beta)
    crossing = newton._crossing(W[support], step)
    W_drop, GW_drop, kept, _, change = newton._dropped_candidate(G, c, beta, W, GW, support, crossing)
    dropped = np.setdiff1d(support, kept)
    assert set(support[crossing]) < set(dropped)  # a second round dropped more
    assert not np.any(W_drop[dropped])
    np.testing.assert_allclose(GW_drop, G @ W_drop, rtol=1e-9, atol=1e-9)

    def value(W):
        return 0.5 * np.sum(W * (G @ W)) - np.sum(c * W) + beta * np.linalg.norm(W, axis=1).sum()
    assert change == pytest.approx(value(W_drop) - value(W), rel=1e-9)
    assert change < 0


def test_gram_columns_and_their_support_block_are_those_of_the_symmetric_matrix():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((40, 30))
    G = B.T @ B
    G = (G + G.T) / 2  # symmetric to the last bit, as the solver's Gram matrices are read
    index = np.array([0, 3, 4, 17, 29])
    columns = gram_columns(G, index)
    np.testing.assert_array_equal(columns, G[:, index])
    np.testing.assert_array_equal(np.take(columns.T, index, axis=1), G[np.ix_(index, index)])
    np.testing.assert_array_equal(columns[:, [1, 3]], G[:, index[[1, 3]]])
