"""Exact minimum-norm point of a polytope: Wolfe's algorithm (1976).

The extreme-point filter of a patch ``a_i`` (method.md, eq. 10) solves

    min_lambda || a_i - sum_j lambda_j a_j ||^2   s.t.  lambda >= 0, sum_j lambda_j = 1,

which is the minimum-norm point of ``conv{y_j}`` with ``y_j = a_i - a_j``: the residual is
``r = sum_j lambda_j y_j``. Wolfe's algorithm is an active-set method that is exact in finite steps: it
keeps a *corral* ``S`` (affinely independent points whose affine minimum-norm point lies inside their
hull), adds the point that most violates optimality, and moves back into the hull when needed. At the
end ``lambda`` is the exact minimiser on ``S`` of the equality-constrained least squares, up to
rounding, with at most ``d + 1`` non-zero weights (Caratheodory).

Optimality (method.md): ``r^T y_j >= r^T r`` for every ``j``; the *gap* is ``r^T r - min_j r^T y_j``.
"""

import numpy as np

_ZERO_WEIGHT = 1e-14


def min_norm_point(points, start=None, start_weights=None, tol=1e-12, max_iter=None):
    """Minimum-norm point of the convex hull of the rows of ``points``.

    Parameters
    ----------
    points : float64 array, shape (m, d)
    start : int array (s,), optional. Indices of a warm-start support.
    start_weights : float array (s,), optional. Positive weights on ``start`` summing to 1.
    tol : float. Stop when the gap ``x.x - min_j x.y_j`` is at most ``tol * max(x.x, tol * max_j y_j.y_j)``:
        relative to the squared norm of the answer, and absolute near zero (a point inside the hull).
    max_iter : int, optional. Cap on major cycles (default ``10 * (d + 1) + 100``).

    Returns
    -------
    support : int64 array (s,), indices of the points with non-zero weight
    weights : float64 array (s,), positive, summing to 1
    """
    points = np.asarray(points, dtype=np.float64)
    squared_norms = np.einsum("ij,ij->i", points, points)
    floor = tol * squared_norms.max()
    if start is None:
        support, weights = [int(np.argmin(squared_norms))], np.ones(1)
    else:
        support, weights = [int(i) for i in start], np.asarray(start_weights, dtype=np.float64)
        support, weights = _minor_cycles(points, support, weights)
    if max_iter is None:
        max_iter = 10 * (points.shape[1] + 1) + 100
    previous_norm = np.inf
    for _ in range(max_iter):
        x = weights @ points[support]
        norm_x = x @ x
        if norm_x >= previous_norm:  # no strict decrease: rounding has stalled the active set
            break
        previous_norm = norm_x
        inner = points @ x
        entering = int(np.argmin(inner))
        if norm_x - inner[entering] <= tol * max(norm_x, floor) or entering in support:
            break
        support, weights = _minor_cycles(points, support + [entering], np.append(weights, 0.0))
    return np.asarray(support, dtype=np.int64), weights


def _minor_cycles(points, support, weights):
    """Move ``weights`` (on ``support``) to the minimum-norm point of the affine hull of a corral.

    Each cycle computes the affine minimiser ``alpha``; if it lies in the hull it is taken, otherwise
    the step from ``weights`` towards ``alpha`` stops at the boundary and the points whose weight
    reaches zero leave the support.
    """
    while True:
        alpha = _affine_min_norm_weights(points[support])
        if np.all(alpha > _ZERO_WEIGHT):
            return support, alpha
        decrease = weights - alpha
        ratios = np.divide(weights, decrease, out=np.zeros_like(weights), where=decrease > 0)
        ratios[alpha > _ZERO_WEIGHT] = np.inf
        blocking = int(np.argmin(ratios))
        step = ratios[blocking]
        weights = weights + step * (alpha - weights)
        keep = weights > _ZERO_WEIGHT
        keep[blocking] = False
        support = [s for s, k in zip(support, keep) if k]
        weights = weights[keep] / weights[keep].sum()


def _affine_min_norm_weights(corral):
    """Weights ``alpha`` (sum 1) of the minimum-norm point of the affine hull of the rows of ``corral``.

    Solves ``(G + c 1 1^T) alpha ~ 1`` with ``G = Y Y^T``; for affinely independent rows the matrix is
    positive definite for any ``c > 0`` and the normalised solution is the affine minimiser. ``c`` is
    the mean of ``diag(G)``, which keeps the two terms on the same scale.
    """
    if len(corral) == 1:
        return np.ones(1)
    gram = corral @ corral.T
    gram += np.trace(gram) / len(gram)
    ones = np.ones(len(gram))
    try:
        alpha = np.linalg.solve(gram, ones)
    except np.linalg.LinAlgError:  # affinely dependent corral (rounding): least squares is still defined
        alpha = np.linalg.lstsq(gram, ones, rcond=None)[0]
    return alpha / alpha.sum()
