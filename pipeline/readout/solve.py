"""The output-layer problem in each of its modes, solved by SPGL1 (method.md section 2, step 8).

The output layer solves the convex problem

    min_W  1/2 ||B W - Y||_F^2 + beta * Omega(W)

on pooled features ``B`` (n x F, standardised and centred) and centred one-hot targets ``Y`` (n x K).
``Omega`` is either the plain l1 norm of all entries of ``W`` (``group=False``: K independent lassos)
or the row-group norm ``sum_f ||W[f, :]||_2`` (``group=True``: a feature is used by all classes or
none, SPGL1's MMV mode). Their duals are ``max |G_fk|`` and ``max_f ||G[f, :]||_2``.

SPGL1 (van den Berg and Friedlander) solves the two constrained forms natively:

* LASSO ``min ||B W - Y||_F  s.t.  Omega(W) <= tau``  (``mode="lasso"``)
* BPDN  ``min Omega(W)  s.t.  ||B W - Y||_F <= sigma``  (``mode="bpdn"``)

and the penalised form (``mode="penalized"``) lies on the same Pareto curve: the LASSO solution
``W(tau)`` solves the penalised problem for ``beta = lambda(tau) = Omega*(B^T R(tau))``
(``R = Y - B W``). ``lambda`` is continuous and non-increasing in ``tau`` (it is minus the derivative
of the convex value function ``1/2 ||R(tau)||^2``), from ``beta_max = Omega*(B^T Y)`` at ``tau = 0``
down to 0. The penalised mode is a root-find along that curve (:mod:`pipeline.readout.root_find`).
"""

from dataclasses import dataclass

import numpy as np

from .gram import NormalEquations, gram_matrix
from .operators import compressed_problem, stacked_operator
from .penalties import penalty_functions, row_duals
from .root_find import beta_rtol_for, penalized_root_find
from .spgl1_adapter import (EXIT_BPSOL_FOUND, EXIT_LEAST_SQUARES, EXIT_ROOT_FOUND, exit_message, lasso_solved,
                            run_spgl1)

MODES = ("penalized", "lasso", "bpdn")
PRECISIONS = ("auto", "float32", "float64")
SOLVERS = ("spgl1", "newton", "skglm")
# The solvers of the penalised mode only (no LASSO / BPDN form).
PENALIZED_ONLY = ("newton", "skglm")
# SPGL1 tolerance from which precision="auto" runs the compressed problem's products in float32.
FLOAT32_TOL = 1e-3


@dataclass
class SolveResult:
    """Solution of :func:`solve_l1`.

    Attributes
    ----------
    W : (F, K) float64 coefficients
    R : (n, K) float64 residual ``Y - B W`` (None from a Newton solve given only the normal equations)
    tau : float, ``Omega(W)``
    dual_norm : float, ``Omega*(B^T R)`` (the penalty ``beta`` that ``W`` is optimal for)
    beta_max : float, ``Omega*(B^T Y)``
    n_iter : int, iterations over all solves (SPGL1, or the penalised-only solver)
    n_solves : int, SPGL1 calls (LASSO solves of the root-find in penalised mode)
    converged : bool
    message : str, SPGL1's exit status of the last solve, or why the solve was skipped
    feature_duals : (F,) ``Omega*_f(B_f^T R)`` of every feature at the solution, where a working-set
        certificate computed them (else None)
    normal_equations : the :class:`pipeline.readout.gram.NormalEquations` of the features the solver
        worked on (index into the rows of ``W``), where it formed them (the Newton solver), else None: a
        later solve on the same rows reuses the Gram matrix, the least-squares refit solves with it
    """

    W: np.ndarray
    R: np.ndarray
    tau: float
    dual_norm: float
    beta_max: float
    n_iter: int
    n_solves: int
    converged: bool
    message: str
    feature_duals: np.ndarray | None = None
    normal_equations: NormalEquations | None = None


def solve_l1(A, Y, *, group, mode="penalized", beta=None, tau=None, sigma=None, beta_max=None,
             tol=1e-6, max_iter=2000, verbose=0, x0=None, beta_rtol=None):
    """Solve the output-layer problem on an operator ``A`` (``vec(W) -> vec(B W)``, row-major).

    Parameters
    ----------
    A : LinearOperator of shape ``(n K, F K)``, e.g. :func:`pipeline.readout.operators.stacked_operator`
    Y : (n, K) targets (already centred by the caller if an intercept is wanted)
    group : bool, row-group norm (True) or plain l1 over all entries (False)
    mode : "penalized" (needs absolute ``beta``), "lasso" (``tau``) or "bpdn" (``sigma``)
    beta_max : optional precomputed ``Omega*(A^T vec(Y))``
    tol : SPGL1's optimality tolerance (relative duality gap; also ``bp_tol`` and ``ls_tol``)
    max_iter : SPGL1 iteration limit per solve
    x0 : optional warm start, ``vec(W)`` (F K,); in penalised mode the root-find also starts at its
        ``tau = Omega(W)``
    beta_rtol : penalised mode: stop at ``|lambda - beta| <= beta_rtol * beta`` (default: from ``tol``,
        see :mod:`pipeline.readout.root_find`); a larger value gives a rough solution in fewer LASSO solves

    In penalised mode see :mod:`pipeline.readout.root_find` for the root-find and its stopping rule.
    """
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2:
        raise ValueError(f"Y must be 2-D (n, K), got shape {Y.shape}")
    n, k = Y.shape
    if A.shape[0] != n * k or A.shape[1] % k:
        raise ValueError(f"operator shape {A.shape} does not fit Y of shape {Y.shape}")
    n_features = A.shape[1] // k
    norms = penalty_functions(group, k)
    primal, dual, _ = norms
    y = Y.ravel()
    if beta_max is None:
        beta_max = dual(A.rmatvec(y), 1)
    beta_max = float(beta_max)

    def zero(message):
        return SolveResult(np.zeros((n_features, k)), Y.copy(), 0.0, beta_max, beta_max,
                           0, 0, True, message)

    def result(x, r, lam, n_iter, n_solves, converged, message):
        W = x.reshape(n_features, k)
        return SolveResult(W, r.reshape(n, k), primal(x, 1), float(lam), beta_max,
                           int(n_iter), int(n_solves), bool(converged), message)

    def run(tau_, sigma_, x0):
        return run_spgl1(A, y, tau_, sigma_, x0, norms, tol, max_iter, verbose)

    if mode == "lasso":
        if tau is None or tau < 0:
            raise ValueError("mode='lasso' needs tau >= 0")
        if tau == 0:  # spgl1 reads tau == 0 as "no LASSO constraint"
            return zero("tau == 0: W = 0")
        x, r, lam, info = run(float(tau), 0.0, x0)
        return result(x, r, lam, info["niters"], 1, lasso_solved(info, tol),
                      exit_message(info))

    if mode == "bpdn":
        if sigma is None or sigma < 0:
            raise ValueError("mode='bpdn' needs sigma >= 0")
        if sigma >= np.linalg.norm(y):
            return zero("sigma >= ||Y||: W = 0")
        x, r, lam, info = run(0.0, float(sigma), x0)
        ok = info["stat"] in (EXIT_ROOT_FOUND, EXIT_BPSOL_FOUND, EXIT_LEAST_SQUARES)
        message = exit_message(info)
        if ok and np.linalg.norm(r) > sigma * (1 + 1e-4) + 1e-12:
            ok = False
            message = "sigma is below the least-squares residual norm; returned least squares"
        return result(x, r, lam, info["niters"], 1, ok, message)

    if mode != "penalized":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if beta is None or not beta >= 0:
        raise ValueError("mode='penalized' needs beta >= 0")
    beta = float(beta)
    if beta >= beta_max:
        return zero("beta >= beta_max: W = 0")
    if beta == 0:  # least squares (minimum-Omega interpolant if one exists): spgl1's BP mode
        x, r, lam, info = run(0.0, 0.0, None)
        ok = info["stat"] in (EXIT_BPSOL_FOUND, EXIT_LEAST_SQUARES)
        return result(x, r, lam, info["niters"], 1, ok,
                      exit_message(info))
    rtol = beta_rtol_for(tol) if beta_rtol is None else float(beta_rtol)
    return penalized_root_find(A, y, n_features, k, group, primal, beta, beta_max, tol, rtol, run, result, x0)


def solve_standardized(Bs, Y, *, group, mode, beta, tau, sigma, beta_max, tol, max_iter, verbose=0,
                       x0=None, beta_rtol=None, precision="auto", solver="spgl1", gram=None, correlation=None):
    """:func:`solve_l1` on in-memory features ``Bs`` (n, F) and targets ``Y`` (n, K), both centred.

    With more samples than features it solves the exact F x F compressed problem
    (:func:`pipeline.readout.operators.compressed_problem`, BPDN's ``sigma`` shifted to match); the returned ``R`` is then the
    compressed residual. ``beta`` is absolute; ``beta_max`` is computed when None.

    ``precision``: the compressed factor's dtype in SPGL1's products; ``"auto"`` is float32 from
    ``tol >= 1e-3`` (``FLOAT32_TOL``), else float64. With K columns the products are bound by memory
    traffic, so half the bytes take about half the time, and float32's rounding (relative ``~1e-7`` per
    term, ``~1e-5`` over F terms) is far below a duality gap of ``1e-3``.

    ``beta_rtol`` (a rough penalised solve) is SPGL1's root-find tolerance, and the other solvers' ``tol``
    if larger (they meet every feature's optimality condition to it, relative to ``beta``).

    ``solver="newton"`` solves the penalised mode by coordinate descent and Newton steps on the Gram
    matrix ``Bs^T Bs`` (:func:`pipeline.readout.newton.solve_gram`, ``tol``: its relative violation of the
    optimality conditions; ``R`` is then ``Y - Bs W``; ``gram`` and ``correlation``: ``Bs^T Bs`` and
    ``Bs^T Y`` if the caller has them; with both, ``Bs`` may be None, when the caller holds the features
    only as row blocks, and ``R`` is then None);
    ``solver="skglm"`` by
    :func:`pipeline.readout.skglm_solver.solve_skglm` (on the compressed problem, in float64).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver in PENALIZED_ONLY and mode != "penalized":
        raise ValueError(f"solver={solver!r} solves mode='penalized' only, not mode={mode!r}: use solver='spgl1'")
    if solver != "spgl1" and beta_rtol is not None:  # a rough solve: the optimality conditions to beta_rtol
        tol = max(tol, float(beta_rtol))
    if solver == "newton":
        return _solve_newton(Bs, Y, group=group, beta=beta, beta_max=beta_max, tol=tol, max_iter=max_iter, x0=x0,
                             gram=gram_matrix(Bs) if gram is None else gram,
                             correlation=Bs.T @ Y if correlation is None else correlation)
    if Bs.shape[0] > Bs.shape[1]:
        Bs, Y, offset = compressed_problem(Bs, Y)
        if sigma is not None:
            sigma = np.sqrt(max(float(sigma) ** 2 - offset, 0.0))
        if solver == "spgl1" and (precision == "float32" or (precision == "auto" and tol >= FLOAT32_TOL)):
            Bs = Bs.astype(np.float32)
    if solver == "skglm":
        # imported here: numba compiles skglm's solvers on first import, which SPGL1 users need not pay
        from .skglm_solver import solve_skglm
        if beta_max is None:
            beta_max = row_duals(Bs.T @ Y, group).max(initial=0.0)
        return solve_skglm(Bs, Y, group=group, beta=beta, beta_max=beta_max, tol=tol, max_iter=max_iter, x0=x0)
    return solve_l1(stacked_operator(Bs, Y.shape[1]), Y, group=group, mode=mode, beta=beta, tau=tau,
                    sigma=sigma, beta_max=beta_max, tol=tol, max_iter=max_iter, verbose=verbose, x0=x0,
                    beta_rtol=beta_rtol)


def _solve_newton(Bs, Y, *, group, beta, beta_max, tol, max_iter, x0, gram, correlation):
    """The penalised problem on ``Bs`` (n, F), ``Y`` (n, K) by :func:`pipeline.readout.newton.solve_gram`,
    ``gram = Bs^T Bs``, ``correlation = Bs^T Y``; ``Bs`` None: the residual is not formed (``R`` None)."""
    from .newton import solve_gram  # imported here: numba compiles it on first use

    if beta_max is None:
        beta_max = row_duals(correlation, group).max(initial=0.0)
    beta, beta_max = float(beta), float(beta_max)
    if beta >= beta_max:
        W, n_iter, violation = np.zeros(correlation.shape), 0, 0.0
    else:
        W, n_iter, violation = solve_gram(gram, correlation, beta, x0, group=group, tol=tol, max_iter=max_iter)
    converged = violation <= tol
    message = ("optimality conditions met" if converged else
               f"optimality violated by {violation:.3g} of beta after {n_iter} Newton iterations")
    residual = None if Bs is None else Y - Bs @ W
    return SolveResult(W, residual, penalty_functions(group, Y.shape[1])[0](W.ravel(), 1),
                       float(row_duals(correlation - gram @ W, group).max(initial=0.0)), beta_max, n_iter, 1,
                       converged, message, normal_equations=NormalEquations(np.arange(len(gram)), gram, correlation))
