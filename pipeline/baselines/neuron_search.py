"""The cutting-plane method's violator search: neurons ``(A u + b)_+`` with a large ``|r^T (A u + b)_+|``
for the current dual point (the residual) ``r``.

Two searches:

- :func:`spike_free_violator`, the paper's relaxation ``max r^T A u s.t. A u (+ b) >= 0, ||u|| <= 1``,
  exact for spike-free data; its violators are neurons active on every row (with biases, the linear part).
- :func:`arrangement_ascent`, for the neurons that are active on only part of the rows: from random
  starts, alternate the best ``u`` for a fixed active set (``u`` along ``A_S^T r_S``) with the best bias
  for a fixed ``u`` (:func:`best_bias`, exact by one sort). Every neuron it returns is feasible, so each
  value is a lower bound on the largest violation; it certifies nothing by itself.
"""

import numpy as np
import scipy.optimize


def spike_free_violator(rows, residual, bias):
    """The neuron maximising ``residual^T (A u + b)_+`` under the spike-free relaxation.

    Parameters
    ----------
    rows : (n, d) pixel rows ``A``; residual : (n,) the dual point ``r``
    bias : bool, neurons with a bias (then ``residual`` must sum to zero)

    Returns
    -------
    value : float >= 0, the relaxed maximum; u : (d,) unit neuron (None when value is 0); b : float
    """
    if bias:
        direction = rows.T @ residual
    else:
        slack, _ = scipy.optimize.nnls(rows.T, -(rows.T @ residual), maxiter=50 * rows.shape[0])
        direction = rows.T @ (residual + slack)
    value = float(np.linalg.norm(direction))
    if value == 0.0:
        return 0.0, None, 0.0
    neuron = direction / value
    return value, neuron, (-float(np.min(rows @ neuron)) if bias else 0.0)


def best_bias(projections, residual):
    """``max_b sum_i r_i (p_i + b)_+`` for each column of ``projections`` P (n, s), ``p = A u``, among
    the biases that leave at least one row inactive (``b = -p_j`` for a row j; the value is piecewise
    linear in ``b``, so a breakpoint attains the maximum over finite biases; ``b -> inf`` is the
    linear neuron, the linear part's business).

    Returns ``(values (s,), biases (s,))``.
    """
    order = np.argsort(-projections, axis=0)
    sorted_projections = np.take_along_axis(projections, order, axis=0)
    sorted_residual = residual[order]
    values = (np.cumsum(sorted_residual * sorted_projections, axis=0)
              - sorted_projections * np.cumsum(sorted_residual, axis=0))
    values[-1] = -np.inf  # b = -min p: every row but the last active, the linear neuron in the limit
    best = np.argmax(values, axis=0)
    columns = np.arange(projections.shape[1])
    return values[best, columns], -sorted_projections[best, columns]


def arrangement_ascent(rows, residual, bias, n_starts, n_steps, rng):
    """Neurons with a large ``residual^T (A u + b)_+`` by alternating ascent from random starts.

    Parameters
    ----------
    rows : (n, d) pixel rows ``A``; residual : (n,) the dual point ``r`` (summing to zero with biases)
    bias : bool, neurons with a bias (:func:`best_bias`), else ``b = 0``
    n_starts : int, random unit starts ``u`` (Gaussian directions); n_steps : int, ascent steps each
    rng : numpy Generator or RandomState

    Returns
    -------
    values (s,), hidden (d, s) unit neurons, biases (s,): each start's best neuron, sorted by value,
    largest first (``s = n_starts``)
    """
    hidden = rng.standard_normal((rows.shape[1], n_starts))
    hidden /= np.linalg.norm(hidden, axis=0)
    score = (lambda projections: best_bias(projections, residual)) if bias else (
        lambda projections: (residual @ np.maximum(projections, 0.0), np.zeros(projections.shape[1])))
    values, biases = score(rows @ hidden)
    for _ in range(n_steps):
        active = (rows @ hidden + biases) > 0
        direction = rows.T @ (residual[:, None] * active)
        norms = np.linalg.norm(direction, axis=0)
        moved = norms > 0
        candidate = np.where(moved, direction / np.where(moved, norms, 1.0), hidden)
        candidate_values, candidate_biases = score(rows @ candidate)
        better = candidate_values > values
        if not better.any():
            break
        hidden[:, better], biases[better], values[better] = (candidate[:, better], candidate_biases[better],
                                                             candidate_values[better])
    order = np.argsort(-values)
    return values[order], hidden[:, order], biases[order]
