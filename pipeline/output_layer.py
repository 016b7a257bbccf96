"""l1-regularised output layer (method.md section 2, step 8).

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
down to 0; for the l1 norm it is piecewise linear. :func:`solve_l1` finds ``lambda(tau) = beta`` by a
safeguarded root-find in ``tau``, warm-starting every SPGL1 LASSO solve from the previous ``W``:

* first guess from the first piece of the path (only the top entry / row of ``B^T Y`` moves);
* until the root is bracketed: secant steps in ``(log tau, log lambda)``, growth capped at x10 and
  by the bound ``tau* <= ||Y||^2 / (2 beta)``;
* once bracketed: the root of a quadratic model of ``lambda`` through the last two solves that also
  matches ``v = 1/2 ||R||^2`` (``v' = -lambda``, so ``(v1 - v2) / (tau2 - tau1)`` is the mean of
  ``lambda`` in between; the model is the secant when ``lambda`` is linear there), else the secant,
  else Illinois false position, else bisection (also when ``|g|`` did not halve in two solves);
* a solve whose ball constraint is inactive (``Omega(W) < tau``, the least-squares end) stands for
  ``tau = Omega(W)``.

It stops when ``|lambda - beta| <= rtol * beta`` on a finished LASSO solve, ``rtol = 1e-4`` at the
default ``tol = 1e-6`` (``max(min(100 tol, sqrt(tol)), 1e-7)``): at an exact LASSO solution with
``lambda = beta (1 + d)`` the penalised duality gap (dual point ``R beta / lambda``) is
``1/2 (d / (1 + d))^2 ||R||^2``, i.e. the penalised objective is within ``~d^2 / 2`` relative of its
optimum, at most ``tol`` (the LASSO solves' own tolerance) for ``d <= sqrt(tol)``, so ``d`` need not
be smaller; and ``lambda`` is not known much better than ``100 tol`` anyway (measured: a solve at
relative gap ``tol`` gives ``lambda`` to ~15 ``tol`` relative; ``100 tol`` keeps the test above that
noise; at ``tol = 1e-4`` chasing ``d = 1e-4`` cost MNIST's output layer extra LASSO solves; above
``tol ~ 2.5e-3`` the noise exceeds ``sqrt(tol)``, so ``rtol`` is at least ``20 tol``). Otherwise
it stops after 50 solves and returns the finished solve closest to ``beta``, with a
``ConvergenceWarning`` from the estimator.

Layout. The unknown is ``vec(W)`` in **row-major** (C) order, ``W.ravel()``: the K entries of a
feature's row are contiguous. That is the layout of spgl1's own MMV mode (``spg_mmv`` wraps ``A`` in
a block operator that reshapes ``x`` to ``(n_features, n_groups)``, and its ``_norm_l12_*`` functions
group consecutive runs of ``n_groups`` entries), so the group norm here is exactly spgl1's. The data
vector is ``Y.ravel()`` (row-major too). Every solve goes through a
:class:`scipy.sparse.linalg.LinearOperator` from :func:`_stacked_operator`, which maps
``vec(W) -> vec(B W)`` with one GEMM and never copies ``B``; a streamed operator over memory-mapped
features can replace it as long as it keeps that layout.
"""

import contextlib
import importlib
import io
import logging
import numbers
import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from spgl1 import oneprojector, spgl1

from .feature_store import ArrayFeatures, FeatureStore, standardized_columns
from .gram import cholesky_lower, gram_matrix

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sk_validate_data = None

__all__ = ["L1OutputLayer", "SolveResult", "solve_l1", "group_norms"]

_MODES = ("penalized", "lasso", "bpdn")

# SPGL1 exit codes (spgl1.spgl1.EXIT_*).
_EXIT_ROOT_FOUND = 1
_EXIT_BPSOL_FOUND = 2
_EXIT_LEAST_SQUARES = 3
_EXIT_OPTIMAL = 4
_EXIT_LINE_ERROR = 6
_EXIT_MESSAGES = {
    1: "found a BPDN root",
    2: "found a basis-pursuit solution",
    3: "found a least-squares solution",
    4: "found a LASSO solution",
    5: "too many iterations",
    6: "line-search error",
    7: "found a sub-optimal BPDN solution",
    8: "too many matrix-vector products",
    9: "active set unchanged",
}
# A line-search failure at a relative gap below this counts as a finished solve (see _lasso_solved).
_GAP_FLOOR = 1e-7

# Penalised mode: most LASSO solves of the root-find (its tolerance: _beta_rtol).
_MAX_OUTER = 50
# SPGL1 tolerance from which the compressed problem's products run in float32 (solve_standardized).
_FLOAT32_TOL = 1e-3


def _beta_rtol(tol):
    """``100 tol`` up to ``tol = 1e-4`` (``1e-4`` at the default ``1e-6``), ``sqrt(tol)`` above, but at least
    ``20 tol`` (the noise of lambda) and ``1e-7``."""
    return max(min(100.0 * tol, np.sqrt(tol)), 20.0 * tol, _GAP_FLOOR)


# Rows per block when standardising / scoring, so that temporaries stay at ~32 MiB.
_BLOCK_ELEMENTS = 1 << 22


# ----------------------------------------------------------------------------------------------
# Norms, duals and projections in SPGL1's calling convention: f(x, weights[, tau]).
# Built on spgl1's public ``oneprojector`` (projection onto the l1 ball); ``weights`` is the scalar
# 1 that spgl1 passes when no weights are given.


def _l1_primal(x, weights):
    return float(np.sum(np.abs(x) * weights))


def _l1_dual(x, weights):
    return float(np.max(np.abs(x) / weights, initial=0.0))


def _l1_project(x, weights, tau):
    return oneprojector(x, weights, tau)


def _row_norms(x, n_classes):
    rows = np.reshape(x, (-1, n_classes))
    return np.sqrt(np.einsum("ij,ij->i", rows, rows)), rows


def _group_primal(x, weights, n_classes):
    norms, _ = _row_norms(x, n_classes)
    return float(np.sum(norms * weights))


def _group_dual(x, weights, n_classes):
    norms, _ = _row_norms(x, n_classes)
    return float(np.max(norms / weights, initial=0.0))


def _group_project(x, weights, tau, n_classes):
    # Project the row norms onto the l1 ball, then rescale each row (spgl1's _norm_l12_project,
    # without its 0/0 warnings).
    norms, rows = _row_norms(x, n_classes)
    target = oneprojector(norms, weights, tau)
    factor = np.divide(target, norms, out=np.zeros_like(norms), where=norms > 0)
    return (rows * factor[:, None]).ravel()


def _penalty(group, n_classes):
    """``(primal, dual, project)`` callables for spgl1 (``x`` is row-major ``vec(W)``)."""
    if group:
        return (
            partial(_group_primal, n_classes=n_classes),
            partial(_group_dual, n_classes=n_classes),
            partial(_group_project, n_classes=n_classes),
        )
    return _l1_primal, _l1_dual, _l1_project


def group_norms(W, group):
    """``(Omega(W), Omega*(W))`` of an (F, K) matrix: l1/l-inf, or sum/max of row l2 norms."""
    W = np.asarray(W, dtype=np.float64)
    if group:
        rows = np.sqrt(np.einsum("ij,ij->i", W, W))
        return float(rows.sum()), float(rows.max(initial=0.0))
    a = np.abs(W)
    return float(a.sum()), float(a.max(initial=0.0))


# ----------------------------------------------------------------------------------------------
# Operator


def _stacked_operator(B, n_classes):
    """``vec(W) -> vec(B W)`` for ``W`` of shape ``(F, n_classes)``, both vectorised row-major.

    Shape ``(n * n_classes, F * n_classes)``: the block operator of spgl1's ``spg_mmv``
    (``I_K``-structured, i.e. ``B`` applied to every column of ``W``) without forming it; the adjoint
    is ``vec(R) -> vec(B^T R)``. ``B`` is used as is (no copy); the products run in ``B``'s precision
    (float32 or float64) and are returned as float64.
    """
    n, n_features = B.shape
    k = int(n_classes)

    def matvec(w):
        return (B @ np.reshape(w, (n_features, k)).astype(B.dtype, copy=False)).ravel().astype(np.float64, copy=False)

    def rmatvec(r):
        return (B.T @ np.reshape(r, (n, k)).astype(B.dtype, copy=False)).ravel().astype(np.float64, copy=False)

    return LinearOperator((n * k, n_features * k), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Solver


@dataclass
class SolveResult:
    """Solution of :func:`solve_l1`.

    Attributes
    ----------
    W : (F, K) float64 coefficients
    R : (n, K) float64 residual ``Y - B W``
    tau : float, ``Omega(W)``
    dual_norm : float, ``Omega*(B^T R)`` (the penalty ``beta`` that ``W`` is optimal for)
    beta_max : float, ``Omega*(B^T Y)``
    n_iter : int, SPGL1 iterations over all solves
    n_solves : int, SPGL1 calls (LASSO solves of the root-find in penalised mode)
    converged : bool
    message : str, SPGL1's exit status of the last solve, or why the solve was skipped
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


@contextlib.contextmanager
def _quiet(verbose):
    """spgl1 0.0.3 prints "Restoring best iterate" unconditionally and logs line-search warnings."""
    if verbose:
        yield
        return
    log = logging.getLogger("spgl1.spgl1")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _history_size(iter_lim):
    """spgl1 0.0.3 keeps per-iteration histories in arrays grown in blocks of ``_allocSize`` (10^4)
    and indexes one past the end when ``iter_lim >= _allocSize`` iterations are reached
    (IndexError). Make the block larger than ``iter_lim`` for the call."""
    module = importlib.import_module("spgl1.spgl1")
    old = getattr(module, "_allocSize", None)
    if old is None or iter_lim < old:
        yield
        return
    module._allocSize = int(iter_lim) + 1
    try:
        yield
    finally:
        module._allocSize = old


def _lasso_solved(info, tol):
    """A LASSO solve is done when SPGL1 met its gap tolerance, or when its line search failed
    (no measurable decrease left: the floating-point floor, seen around relative gaps of 1e-9 when
    ``tol`` is set far below that) at a relative gap within ``max(tol, 1e-7)``."""
    if info["stat"] == _EXIT_OPTIMAL:
        return True
    return info["stat"] == _EXIT_LINE_ERROR and info["rgap"] <= max(tol, _GAP_FLOOR)


def _spgl1(A, y, tau, sigma, x0, norms, tol, max_iter, verbose):
    primal, dual, project = norms
    with _quiet(verbose), _history_size(max_iter), np.errstate(divide="ignore", invalid="ignore"):
        x, r, g, info = spgl1(
            A, y, tau=tau, sigma=sigma, x0=x0,
            verbosity=min(int(verbose), 2), iter_lim=int(max_iter),
            opt_tol=tol, bp_tol=tol, ls_tol=tol,
            project=project, primal_norm=primal, dual_norm=dual,
        )
    return np.asarray(x, dtype=np.float64), np.asarray(r, dtype=np.float64), dual(g, 1), info


def solve_l1(A, Y, *, group, mode="penalized", beta=None, tau=None, sigma=None, beta_max=None,
             tol=1e-6, max_iter=2000, verbose=0, x0=None, beta_rtol=None):
    """Solve the output-layer problem on an operator ``A`` (``vec(W) -> vec(B W)``, row-major).

    Parameters
    ----------
    A : LinearOperator of shape ``(n K, F K)``, e.g. :func:`_stacked_operator`
    Y : (n, K) targets (already centred by the caller if an intercept is wanted)
    group : bool, row-group norm (True) or plain l1 over all entries (False)
    mode : "penalized" (needs absolute ``beta``), "lasso" (``tau``) or "bpdn" (``sigma``)
    beta_max : optional precomputed ``Omega*(A^T vec(Y))``
    tol : SPGL1's optimality tolerance (relative duality gap; also ``bp_tol`` and ``ls_tol``)
    max_iter : SPGL1 iteration limit per solve
    x0 : optional warm start, ``vec(W)`` (F K,); in penalised mode the root-find also starts at its
        ``tau = Omega(W)``
    beta_rtol : penalised mode: stop at ``|lambda - beta| <= beta_rtol * beta`` (default: from ``tol``,
        see the module docstring); a larger value gives a rough solution in fewer LASSO solves

    In penalised mode see the module docstring for the root-find and its stopping rule.
    """
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2:
        raise ValueError(f"Y must be 2-D (n, K), got shape {Y.shape}")
    n, k = Y.shape
    if A.shape[0] != n * k or A.shape[1] % k:
        raise ValueError(f"operator shape {A.shape} does not fit Y of shape {Y.shape}")
    n_features = A.shape[1] // k
    norms = _penalty(group, k)
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
        return _spgl1(A, y, tau_, sigma_, x0, norms, tol, max_iter, verbose)

    if mode == "lasso":
        if tau is None or tau < 0:
            raise ValueError("mode='lasso' needs tau >= 0")
        if tau == 0:  # spgl1 reads tau == 0 as "no LASSO constraint"
            return zero("tau == 0: W = 0")
        x, r, lam, info = run(float(tau), 0.0, x0)
        return result(x, r, lam, info["niters"], 1, _lasso_solved(info, tol),
                      _EXIT_MESSAGES.get(info["stat"], str(info["stat"])))

    if mode == "bpdn":
        if sigma is None or sigma < 0:
            raise ValueError("mode='bpdn' needs sigma >= 0")
        if sigma >= np.linalg.norm(y):
            return zero("sigma >= ||Y||: W = 0")
        x, r, lam, info = run(0.0, float(sigma), x0)
        ok = info["stat"] in (_EXIT_ROOT_FOUND, _EXIT_BPSOL_FOUND, _EXIT_LEAST_SQUARES)
        message = _EXIT_MESSAGES.get(info["stat"], str(info["stat"]))
        if ok and np.linalg.norm(r) > sigma * (1 + 1e-4) + 1e-12:
            ok = False
            message = "sigma is below the least-squares residual norm; returned least squares"
        return result(x, r, lam, info["niters"], 1, ok, message)

    if mode != "penalized":
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if beta is None or not beta >= 0:
        raise ValueError("mode='penalized' needs beta >= 0")
    beta = float(beta)
    if beta >= beta_max:
        return zero("beta >= beta_max: W = 0")
    if beta == 0:  # least squares (minimum-Omega interpolant if one exists): spgl1's BP mode
        x, r, lam, info = run(0.0, 0.0, None)
        ok = info["stat"] in (_EXIT_BPSOL_FOUND, _EXIT_LEAST_SQUARES)
        return result(x, r, lam, info["niters"], 1, ok,
                      _EXIT_MESSAGES.get(info["stat"], str(info["stat"])))
    rtol = _beta_rtol(tol) if beta_rtol is None else float(beta_rtol)
    return _penalized(A, y, n_features, k, group, primal, beta, beta_max, tol, rtol, run, result, x0)


def _secant(p1, p2, beta, log=True):
    """Secant root of ``lambda = beta`` through two solves ``(tau, g = lambda - beta, v)``: in
    ``(log tau, log lambda)`` if ``log`` and both taus and lambdas are positive, else in
    ``(tau, g)``."""
    (t1, g1, _), (t2, g2, _) = p1, p2
    lam1, lam2 = g1 + beta, g2 + beta
    if g1 == g2 or t1 == t2:
        return np.nan
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if log and min(t1, t2, lam1, lam2) > 0:
            slope = np.log(lam2 / lam1) / np.log(t2 / t1)
            return float(t2 * np.exp(np.log(beta / lam2) / slope))
        return float(t2 - g2 * (t2 - t1) / (g2 - g1))


def _quadratic_step(p1, p2, beta, tol):
    """tau where a quadratic model of lambda(tau) through two solves equals beta (nan if unusable).

    Points are ``(tau, g = lambda - beta, v = 1/2 ||R||^2)``. The model matches lambda at both taus
    and its mean over the interval, ``(v1 - v2) / (tau2 - tau1)`` (since ``dv/dtau = -lambda``); it
    is the secant when lambda is linear there. Skipped when the error of that mean (each v is within
    the SPGL1 duality gap, ``~tol * v``) could be 10% of the change in lambda.
    """
    (t1, g1, v1), (t2, g2, v2) = p1, p2
    dt = t2 - t1
    if dt == 0 or g1 == g2:
        return np.nan
    if 2 * tol * max(1.0, v1, v2) / abs(dt) > 0.1 * abs(g2 - g1):
        return np.nan
    lam1, lam2 = g1 + beta, g2 + beta
    q = 1.5 * (0.5 * (lam1 + lam2) - (v1 - v2) / dt)
    # lambda(s) = lam1 + (lam2 - lam1) s - 4 q s (1 - s),  s = (tau - t1) / dt
    s_secant = -g1 / (g2 - g1)
    if abs(q) <= 1e-12 * (abs(lam1) + abs(lam2)):
        return t1 + s_secant * dt
    roots = np.roots([4 * q, g2 - g1 - 4 * q, g1])
    roots = roots[np.isreal(roots)].real
    if roots.size == 0:
        return np.nan
    return float(t1 + roots[np.argmin(np.abs(roots - s_secant))] * dt)


def _penalized(A, y, n_features, k, group, primal, beta, beta_max, tol, rtol, run, result, x0=None):
    """Root-find ``g(tau) = Omega*(B^T R(tau)) - beta = 0`` (g continuous, non-increasing in tau).

    Every LASSO solve runs at the full tolerance ``tol`` (looser solves far from the root were tried:
    their ``lambda`` is too inaccurate to bracket reliably and the saving was small) and is
    warm-started from the previous solution, the first from ``x0`` at ``tau = Omega(x0)`` if given.
    Stops at ``|g| <= rtol * beta``.
    """
    # First guess: along the first piece of the path only the entry / row f* with the largest dual
    # value moves, in direction D (Omega(D) = 1), and lambda(tau) = beta_max - ||A vec(D)||^2 tau.
    g0 = np.reshape(A.rmatvec(y), (n_features, k))
    direction = np.zeros((n_features, k))
    if group:
        rows = np.sqrt(np.einsum("ij,ij->i", g0, g0))
        f = int(np.argmax(rows))
        direction[f] = g0[f] / rows[f]
    else:
        f, c = np.unravel_index(int(np.argmax(np.abs(g0))), g0.shape)
        direction[f, c] = np.sign(g0[f, c])
    slope = float(np.linalg.norm(A.matvec(direction.ravel())) ** 2)
    # The penalised optimum has 1/2||R||^2 + beta Omega(W) <= 1/2||Y||^2, so tau* <= this bound.
    tau_bound = float(y @ y) / (2.0 * beta)
    tau = min((beta_max - beta) / slope, 0.5 * tau_bound) if slope > 0 else 0.5 * tau_bound
    x = None
    if x0 is not None and 0 < primal(x0, 1) < tau_bound:
        x, tau = np.asarray(x0, dtype=np.float64), primal(x0, 1)

    lo = (0.0, beta_max - beta, 0.5 * float(y @ y))  # (tau, g, v) with g > 0
    hi = None  # (tau, g, v) with g < 0
    prev = lo
    side = 0  # Illinois: which end was kept last (-1 lo, +1 hi)
    gs = []  # |g| of every solve, for the bisection safeguard
    best = None  # (solved, |g|, x, r, lam): closest to the root, preferring finished solves
    n_iter = n_unsolved = 0
    for n_solves in range(1, _MAX_OUTER + 1):
        x, r, lam, info = run(tau, 0.0, x)
        n_iter += info["niters"]
        solved = _lasso_solved(info, tol)
        n_unsolved += not solved
        g = lam - beta
        if best is None or (solved, -abs(g)) > (best[0], -best[1]):
            best = (solved, abs(g), x, r, lam)
        if solved and abs(g) <= rtol * beta:
            return result(x, r, lam, n_iter, n_solves, True, "dual norm matches beta")
        # If the ball constraint is inactive (Omega(W) < tau: the least-squares end of the path),
        # W also solves every LASSO with tau' in [Omega(W), tau]: record the smallest such tau.
        if solved and g < 0:
            tau = min(tau, primal(x, 1))
        current = (tau, g, 0.5 * float(r @ r))
        gs.append(abs(g))
        if g > 0:
            if hi is not None and side == -1:
                hi = (hi[0], hi[1] / 2.0, hi[2])
            lo, side = current, -1
        else:
            if side == +1:
                lo = (lo[0], lo[1] / 2.0, lo[2])
            hi, side = current, +1
        if hi is None:
            # Not bracketed yet (every lambda so far > beta > 0): secant through the last two
            # points in (log tau, log lambda) (lambda falls roughly like a power of tau; a linear
            # secant of the convex-looking lambda undershoots), linear from tau = 0; at least
            # double tau when the secant is flat or backwards, at most x10.
            t = _secant(prev, current, beta)
            if not (np.isfinite(t) and t > tau):
                t = 2 * tau
            t = min(t, 10 * tau, 0.5 * (tau + tau_bound))
        else:
            # Bracketed: the same secant through the last two points, else the root of a quadratic
            # model through them that also matches v = 1/2||R||^2 (v' = -lambda), else Illinois
            # false position, else bisection; bisection too when |g| did not halve over the last
            # two solves.
            width = hi[0] - lo[0]
            if width <= 1e-14 * hi[0]:
                break

            def inside(t_):
                return np.isfinite(t_) and lo[0] + 1e-3 * width < t_ < hi[0] - 1e-3 * width

            t = np.nan
            if abs(g) > 0.1 * beta:  # far: lambda is power-like, use the log-log secant
                t = _secant(prev, current, beta)
            if not inside(t):
                t = _quadratic_step(prev, current, beta, tol)
            if not inside(t):
                t = _secant(prev, current, beta, log=False)
            if not inside(t):
                t = lo[0] - lo[1] * width / (hi[1] - lo[1])
            if not inside(t) or (len(gs) > 2 and gs[-1] > 0.5 * gs[-3]):
                t = np.sqrt(lo[0] * hi[0]) if lo[0] > 0 else 0.5 * (lo[0] + hi[0])
        prev = current
        tau = float(t)
    _, _, x, r, lam = best
    message = f"dual norm {lam:.6g} != beta {beta:.6g} after {n_solves} LASSO solves"
    if n_unsolved:
        message += (f"; {n_unsolved} of them stopped before SPGL1's tolerance (max_iter too small"
                    " for tol?)")
    return result(x, r, lam, n_iter, n_solves, False, message)


def _compressed_problem(B, Y):
    """An (F, F) factor ``R`` and targets ``Y_r`` (F, K) with the least squares of ``(B, Y)``.

    For ``n > F`` samples: ``R^T R = B^T B`` and ``R^T Y_r = B^T Y``, so for every ``W``
    ``||B W - Y||^2 = ||R W - Y_r||^2 + offset`` with ``offset = ||Y||^2 - ||Y_r||^2 >= 0`` (the part
    of ``Y`` outside the range of ``B``), and the gradients ``B^T (Y - B W) = R^T (Y_r - R W)`` agree:
    LASSO and penalised solutions are the same, BPDN's ``sigma^2`` shifts by ``offset``. SPGL1 then
    works on ``F x F`` instead of ``n x F``. ``R`` is the transposed Cholesky factor of ``B^T B``, or
    ``sqrt(D) V^T`` from its eigendecomposition when it is singular.

    Returns ``R``, ``Y_r`` and ``offset``.
    """
    gram = gram_matrix(B)
    correlation = B.T @ Y
    try:
        lower = cholesky_lower(gram.copy())
        factor = lower.T
        targets = scipy.linalg.solve_triangular(lower, correlation, lower=True)
    except np.linalg.LinAlgError:
        eigenvalues, eigenvectors = np.linalg.eigh(gram)
        keep = eigenvalues > eigenvalues.max() * len(gram) * np.finfo(np.float64).eps
        roots = np.sqrt(eigenvalues[keep])
        factor = roots[:, None] * eigenvectors[:, keep].T
        targets = (eigenvectors[:, keep].T @ correlation) / roots[:, None]
    offset = max(float(np.einsum("ij,ij->", Y, Y) - np.einsum("ij,ij->", targets, targets)), 0.0)
    return factor, targets, offset


def solve_standardized(Bs, Y, *, group, mode, beta, tau, sigma, beta_max, tol, max_iter, verbose=0,
                       x0=None, beta_rtol=None):
    """:func:`solve_l1` on in-memory features ``Bs`` (n, F) and targets ``Y`` (n, K), both centred.

    With more samples than features it solves the exact F x F compressed problem
    (:func:`_compressed_problem`, BPDN's ``sigma`` shifted to match); the returned ``R`` is then the
    compressed residual. ``beta`` is absolute; ``beta_max`` is computed when None.

    At ``tol >= 1e-3`` SPGL1's products with the compressed factor run in float32: with K columns they
    are bound by memory traffic, so half the bytes take about half the time, and float32's rounding
    (relative ``~1e-7`` per term, ``~1e-5`` over F terms) is far below the duality gap asked for.
    """
    if Bs.shape[0] > Bs.shape[1]:
        Bs, Y, offset = _compressed_problem(Bs, Y)
        if sigma is not None:
            sigma = np.sqrt(max(float(sigma) ** 2 - offset, 0.0))
        if tol >= _FLOAT32_TOL:
            Bs = Bs.astype(np.float32)
    return solve_l1(_stacked_operator(Bs, Y.shape[1]), Y, group=group, mode=mode, beta=beta, tau=tau,
                    sigma=sigma, beta_max=beta_max, tol=tol, max_iter=max_iter, verbose=verbose, x0=x0,
                    beta_rtol=beta_rtol)


# ----------------------------------------------------------------------------------------------
# Estimator


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _standardize(B, standardize):
    """One float64 copy of B, centred (and scaled to unit std if ``standardize``)."""
    n = B.shape[0]
    mean = np.mean(B, axis=0, dtype=np.float64)
    Bs = np.empty(B.shape, dtype=np.float64)
    step = max(1, _BLOCK_ELEMENTS // max(1, B.shape[1]))
    for i in range(0, n, step):
        np.subtract(B[i:i + step], mean, out=Bs[i:i + step], dtype=np.float64)
    scale = _scale(np.sqrt(np.einsum("ij,ij->j", Bs, Bs) / n), mean, standardize)
    Bs /= scale
    return Bs, mean, scale


def _scale(std, mean, standardize):
    """Per-feature divisors: the std (1 where it is zero up to rounding, as scikit-learn's StandardScaler
    does) if ``standardize``, else ones."""
    if not standardize:
        return np.ones_like(std)
    constant = std <= 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    return np.where(constant, 1.0, std)


class L1OutputLayer(ClassifierMixin, BaseEstimator):
    """Linear classifier on one-hot targets with an l1 / row-group-l1 penalty, solved by SPGL1.

    Parameters
    ----------
    mode : "penalized" | "lasso" | "bpdn"
        ``min 1/2||BW - Y||^2 + beta Omega(W)``, ``min ||BW - Y|| s.t. Omega(W) <= tau``, or
        ``min Omega(W) s.t. ||BW - Y|| <= sigma`` (B standardised/centred, Y centred one-hot).
    beta : float, penalty (penalised mode); a fraction of ``beta_max_`` if ``relative`` else absolute
    tau, sigma : float, absolute constraint levels for "lasso" / "bpdn" (``relative`` does not apply)
    group : bool, row-group norm ``sum_f ||W[f, :]||_2`` (True) or l1 over all entries (False)
    relative : bool, see ``beta``
    standardize : bool, scale features to unit training std (they are always centred)
    max_iter : int, SPGL1 iteration limit per solve
    tol : float, SPGL1 optimality tolerance (relative duality gap of each LASSO solve)
    out_of_core : "working_set" | "stream", how features in a
        :class:`pipeline.feature_store.FeatureStore` are fitted (see :mod:`pipeline.out_of_core`)
    working_set : int, size of the first (and smallest) working set of the "working_set" strategy, which
        then holds ``max(working_set, 2 |support|)`` features; in-memory features with more columns than
        this are fitted by that strategy too (SPGL1 then iterates on the set's columns instead of all F,
        and no float64 copy of B or F x F Gram matrix is made)
    warm_start : bool, start from the previous fit's ``coef_`` (same features and classes), e.g. along
        a path of penalties: ``for beta in betas: layer.set_params(beta=beta).fit(B, y)``
    refit : bool, keep the l1 problem's choice of features (the non-zero rows of its solution, or entries
        of a class's column with ``group=False``) but replace their shrunken coefficients by the least
        squares fit on them (the relaxed lasso of Meinshausen 2007, relaxation 0): the l1 penalty selects,
        least squares estimates. ``l1_coef_`` keeps the l1 solution; ``coef_`` is then no longer its
        minimiser, so ``objective`` is larger than the l1 problem's optimum.
    verbose : int, SPGL1 verbosity (0 silent)

    ``fit``, ``decision_function`` and ``predict`` take an in-memory (n, F) array or a complete
    :class:`pipeline.feature_store.FeatureStore`.

    Attributes
    ----------
    classes_, coef_ (F, K) in the standardised space, intercept_ (K,), mean_ (F,), scale_ (F,),
    beta_ (absolute penalty; the dual norm at the solution in "lasso"/"bpdn" modes),
    tau_ (``Omega(l1_coef_)``), n_iter_ (SPGL1 iterations, all solves), beta_max_
    (``Omega*(B_std^T Y_c)``), dual_norm_ (``Omega*(B_std^T R)`` at the solution), n_solves_,
    converged_, n_features_in_, n_rounds_ (working-set rounds; 1 for a direct solve), l1_coef_ (the l1
    solution; the same array as ``coef_`` unless ``refit``).
    """

    def __init__(self, mode="penalized", beta=0.01, tau=None, sigma=None, group=True,
                 relative=True, standardize=True, max_iter=2000, tol=1e-6, out_of_core="working_set",
                 working_set=1024, warm_start=False, refit=False, verbose=0):
        self.mode = mode
        self.beta = beta
        self.tau = tau
        self.sigma = sigma
        self.group = group
        self.relative = relative
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.out_of_core = out_of_core
        self.working_set = working_set
        self.warm_start = warm_start
        self.refit = refit
        self.verbose = verbose

    # -- validation ------------------------------------------------------------------------------

    def _check_params(self):
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")

        def check(name, value, needed):
            if value is None:
                if needed:
                    raise ValueError(f"mode={self.mode!r} needs {name}")
                return
            if not _is_real(value) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")

        check("beta", self.beta, self.mode == "penalized")
        check("tau", self.tau, self.mode == "lasso")
        check("sigma", self.sigma, self.mode == "bpdn")
        if not (_is_real(self.tol) and self.tol > 0):
            raise ValueError(f"tol must be positive, got {self.tol!r}")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")

    def _validate(self, B, y="no_validation", reset=False):
        if isinstance(B, FeatureStore):
            return self._validate_store(B, y, reset)
        # dense float32/float64 only (no copy for either), finite values (scikit-learn's messages:
        # "Input X contains NaN / infinity", "inconsistent numbers of samples", "requires y")
        kwargs = dict(y=y, dtype=(np.float64, np.float32), reset=reset)
        if _sk_validate_data is not None:
            return _sk_validate_data(self, B, **kwargs)
        return self._validate_data(B, **kwargs)  # pragma: no cover - scikit-learn < 1.6

    def _validate_store(self, store, y, reset):
        if not store.complete:
            raise ValueError(f"the feature store {store.path} is incomplete: finish computing it first")
        n_rows, n_features = store.shape
        if reset:
            self.n_features_in_ = n_features
        elif n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but L1OutputLayer is expecting "
                             f"{self.n_features_in_} features as input.")
        if isinstance(y, str) and y == "no_validation":
            return store
        y = np.asarray(y)
        if y.shape != (n_rows,):
            raise ValueError(f"y must have shape ({n_rows},) like the feature store, got {y.shape}")
        return store, y

    # -- fit / predict ---------------------------------------------------------------------------

    def fit(self, B, y):
        self._check_params()
        B, y = self._validate(B, y, reset=True)
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError("L1OutputLayer needs samples of at least 2 classes; got 1 class "
                             f"({classes[0]})")
        Y = np.zeros((len(y_index), len(classes)))
        Y[np.arange(len(y_index)), y_index] = 1.0
        self.intercept_ = Y.mean(axis=0)
        Y -= self.intercept_
        settings = dict(group=self.group, mode=self.mode, tau=self.tau, sigma=self.sigma, tol=float(self.tol),
                        max_iter=self.max_iter, verbose=self.verbose)
        W0 = getattr(self, "l1_coef_", None) if self.warm_start else None
        if W0 is not None and W0.shape != (self.n_features_in_, len(classes)):
            W0 = None
        strategy = self.out_of_core
        if not isinstance(B, FeatureStore) and B.shape[1] > self.working_set:
            B, strategy = ArrayFeatures(B), "working_set"  # no float64 copy of B, no F x F Gram matrix
        if isinstance(B, (FeatureStore, ArrayFeatures)):
            from .out_of_core import solve_out_of_core  # it builds on this module

            self.mean_ = B.mean()
            self.scale_ = _scale(B.std(), self.mean_, self.standardize)
            res, beta_abs, self.n_rounds_ = solve_out_of_core(
                B, self.mean_, self.scale_, Y, strategy=strategy, working_set=self.working_set,
                beta=self.beta, relative=self.relative, W0=W0, **settings)
        else:
            Bs, self.mean_, self.scale_ = _standardize(B, self.standardize)
            _, dual, _ = _penalty(self.group, len(classes))
            beta_max = dual((Bs.T @ Y).ravel(), 1)
            beta_abs = None
            if self.mode == "penalized":
                beta_abs = float(self.beta) * beta_max if self.relative else float(self.beta)
            res = solve_standardized(Bs, Y, beta=beta_abs, beta_max=beta_max, **settings,
                                     x0=None if W0 is None else W0.ravel())
            self.n_rounds_ = 1
        self.beta_max_ = res.beta_max
        if not res.converged:
            warnings.warn(f"L1OutputLayer ({self.mode}) did not converge: {res.message}",
                          ConvergenceWarning, stacklevel=2)
        self.classes_ = classes
        self.l1_coef_ = res.W
        self.coef_ = self._least_squares_on_support(B, Y, res.W) if self.refit else res.W
        self.tau_ = res.tau
        self.dual_norm_ = res.dual_norm
        self.beta_ = beta_abs if self.mode == "penalized" else res.dual_norm
        self.n_iter_ = res.n_iter
        self.n_solves_ = res.n_solves
        self.converged_ = res.converged
        return self

    def _least_squares_on_support(self, B, Y, W):
        """(F, K) least-squares coefficients on the standardised features where ``W`` is non-zero (per
        class column, or the non-zero rows for ``group``), zero elsewhere; minimum-norm if rank deficient."""
        B = ArrayFeatures(B) if isinstance(B, np.ndarray) else B
        refitted = np.zeros_like(W)
        supports = [np.flatnonzero(np.any(W != 0, axis=1))] if self.group else [np.flatnonzero(c) for c in W.T]
        columns = [slice(None)] if self.group else range(W.shape[1])
        for support, column in zip(supports, columns):
            if not len(support):
                continue
            features = standardized_columns(B, support, self.mean_, self.scale_)
            refitted[support, column] = scipy.linalg.lstsq(features, Y[:, column], lapack_driver="gelsd")[0]
        return refitted

    def decision_function(self, B):
        """Scores ``((B - mean_) / scale_) coef_ + intercept_``: (n, K), or (n,) for two classes
        (the second class's score minus the first's, positive for ``classes_[1]``)."""
        scores = self.class_scores(B)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, B):
        scores = self.class_scores(B)
        return self.classes_[np.argmax(scores, axis=1)]

    def class_scores(self, B):
        """(n, K) scores of every class."""
        check_is_fitted(self, "coef_")
        B = self._validate(B)
        blocks = (B.row_blocks(dtype=np.float64) if isinstance(B, FeatureStore) else
                  ((i, B[i:i + step]) for step in [max(1, _BLOCK_ELEMENTS // max(1, B.shape[1]))]
                   for i in range(0, B.shape[0], step)))
        out = np.empty((len(B), self.coef_.shape[1]))
        for start, rows in blocks:
            block = np.subtract(rows, self.mean_, dtype=np.float64)
            block /= self.scale_
            np.matmul(block, self.coef_, out=out[start:start + len(block)])
        out += self.intercept_
        return out

    def objective(self, B, y):
        """``1/2 ||Y - scores||_F^2 + beta_ Omega(coef_)`` with ``Y`` one-hot.

        On the training data this is ``1/2 ||B_std W - Y_c||^2 + beta Omega(W)``, the problem fit
        solved (the intercept is the training class frequencies).
        """
        scores = self.class_scores(B)
        y = np.asarray(y)
        if y.shape != (scores.shape[0],):
            raise ValueError(f"y must have shape ({scores.shape[0]},), got {y.shape}")
        index = np.searchsorted(self.classes_, y)
        index = np.minimum(index, len(self.classes_) - 1)
        if not np.array_equal(self.classes_[index], y):
            raise ValueError("y contains labels not seen in fit")
        scores[np.arange(len(y)), index] -= 1.0
        omega, _ = group_norms(self.coef_, self.group)
        return 0.5 * float(np.einsum("ij,ij->", scores, scores)) + self.beta_ * omega
