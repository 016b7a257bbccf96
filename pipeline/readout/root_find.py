"""The penalised mode: ``min 1/2 ||B W - Y||^2 + beta Omega(W)`` as a root-find along SPGL1's Pareto curve.

The LASSO solution ``W(tau)`` solves the penalised problem for ``beta = lambda(tau) = Omega*(B^T R(tau))``
(see :mod:`pipeline.readout.solve`); for the l1 norm ``lambda`` is piecewise linear in ``tau``.
:func:`penalized_root_find` finds ``lambda(tau) = beta`` by a
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
"""

import numpy as np

from .spgl1_adapter import GAP_FLOOR, lasso_solved

# Most LASSO solves of the root-find (its tolerance: beta_rtol_for).
MAX_SOLVES = 50


def beta_rtol_for(tol):
    """``100 tol`` up to ``tol = 1e-4`` (``1e-4`` at the default ``1e-6``), ``sqrt(tol)`` above, but at least
    ``20 tol`` (the noise of lambda) and ``1e-7``."""
    return max(min(100.0 * tol, np.sqrt(tol)), 20.0 * tol, GAP_FLOOR)


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


def penalized_root_find(A, y, n_features, k, group, primal, beta, beta_max, tol, rtol, run, result, x0=None):
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
    for n_solves in range(1, MAX_SOLVES + 1):
        x, r, lam, info = run(tau, 0.0, x)
        n_iter += info["niters"]
        solved = lasso_solved(info, tol)
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
