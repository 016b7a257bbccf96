"""The cutting-plane method's restricted problem: the l1 output layer over a finite neuron set, and the
exact term for the neurons that are active on every row.

With biases, a neuron ``(A u + b)_+`` that is active on every row is the linear function ``A u + b``,
and a weighted sum of such neurons with ``||u_j|| = 1`` is ``A v + const`` with
``sum_j |w_j| >= ||v||_2`` (equality when all ``u_j`` point the same way). So the linear part of the
network is one group, penalised by ``beta ||v||_2`` (:class:`LinearPart`), and the restricted problem is

    min_{w, v} 1/2 ||F w + A_c v - y_c||^2 + beta ||w||_1 + beta ||v||_2

with ``F`` the (centred) features of the neurons found so far and ``A_c`` the centred pixel rows; its dual
point is the residual, and the linear part's dual constraint ``||A_c^T r||_2 <= beta`` is exactly the
spike-free relaxation's bound for biased neurons, so no cutting plane is spent on linear neurons.
"""

import warnings

import numpy as np
import scipy.linalg
import scipy.optimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso

from .two_layer import hidden_layer


class LinearPart:
    """``min_v 1/2 ||A_c v - t||^2 + beta ||v||_2`` in closed form up to one scalar root.

    The minimiser is ``v = (G + lam I)^{-1} A_c^T t`` with ``G = A_c^T A_c`` and ``lam = beta / ||v||``,
    so ``lam`` is the root of ``lam ||(G + lam I)^{-1} A_c^T t|| = beta`` (increasing in ``lam``), found
    in the eigenbasis of ``G``; ``v = 0`` when ``||A_c^T t|| <= beta``.

    Parameters: ``centered_rows`` (n, d), the pixel rows minus their column means.
    """

    def __init__(self, centered_rows):
        self.rows, self.gram = centered_rows, centered_rows.T @ centered_rows
        eigenvalues, self.basis = np.linalg.eigh(self.gram)
        self.eigenvalues = np.maximum(eigenvalues, 0.0)
        self.null_space = self.eigenvalues <= 1e-12 * max(float(self.eigenvalues[-1]), np.finfo(float).tiny)

    def solve(self, target, beta):
        """The minimiser ``v`` (d,) for the target ``t`` (n,) and penalty ``beta`` > 0."""
        gradient = self.basis.T @ (self.rows.T @ target)
        gradient[self.null_space] = 0.0  # zero but for rounding: A_c^T t lies in the range of G
        if np.linalg.norm(gradient) <= beta:
            return np.zeros(self.rows.shape[1])
        shrunk_norm = lambda log_lam: np.linalg.norm(gradient / (self.eigenvalues * np.exp(-log_lam) + 1.0))
        low, high = np.log(beta) - 1.0, np.log(beta) + 1.0
        while shrunk_norm(low) > beta:
            low -= 4.0
        while shrunk_norm(high) < beta:
            high += 4.0
        log_lam = scipy.optimize.brentq(lambda x: shrunk_norm(x) - beta, low, high, xtol=1e-14, rtol=1e-14)
        return self.basis @ (gradient / (self.eigenvalues + np.exp(log_lam)))


class RestrictedOutputLayer:
    """The l1 output layer ``min_w 1/2 ||F w + A_c v + c - y||^2 + beta (||w||_1 + ||v||_2)`` over a
    growing neuron set, with the linear part ``v`` when ``linear`` (else ``v = 0``).

    Keeps the neurons' features ``F`` (n, m) centred (with a free offset ``c``), their Gram matrix and
    (with the linear part) their cross products ``A_c^T F``, extended column by column as neurons are
    added. The weights are fitted by scikit-learn's coordinate descent (whose objective is this one
    divided by n) warm-started from the previous weights. With the linear part, each sweep alternates that
    fit with :class:`LinearPart`'s exact minimisation and then takes one Newton step on ``(w_S, v)`` jointly
    (:meth:`_joint_newton_step`: block minimisation alone zig-zags, since neurons active on most rows are
    nearly linear), until the duality gap is below ``tol ||y_c||^2`` (scikit-learn's criterion). A solve
    that stops short is not an error: the duality gap that the cutting-plane method reports measures it.

    Attributes: ``hidden`` (d, m), ``bias`` (m,), ``centered`` (n, m), ``weights`` (m,), ``linear`` (d,),
    ``offset``, ``residual`` (n,) ``y - F w - A v - c``.
    """

    def __init__(self, rows, targets, intercept, linear=False, max_sweeps=500):
        self.rows, self.intercept, self.max_sweeps = rows, intercept, max_sweeps
        self.target_mean = float(np.mean(targets)) if intercept else 0.0
        self.centered_targets = targets - self.target_mean
        self.hidden, self.bias = np.zeros((rows.shape[1], 0)), np.zeros(0)
        self.centered, self.means, self.gram = np.zeros((len(rows), 0)), np.zeros(0), np.zeros((0, 0))
        self.weights, self.linear = np.zeros(0), np.zeros(rows.shape[1])
        self.row_means = rows.mean(axis=0) if intercept else np.zeros(rows.shape[1])
        self.linear_part = LinearPart(rows - self.row_means) if linear else None
        self.cross = np.zeros((rows.shape[1], 0))
        self.offset, self.residual = self.target_mean, self.centered_targets

    def add(self, hidden, bias):
        """Add neurons ``hidden`` (d, k) with biases (k,) at zero weight."""
        features = hidden_layer(self.rows, hidden, bias)
        means = features.mean(axis=0) if self.intercept else np.zeros(features.shape[1])
        features -= means
        cross = self.centered.T @ features
        self.gram = np.block([[self.gram, cross], [cross.T, features.T @ features]])
        self.centered = np.column_stack([self.centered, features])
        if self.linear_part is not None:
            self.cross = np.column_stack([self.cross, self.linear_part.rows.T @ features])
        self.hidden, self.bias = np.column_stack([self.hidden, hidden]), np.concatenate([self.bias, bias])
        self.means = np.concatenate([self.means, means])
        self.weights = np.concatenate([self.weights, np.zeros(features.shape[1])])

    def solve(self, beta, tol):
        """Re-fit for penalty ``beta``; updates ``weights``, ``linear``, ``offset`` and ``residual``."""
        if self.linear_part is None:
            self._fit_weights(self.centered_targets, beta, tol)
        else:
            stop = tol * float(self.centered_targets @ self.centered_targets)
            for _ in range(self.max_sweeps):
                self._fit_weights(self.centered_targets - self._linear_output(), beta, tol)
                self.linear = self.linear_part.solve(self.centered_targets - self.centered @ self.weights, beta)
                self._update_residual()
                if self.duality_gap(beta) <= stop:
                    break
                if np.any(self.linear) and np.any(self.weights):
                    self._joint_newton_step(beta)
        self._update_residual()
        self.offset = self.target_mean - float(self.means @ self.weights) - float(self.row_means @ self.linear)

    def dual_violation(self):
        """The largest dual constraint value over the set, ``max(||F^T r||_inf, ||A_c^T r||_2)``."""
        violation = float(np.max(np.abs(self.centered.T @ self.residual), initial=0.0))
        if self.linear_part is not None:
            violation = max(violation, float(np.linalg.norm(self.linear_part.rows.T @ self.residual)))
        return violation

    def duality_gap(self, beta, other_violation=0.0):
        """Primal minus dual objective of the current point, the residual scaled into the dual set
        ``max(dual_violation(), other_violation) <= beta`` (``other_violation``: the largest
        ``|r^T (A u + b)_+|`` of neurons outside the set, when known)."""
        violation = max(self.dual_violation(), other_violation)
        scale = min(1.0, beta / violation) if violation > 0 else 1.0
        dual = scale * (self.residual @ self.centered_targets) - 0.5 * scale ** 2 * (self.residual @ self.residual)
        return self.objective(beta) - float(dual)

    def objective(self, beta):
        """``1/2 ||r||^2 + beta (||w||_1 + ||v||_2)`` at the current point."""
        return penalised_objective(self.residual, self.weights, self.linear, beta)

    def _joint_newton_step(self, beta):
        """One Newton step on the smooth problem in ``(w_S, v)`` that holds on the support ``S`` and signs
        of ``w`` (``v != 0``), cut where a weight first reaches zero and backtracked on the objective;
        no step is taken if none lowers it."""
        support = np.flatnonzero(self.weights)
        norm = np.linalg.norm(self.linear)
        unit = self.linear / norm
        features, rows = self.centered[:, support], self.linear_part.rows
        gradient = np.concatenate([beta * np.sign(self.weights[support]) - features.T @ self.residual,
                                   beta * unit - rows.T @ self.residual])
        curvature = beta / norm * (np.eye(len(unit)) - np.outer(unit, unit))
        hessian = np.block([[self.gram[np.ix_(support, support)], self.cross[:, support].T],
                            [self.cross[:, support], self.linear_part.gram + curvature]])
        try:  # positive definite but for features that are collinear on the rows
            step = -scipy.linalg.cho_solve(scipy.linalg.cho_factor(hessian), gradient)
        except np.linalg.LinAlgError:
            step = -np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        weight_step, linear_step = step[:len(support)], step[len(support):]
        crossing = self.weights[support] * weight_step < 0
        length = min(1.0, float(np.min(-self.weights[support][crossing] / weight_step[crossing], initial=1.0)))
        output_step = features @ weight_step + rows @ linear_step
        before = self.objective(beta)
        for _ in range(30):
            weights = self.weights.copy()
            weights[support] += length * weight_step
            weights[support[np.sign(weights[support]) != np.sign(self.weights[support])]] = 0.0
            linear = self.linear + length * linear_step
            residual = self.residual - length * output_step
            if penalised_objective(residual, weights, linear, beta) < before:
                self.weights, self.linear = weights, linear
                self._update_residual()
                return
            length /= 2

    def _update_residual(self):
        self.residual = self.centered_targets - self.centered @ self.weights - self._linear_output()

    def _linear_output(self):
        return self.linear_part.rows @ self.linear if self.linear_part is not None else 0.0

    def _fit_weights(self, target, beta, tol):
        if not len(self.weights):
            return
        lasso = Lasso(alpha=beta / len(self.rows), fit_intercept=False, precompute=self.gram, tol=tol,
                      max_iter=20_000, warm_start=True)
        lasso.coef_ = self.weights
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lasso.fit(self.centered, target)
        self.weights = lasso.coef_.copy()


def penalised_objective(residual, weights, linear, beta):
    """``1/2 ||r||^2 + beta (||w||_1 + ||v||_2)`` for the residual (n,), weights (m,) and linear part (d,)."""
    return float(0.5 * residual @ residual + beta * (np.sum(np.abs(weights)) + np.linalg.norm(linear)))


def linear_neuron(linear, rows):
    """The linear part ``v`` (d,) as one ReLU neuron active on every row of ``rows`` (n, d) and on every
    image of the pixel box ``[0, 1]^d``: ``(u, b, ||v||)`` with ``u = v / ||v||`` and
    ``A v = ||v|| (A u + b) - ||v|| b`` (the constant goes to the output offset)."""
    norm = float(np.linalg.norm(linear))
    neuron = linear / norm
    bias = max(-float(np.min(rows @ neuron)), float(np.sum(np.maximum(-neuron, 0.0))))
    return neuron, bias, norm
