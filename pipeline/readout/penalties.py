"""The output layer's penalties: the l1 norm of all entries of ``W`` and the row-group norm ``sum_f ||W[f, :]||_2``.

Each comes as its value, its dual norm and the projection onto its ball, in SPGL1's calling convention
``f(x, weights[, tau])`` with ``x`` the row-major ``vec(W)`` (the K entries of a feature's row are
contiguous, the layout of spgl1's MMV mode). Built on spgl1's public ``oneprojector`` (projection onto
the l1 ball); ``weights`` is the scalar 1 that spgl1 passes when no weights are given.
"""

from functools import partial

import numpy as np
from spgl1 import oneprojector


def l1_primal(x, weights):
    return float(np.sum(np.abs(x) * weights))


def l1_dual(x, weights):
    return float(np.max(np.abs(x) / weights, initial=0.0))


def l1_project(x, weights, tau):
    return oneprojector(x, weights, tau)


def _row_norms(x, n_classes):
    rows = np.reshape(x, (-1, n_classes))
    return np.sqrt(np.einsum("ij,ij->i", rows, rows)), rows


def group_primal(x, weights, n_classes):
    norms, _ = _row_norms(x, n_classes)
    return float(np.sum(norms * weights))


def group_dual(x, weights, n_classes):
    norms, _ = _row_norms(x, n_classes)
    return float(np.max(norms / weights, initial=0.0))


def group_project(x, weights, tau, n_classes):
    # Project the row norms onto the l1 ball, then rescale each row (spgl1's _norm_l12_project,
    # without its 0/0 warnings).
    norms, rows = _row_norms(x, n_classes)
    target = oneprojector(norms, weights, tau)
    factor = np.divide(target, norms, out=np.zeros_like(norms), where=norms > 0)
    return (rows * factor[:, None]).ravel()


def penalty_functions(group, n_classes):
    """``(primal, dual, project)`` callables for spgl1 (``x`` is row-major ``vec(W)``)."""
    if group:
        return (
            partial(group_primal, n_classes=n_classes),
            partial(group_dual, n_classes=n_classes),
            partial(group_project, n_classes=n_classes),
        )
    return l1_primal, l1_dual, l1_project


def group_norms(W, group):
    """``(Omega(W), Omega*(W))`` of an (F, K) matrix: l1/l-inf, or sum/max of row l2 norms."""
    W = np.asarray(W, dtype=np.float64)
    if group:
        rows = np.sqrt(np.einsum("ij,ij->i", W, W))
        return float(rows.sum()), float(rows.max(initial=0.0))
    a = np.abs(W)
    return float(a.sum()), float(a.max(initial=0.0))



def row_duals(gradient, group):
    """Per-feature dual values of an (F, K) gradient: row l2 norms (group norm) or row max-abs (l1)."""
    if group:
        return np.sqrt(np.einsum("ij,ij->i", gradient, gradient))
    return np.abs(gradient).max(axis=1)
