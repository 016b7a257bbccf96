"""The penalised output-layer problem solved by skglm (working sets + Anderson-accelerated coordinate descent).

The second exact solver behind :class:`pipeline.readout.L1OutputLayer` (``solver="skglm"``), the
reference of the tests and benchmarks for SPGL1. skglm (Bertrand, Klopfenstein, Massias et al. 2022)
minimises ``1/(2 n) ||B W - Y||_F^2 + alpha Omega(W)``, i.e. this project's problem divided by ``n``
with ``alpha = beta / n``: the row-group norm by block coordinate descent (``MultiTaskBCD``), the l1
norm of all entries as K independent lassos (``AndersonCD``), one per class column. It has no
constrained (LASSO / BPDN) forms.

Its stopping criterion is the largest violation of the optimality condition over the features,
``dist(B_f^T R / n, alpha dOmega_f(W_f))``; it is set to ``tol * alpha``: every feature's condition holds
to ``tol`` relative to the penalty, the analogue of SPGL1's relative tolerance.
"""

import numpy as np
from skglm.datafits import Quadratic, QuadraticMultiTask
from skglm.penalties import L1, L2_1
from skglm.solvers import AndersonCD, MultiTaskBCD

from .penalties import group_norms, row_duals
from .solve import SolveResult


def solve_skglm(B, Y, *, group, beta, beta_max, tol, max_iter, x0=None):
    """``min_W 1/2 ||B W - Y||_F^2 + beta Omega(W)`` for (n, F) ``B`` and (n, K) ``Y`` (both centred).

    ``max_iter``: skglm's working-set iterations (its ``max_iter``; the coordinate-descent epochs
    within each are skglm's default cap); ``x0``: a warm start, ``vec(W)`` row-major. Returns a
    :class:`pipeline.readout.solve.SolveResult` (``n_iter``: working-set iterations, summed over the
    class columns for l1).
    """
    n, k = Y.shape
    X = np.asfortranarray(B, dtype=np.float64)
    W0 = np.zeros((B.shape[1], k)) if x0 is None else np.reshape(np.asarray(x0, dtype=np.float64), (-1, k))
    if beta >= beta_max:
        W, n_iter, violation = np.zeros_like(W0), 0, 0.0
    else:
        alpha = beta / n
        W, n_iter, violation = (_group(X, Y, W0, alpha, tol, max_iter) if group else
                                _entries(X, Y, W0, alpha, tol, max_iter))
    residual = Y - X @ W
    dual_norm = float(row_duals(X.T @ residual, group).max(initial=0.0))
    converged = bool(violation <= tol * beta / n * (1 + 1e-9)) or beta >= beta_max
    message = ("optimality conditions met" if converged else
               f"optimality violated by {violation * n / beta:.3g} of beta after {n_iter} skglm iterations")
    return SolveResult(W, residual, group_norms(W, group)[0], dual_norm, float(beta_max), n_iter, 1, converged,
                       message)


def _group(X, Y, W0, alpha, tol, max_iter):
    solver = MultiTaskBCD(max_iter=max_iter, tol=tol * alpha, fit_intercept=False, warm_start=True)
    W, objectives, violation = solver.solve(X, np.asfortranarray(Y), QuadraticMultiTask(), L2_1(alpha),
                                            w_init=W0.copy(), Xw_init=X @ W0)
    return W, len(objectives), float(violation)


def _entries(X, Y, W0, alpha, tol, max_iter):
    W, n_iter, worst = np.zeros_like(W0), 0, 0.0
    solver = AndersonCD(max_iter=max_iter, tol=tol * alpha, fit_intercept=False, warm_start=True)
    for column in range(Y.shape[1]):
        w, objectives, violation = solver.solve(X, Y[:, column].copy(), Quadratic(), L1(alpha),
                                                w_init=W0[:, column].copy(), Xw_init=X @ W0[:, column])
        W[:, column], n_iter, worst = w, n_iter + len(objectives), max(worst, float(violation))
    return W, n_iter, worst
