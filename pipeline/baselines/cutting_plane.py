"""The convex cutting-plane two-layer network (method.md section 5; the paper's Algorithm 1).

For a scalar target ``y`` (n,) and pixel rows ``A`` (n, d) the penalised convex problem over all
unit-norm ReLU neurons,

    min_w 1/2 ||(A U + b)_+ w + c - y||^2 + beta ||w||_1,   ||u_j|| <= 1,

has the dual ``max_v v^T y - 1/2 ||v||^2  s.t. |v^T (A u + b)_+| <= beta for every neuron`` (and
``1^T v = 0`` with biases and a free output offset ``c``); at the optimum ``v`` is the residual. The
cutting-plane method keeps a finite neuron set: fit the l1 output layer on it (a LASSO), take its
residual ``r`` as the dual point, look for the neurons that violate ``|r^T (A u + b)_+| <= beta``, add
them and repeat; when none violates, the duality gap is zero and the finite network is optimal.

The search for violators is the *spike-free relaxation*: ``max / min r^T A u  s.t.  A u >= 0,
||u|| <= 1``, two small convex programs per round. By Lagrange duality each is a non-negative least
squares problem, ``max = min_{mu >= 0} ||A^T (r + mu)||`` with ``u = A^T (r + mu) / ||A^T (r + mu)||``
(:func:`spike_free_violator`). With biases the constraint ``A u + b >= 0`` only fixes ``b``, and since
``1^T r = 0`` the violator is ``u = +-A^T r / ||A^T r||`` in closed form. The relaxation is exact for
spike-free data (whitened, n <= d); for other data it finds the violators among neurons active on every
sample, and the gap reported is the gap under the relaxation. Lemma 7's extreme-point neurons
(method.md eq. 10) may seed the neuron set, as the paper does.

Several classes: one network per class (one-hot target column), all sharing the seed neurons.
"""

import logging
import warnings

import numpy as np
import scipy.optimize
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso

from features.extreme_points import ExtremePointFilters

from features.parameters import IMAGE_SHAPE, N_JOBS, NON_NEGATIVE, POSITIVE_INT

from .two_layer import TwoLayerNetworkMixin, hidden_layer

logger = logging.getLogger(__name__)


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


class CuttingPlaneResult:
    """One scalar network of the cutting-plane method.

    Attributes: ``hidden`` (d, m), ``bias`` (m,), ``weights`` (m,), ``offset`` float, ``rounds`` int,
    ``objective`` float (primal), ``gap`` float (primal minus the dual value of the scaled residual),
    ``max_violation`` float (largest ``|r^T (A u + b)_+|`` found, ``<= beta`` at the end).
    """

    def __init__(self, hidden, bias, weights, offset, rounds, objective, gap, max_violation):
        self.hidden, self.bias, self.weights, self.offset = hidden, bias, weights, offset
        self.rounds, self.objective, self.gap, self.max_violation = rounds, objective, gap, max_violation


def cutting_plane(rows, targets, beta, seed_hidden, seed_bias, bias=True, max_rounds=50, tol=1e-3,
                  lasso_tol=1e-8):
    """Algorithm 1 for a scalar target (n,), starting from the neurons ``seed_hidden`` (d, m0) with
    biases ``seed_bias`` (m0,); stops when no neuron violates the dual constraint by more than
    ``tol * beta`` or after ``max_rounds`` rounds. Returns a :class:`CuttingPlaneResult`."""
    layer = RestrictedOutputLayer(rows, targets, bias)
    layer.add(seed_hidden, seed_bias)
    for rounds in range(1, max_rounds + 1):
        layer.solve(beta, lasso_tol)
        found = [spike_free_violator(rows, sign * layer.residual, bias) for sign in (1.0, -1.0)]
        violators = [(u, b) for value, u, b in found if value > beta * (1 + tol)]
        if not violators:
            break
        layer.add(np.column_stack([u for u, _ in violators]), np.array([b for _, b in violators]))
    residual = layer.residual
    max_violation = max([value for value, _, _ in found] + list(np.abs(layer.centered.T @ residual)))
    objective = 0.5 * residual @ residual + beta * np.sum(np.abs(layer.weights))
    dual_point = residual * min(1.0, beta / max_violation) if max_violation > 0 else residual
    dual_value = dual_point @ targets - 0.5 * dual_point @ dual_point
    return CuttingPlaneResult(layer.hidden, layer.bias, layer.weights, layer.offset, rounds, float(objective),
                              float(objective - dual_value), float(max_violation))


class RestrictedOutputLayer:
    """The l1 output layer ``min_w 1/2 ||F w + c - y||^2 + beta ||w||_1`` over a growing neuron set.

    Keeps the neurons' features ``F`` (n, m) centred (with a free offset ``c``) and their Gram matrix,
    extended column by column as neurons are added, and solves by scikit-learn's coordinate descent
    (whose objective is this one divided by n) warm-started from the previous weights. A solve that stops
    short of ``tol`` is not an error: the duality gap that :func:`cutting_plane` reports measures it.

    Attributes: ``hidden`` (d, m), ``bias`` (m,), ``centered`` (n, m), ``weights`` (m,), ``offset``,
    ``residual`` (n,) ``y - F w - c``.
    """

    def __init__(self, rows, targets, intercept):
        self.rows, self.intercept = rows, intercept
        self.target_mean = float(np.mean(targets)) if intercept else 0.0
        self.centered_targets = targets - self.target_mean
        self.hidden, self.bias = np.zeros((rows.shape[1], 0)), np.zeros(0)
        self.centered, self.means, self.gram = np.zeros((len(rows), 0)), np.zeros(0), np.zeros((0, 0))
        self.weights = np.zeros(0)
        self.offset, self.residual = self.target_mean, self.centered_targets

    def add(self, hidden, bias):
        """Add neurons ``hidden`` (d, k) with biases (k,) at zero weight."""
        features = hidden_layer(self.rows, hidden, bias)
        means = features.mean(axis=0) if self.intercept else np.zeros(features.shape[1])
        features -= means
        cross = self.centered.T @ features
        self.gram = np.block([[self.gram, cross], [cross.T, features.T @ features]])
        self.centered = np.column_stack([self.centered, features])
        self.hidden, self.bias = np.column_stack([self.hidden, hidden]), np.concatenate([self.bias, bias])
        self.means = np.concatenate([self.means, means])
        self.weights = np.concatenate([self.weights, np.zeros(features.shape[1])])

    def solve(self, beta, tol):
        """Re-fit the weights for penalty ``beta``; updates ``weights``, ``offset`` and ``residual``."""
        if not len(self.weights):
            return
        lasso = Lasso(alpha=beta / len(self.rows), fit_intercept=False, precompute=self.gram, tol=tol,
                      max_iter=20_000, warm_start=True)
        lasso.coef_ = self.weights
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lasso.fit(self.centered, self.centered_targets)
        self.weights = lasso.coef_.copy()
        self.offset = self.target_mean - float(self.means @ self.weights)
        self.residual = self.centered_targets - self.centered @ self.weights


class CuttingPlaneNetwork(TwoLayerNetworkMixin, BaseEstimator):
    """Two-layer ReLU network trained by the convex cutting-plane method, one network per class.

    Parameters
    ----------
    beta : float >= 0, l1 penalty of the output weights; a fraction of ``beta_max`` (the largest dual
        violation of the zero network over all classes) when ``relative``
    relative : bool
    bias : bool, neurons with biases and a free output offset (the paper's bias version, ``1^T v = 0``)
    seed_extreme_points : bool, start from Lemma 7's extreme-point neurons of the training rows
    max_rounds : int, cutting-plane rounds per class
    tol : float, relative violation ``|r^T (A u + b)_+| / beta - 1`` accepted as no violation
    n_jobs : int, workers of the extreme-point solver
    image_shape : None, (H, W) or (H, W, C), for flattened images

    Attributes
    ----------
    hidden_weights_ (d, m), hidden_bias_ (m,), output_weights_ (m, K), output_bias_ (K,): the network, its
    neurons the seeds followed by each class's added neurons, those without weight dropped
    beta_ : float, the absolute penalty; objective_ : float, the sum of the classes' primal objectives
    duality_gap_ : float, the sum of the classes' gaps (under the spike-free relaxation)
    rounds_ : (K,) int, rounds per class; n_seeds_ : int, seed neurons; classes_ : (K,) labels
    """

    _parameter_constraints = {
        "beta": [NON_NEGATIVE], "relative": ["boolean"], "bias": ["boolean"], "seed_extreme_points": ["boolean"],
        "max_rounds": [POSITIVE_INT], "tol": [NON_NEGATIVE], "n_jobs": N_JOBS, "image_shape": IMAGE_SHAPE,
    }

    def __init__(self, beta=0.01, relative=True, bias=True, seed_extreme_points=True, max_rounds=50,
                 tol=1e-3, n_jobs=1, image_shape=None):
        self.beta = beta
        self.relative = relative
        self.bias = bias
        self.seed_extreme_points = seed_extreme_points
        self.max_rounds = max_rounds
        self.tol = tol
        self.n_jobs = n_jobs
        self.image_shape = image_shape

    def fit(self, X, y):
        """Fit on images ``X`` (N, ...) and labels ``y`` (N,)."""
        self._validate_params()
        rows = self._pixel_rows(X, reset=True)
        targets = self._one_hot(y, len(rows))
        seed_hidden, seed_bias = self._seeds(rows)
        self.beta_ = self.beta * self._beta_max(rows, targets, seed_hidden, seed_bias) if self.relative else self.beta
        results = []
        for name, column in zip(self.classes_, targets.T):
            results.append(cutting_plane(rows, column, self.beta_, seed_hidden, seed_bias, self.bias,
                                         self.max_rounds, self.tol))
            logger.info(f"[cutting_plane] class {name}: {results[-1].rounds} rounds, "
                        f"{results[-1].hidden.shape[1] - len(seed_bias)} neurons added, "
                        f"{np.count_nonzero(results[-1].weights)} used, relative duality gap "
                        f"{results[-1].gap / results[-1].objective:.2e}")
        self._store_network(results, len(seed_bias))
        self.objective_ = float(sum(result.objective for result in results))
        self.duality_gap_ = float(sum(result.gap for result in results))
        self.rounds_ = np.array([result.rounds for result in results])
        self.n_seeds_ = len(seed_bias)
        return self

    def _seeds(self, rows):
        """Seed neurons (d, m0) and biases (m0,): extreme points of the rows, or none."""
        if not self.seed_extreme_points:
            return np.zeros((rows.shape[1], 0)), np.zeros(0)
        extreme_points = ExtremePointFilters(use_bias=self.bias, n_jobs=self.n_jobs).fit(rows)
        return extreme_points.filters_.T, extreme_points.bias_

    def _beta_max(self, rows, targets, seed_hidden, seed_bias):
        """The largest dual violation of the zero network: ``max_k max_u |r_k^T (A u + b)_+|``."""
        residuals = targets - targets.mean(axis=0) if self.bias else targets
        seeds = np.abs(hidden_layer(rows, seed_hidden, seed_bias).T @ residuals)
        relaxed = [spike_free_violator(rows, sign * residual, self.bias)[0]
                   for residual in residuals.T for sign in (1.0, -1.0)]
        return max([float(seeds.max(initial=0.0))] + relaxed)

    def _store_network(self, results, n_seeds):
        """Stack the seeds and every class's added neurons; drop neurons no class uses."""
        n_classes = len(results)
        added = [result.hidden[:, n_seeds:] for result in results]
        hidden = np.column_stack([results[0].hidden[:, :n_seeds]] + added)
        hidden_bias = np.concatenate([results[0].bias[:n_seeds]] + [result.bias[n_seeds:] for result in results])
        output = np.zeros((hidden.shape[1], n_classes))
        output[:n_seeds] = np.column_stack([result.weights[:n_seeds] for result in results])
        edges = n_seeds + np.cumsum([0] + [block.shape[1] for block in added])
        for k, result in enumerate(results):
            output[edges[k]:edges[k + 1], k] = result.weights[n_seeds:]
        used = np.any(output != 0, axis=1)
        self.hidden_weights_, self.hidden_bias_ = hidden[:, used], hidden_bias[used]
        self.output_weights_ = output[used]
        self.output_bias_ = np.array([result.offset for result in results])
