"""The penalty chosen on held-out rows, along a warm-started path of LASSO solves (``beta="auto"``).

The penalised solutions for ``beta`` from ``beta_max`` down to 0 are the LASSO solutions ``W(tau)`` for
``tau`` from 0 up (SPGL1's Pareto curve, :mod:`pipeline.readout.solve`): the solution at ``tau`` is
optimal for the penalty ``lambda(tau) = Omega*(B^T R(tau))``. :func:`validated_path` therefore walks
up in ``tau`` with one LASSO solve per point, each warm-started from the previous solution (no
root-find: whatever ``lambda`` a point lands on, it is an exact solution for that penalty). The next
``tau`` aims at the next penalty of a geometric grid ``beta_max * min_ratio ** (j / n_penalties)``:
on the first piece of the path ``lambda`` falls linearly (``lambda = beta_max - ||B_f||^2 tau``, only the
top feature moves), further on roughly like a power of ``tau``, so the aim is a secant through the
last two points in ``(log tau, log lambda)``, the step kept between x1.05 and x2 (near the least-squares
end lambda falls steeply in tau, and a longer step would jump over several penalties of the grid).

Each point is scored by a caller's function (held-out accuracy); the path stops once the penalty has
fallen ``patience`` steps of the grid (a factor ``min_ratio ** (patience / n_penalties)``, within half a
step) below the best-scoring point's without a better score, at the grid's end, or at the least-squares
end (the ball constraint no longer active). Patience is counted in steps of the penalty, not in points:
near ``beta_max`` several points can fall within one step of the grid (the first features enter at
once, and the step in ``tau`` is bounded), and held-out accuracy is noisy there (a few features with
small coefficients), so counting points stopped the path at its top. Deeper down (below
``0.1 beta_max``) the points past the best are the most expensive of the path (the support, hence the
working set, grows with every step), so a point that scores significantly worse than the best on the same
held-out rows also ends it: ``score`` returns one score per held-out row (1 correct, 0 wrong), and the
path stops when the mean of the paired differences ``best - point`` exceeds ``significant_drop`` of its
standard errors ``std(best - point) / sqrt(n_rows)`` (a paired test: two solutions close on the path
classify most rows alike, so a drop shows against the rows on which they disagree, not against the
binomial noise of each accuracy; on CIFAR-10 at 4,000 filters a fall from 0.6950 to 0.6860 was under two
binomial standard errors, and the next point, far below, cost half the path). The best point (ties: the
larger penalty, fewer features) is returned with its solution, to warm-start the final fit on all rows.
"""

import logging
import time
from dataclasses import astuple, dataclass, fields

import numpy as np

logger = logging.getLogger(__name__)

# Bounds on the growth of tau from one point to the next.
_MIN_STEP, _MAX_STEP = 1.05, 2.0
# Below this beta / beta_max, a significant drop of held-out accuracy ends the path.
_DROP_BELOW_RATIO = 0.1


@dataclass
class PathPoint:
    """One solve of the path.

    tau : float, ``Omega(W)`` (the LASSO level the solution is optimal for)
    beta : float, the penalty the solution is optimal for, ``Omega*(B^T R)``
    beta_ratio : float, ``beta / beta_max``
    n_features : int, features with a non-zero coefficient (rows of ``W``; entries' rows for l1)
    score : float, the caller's score of the solution (held-out accuracy)
    seconds : float, wall time of the solve and its scoring
    n_iter : int, the solver's iterations
    converged : bool
    """

    tau: float
    beta: float
    beta_ratio: float
    n_features: int
    score: float
    seconds: float
    n_iter: int
    converged: bool



# The columns of :func:`path_table`'s rows: PathPoint's fields, then whether the point was chosen.
PATH_COLUMNS = tuple(field.name for field in fields(PathPoint)) + ("chosen",)


def path_table(points, best):
    """(len(points), len(PATH_COLUMNS)) float64 array of the path, one row per point (``chosen`` 1 or 0)."""
    return np.array([[*astuple(point), float(i == best)] for i, point in enumerate(points)], dtype=np.float64)


def path_records(table):
    """One dict per row of a :func:`path_table` (integers and flags as int / bool), e.g. for metrics.json."""
    kinds = {field.name: field.type for field in fields(PathPoint)} | {"chosen": bool}
    return [{name: kinds[name](value) for name, value in zip(PATH_COLUMNS, row)} for row in np.asarray(table)]


def penalty_grid(n_penalties, min_ratio):
    """``(n_penalties,)`` decreasing ratios ``beta / beta_max``, geometric from ``min_ratio ** (1 / n)``
    down to ``min_ratio`` (``beta_max`` itself, where ``W = 0``, is left out)."""
    return float(min_ratio) ** (np.arange(1, n_penalties + 1) / n_penalties)


def next_tau(target, points, beta_max, first_slope):
    """The ``tau`` aimed at penalty ``target`` after the solved ``points`` ((tau, lambda) pairs, increasing tau).

    No point yet: the first piece of the path, ``lambda = beta_max - first_slope * tau``. One point: the
    linear secant from ``(0, beta_max)``. Then the secant in ``(log tau, log lambda)`` through the last
    two. Kept within ``[1.05, 2]`` times the last ``tau``.
    """
    if not points:
        return (beta_max - target) / first_slope
    (t1, l1), (t2, l2) = ((0.0, beta_max), points[-1]) if len(points) == 1 else points[-2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        if t1 > 0 and min(l1, l2, target) > 0 and l1 != l2:
            slope = np.log(l2 / l1) / np.log(t2 / t1)
            tau = t2 * np.exp(np.log(target / l2) / slope)
        else:
            tau = t2 + (target - l2) * (t2 - t1) / (l2 - l1)
    if not np.isfinite(tau):
        tau = _MAX_STEP * t2
    return float(np.clip(tau, _MIN_STEP * t2, _MAX_STEP * t2))


def validated_path(solve_at, score, beta_max, first_slope, *, n_penalties, min_ratio, patience, constrained=True,
                   significant_drop=None):
    """Walk the LASSO path and keep the best-scoring point.

    Parameters
    ----------
    solve_at : callable ``(tau, beta, W0) -> SolveResult``: the LASSO solution at ``tau`` (or, for a solver
        without the LASSO form, the penalised one at the aimed ``beta``), ``W0`` the previous (F, K)
        solution or None
    score : callable ``(W) -> (n_rows,) float``, one score per held-out row of the (F, K) solution, higher is
        better (1.0 where it classifies the row correctly, else 0.0); a point's score is their mean
    beta_max : float, ``Omega*(B^T Y)`` of the fitted rows
    first_slope : float, ``||B_f||^2`` of the feature with the largest dual value (the first to enter)
    n_penalties, min_ratio : the grid of :func:`penalty_grid`, also the most points solved
    patience : int, stop once the penalty is this many grid steps below the best point's (see the module
        docstring)
    constrained : bool, ``solve_at`` solves LASSO problems (False: penalised ones, which have no
        least-squares end to detect)
    significant_drop : float or None, below ``0.1 beta_max`` a mean score this many standard errors of the
        paired differences below the best's ends the path (module docstring); None: patience only

    Returns ``(points, best, W_best)``: the :class:`PathPoint` list, the index of the best and its solution.
    """
    points, best, W_best, W, rows_best = [], None, None, None, None
    patience_factor = float(min_ratio) ** ((patience - 0.5) / n_penalties)
    for target in beta_max * penalty_grid(n_penalties, min_ratio):
        if points and points[-1].beta <= target:
            continue  # the last point already reached this penalty
        start = time.perf_counter()
        tau = next_tau(target, [(p.tau, p.beta) for p in points], beta_max, first_slope)
        result = solve_at(tau, target, W)
        W = result.W
        rows = np.asarray(score(W), dtype=np.float64)
        point = PathPoint(float(result.tau), float(result.dual_norm), float(result.dual_norm / beta_max),
                          int(np.count_nonzero(np.any(W != 0, axis=1))), float(rows.mean()),
                          0.0, int(result.n_iter), bool(result.converged))
        point.seconds = round(time.perf_counter() - start, 3)
        points.append(point)
        logger.info("[output] path %d: beta %.3g of beta_max, %d features, held-out score %.4f (%.1f s)",
                    len(points), point.beta_ratio, point.n_features, point.score, point.seconds)
        if best is None or point.score > points[best].score:
            best, W_best, rows_best = len(points) - 1, W, rows
        at_least_squares_end = constrained and result.tau < tau * (1 - 1e-6)
        out_of_patience = point.beta <= points[best].beta * patience_factor
        at_grid_end = point.beta_ratio <= min_ratio
        dropped = (significant_drop is not None and point.beta_ratio <= _DROP_BELOW_RATIO
                   and significantly_worse(rows, rows_best, significant_drop))
        if at_least_squares_end or out_of_patience or dropped or at_grid_end:
            break
    return points, best, W_best


def significantly_worse(rows, best_rows, n_standard_errors):
    """Whether the per-row scores ``rows`` (n,) fall below ``best_rows`` (n,) on the same rows by more than
    ``n_standard_errors`` standard errors of the mean paired difference (a paired t statistic)."""
    difference = np.asarray(best_rows, dtype=np.float64) - rows
    mean = difference.mean()
    standard_error = difference.std(ddof=1) / np.sqrt(len(difference)) if len(difference) > 1 else 0.0
    return bool(mean > n_standard_errors * standard_error and mean > 0)
