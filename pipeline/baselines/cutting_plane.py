"""The convex cutting-plane two-layer network (method.md section 5; the paper's Algorithm 1).

For a scalar target ``y`` (n,) and pixel rows ``A`` (n, d) the penalised convex problem over all
unit-norm ReLU neurons,

    min_w 1/2 ||(A U + b)_+ w + c - y||^2 + beta ||w||_1,   ||u_j|| <= 1,

has the dual ``max_v v^T y - 1/2 ||v||^2  s.t. |v^T (A u + b)_+| <= beta for every neuron`` (and
``1^T v = 0`` with biases and a free output offset ``c``); at the optimum ``v`` is the residual. The
cutting-plane method keeps a finite neuron set: fit the l1 output layer on it (a LASSO), take its
residual ``r`` as the dual point, look for the neurons that violate ``|r^T (A u + b)_+| <= beta``, add
them and repeat; when none violates, the duality gap is zero and the finite network is optimal.

The paper's search for violators is the *spike-free relaxation* ``max / min r^T A u  s.t.  A u >= 0,
||u|| <= 1`` (:func:`neuron_search.spike_free_violator`), exact for spike-free data (whitened, n <= d).
For other data its violators are neurons active on every sample; with biases these are the linear part
of the network, which :class:`restricted_layer.RestrictedOutputLayer` instead carries as one exact term
``beta ||v||_2`` (``exact_linear``), so that the rounds are spent on the neurons that are active on part of
the rows, found by :func:`neuron_search.arrangement_ascent` from random starts. The gap reported is the gap
under what the searches found. Lemma 7's extreme-point neurons (method.md eq. 10) may seed the neuron set,
as the paper does.

Several classes: one network per class (one-hot target column), all sharing the seed neurons.
"""

import logging

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from features.extreme_points import ExtremePointFilters

from features.parameters import IMAGE_SHAPE, N_JOBS, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT

from .neuron_search import arrangement_ascent, spike_free_violator
from .restricted_layer import RestrictedOutputLayer, linear_neuron
from .two_layer import TwoLayerNetworkMixin, hidden_layer

logger = logging.getLogger(__name__)


class CuttingPlaneResult:
    """One scalar network of the cutting-plane method.

    Attributes: ``hidden`` (d, m), ``bias`` (m,), ``weights`` (m,), ``linear`` (d,) the linear part (zero
    without it), ``offset`` float, ``rounds`` int, ``objective`` float (primal), ``gap`` float (primal minus
    the dual value of the scaled residual), ``max_violation`` float (largest ``|r^T (A u + b)_+|`` found,
    ``<= beta`` at the end).
    """

    def __init__(self, layer, rounds, objective, gap, max_violation):
        self.hidden, self.bias, self.weights = layer.hidden, layer.bias, layer.weights
        self.linear, self.offset = layer.linear, layer.offset
        self.rounds, self.objective, self.gap, self.max_violation = rounds, objective, gap, max_violation


class NeuronSearch:
    """Settings of :func:`neuron_search.arrangement_ascent` for one cutting-plane run: ``n_starts`` and
    ``n_steps`` per sign and round, at most ``per_round`` new neurons per sign and round, ``rng``."""

    def __init__(self, n_starts, n_steps, per_round, rng):
        self.n_starts, self.n_steps, self.per_round, self.rng = n_starts, n_steps, per_round, rng

    def violators(self, rows, residual, bias):
        """Distinct neurons ``(value, u, b)`` with the largest ``residual^T (A u + b)_+``, best first."""
        values, hidden, biases = arrangement_ascent(rows, residual, bias, self.n_starts, self.n_steps, self.rng)
        kept = []
        for value, neuron, offset in zip(values, hidden.T, biases):
            if len(kept) == self.per_round:
                break
            if all(neuron @ other < 1 - 1e-9 or abs(offset - other_offset) > 1e-9
                   for _, other, other_offset in kept):
                kept.append((float(value), neuron, float(offset)))
        return kept


def cutting_plane(rows, targets, beta, seed_hidden, seed_bias, bias=True, max_rounds=50, tol=1e-3,
                  lasso_tol=1e-8, exact_linear=False, search=None):
    """Algorithm 1 for a scalar target (n,), starting from the neurons ``seed_hidden`` (d, m0) with
    biases ``seed_bias`` (m0,).

    Each round fits the restricted problem (:class:`RestrictedOutputLayer`, with the exact linear part
    when ``exact_linear``, which needs ``bias``), then looks for violators of the dual constraint: the
    spike-free relaxation's two neurons (without the exact linear part, which contains them) and the
    :class:`NeuronSearch`'s neurons (when ``search`` is given). Stops when none violates by more than
    ``tol * beta`` or after ``max_rounds`` rounds. Returns a :class:`CuttingPlaneResult`; its gap is the gap
    under the relaxation and the search (no neuron found beyond them is accounted for).
    """
    layer = RestrictedOutputLayer(rows, targets, bias, linear=exact_linear)
    layer.add(seed_hidden, seed_bias)
    for rounds in range(1, max_rounds + 1):
        layer.solve(beta, lasso_tol)
        found = _violators(rows, layer.residual, bias, exact_linear, search)
        found_violation = max([value for value, _, _ in found], default=0.0)
        violators = [(u, b) for value, u, b in found if value > beta * (1 + tol)]
        logger.debug(f"[cutting_plane] round {rounds}: {layer.hidden.shape[1]} neurons, "
                     f"{np.count_nonzero(layer.weights)} used, objective {layer.objective(beta):.6g}, "
                     f"largest violation found {found_violation / beta:.4f} beta")
        if not violators:
            break
        layer.add(np.column_stack([u for u, _ in violators]), np.array([b for _, b in violators]))
    max_violation = max(found_violation, layer.dual_violation())
    return CuttingPlaneResult(layer, rounds, layer.objective(beta), layer.duality_gap(beta, found_violation),
                              max_violation)


def _violators(rows, residual, bias, exact_linear, search):
    """Candidate neurons ``(value, u, b)`` for the dual point ``residual`` (n,), both signs."""
    found = []
    for sign in (1.0, -1.0):
        if not exact_linear:
            value, neuron, offset = spike_free_violator(rows, sign * residual, bias)
            found += [(value, neuron, offset)] if neuron is not None else []
        if search is not None:
            found += search.violators(rows, sign * residual, bias)
    return found


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
    exact_linear : bool, the neurons active on every row as one exact term ``beta ||v||_2`` (needs
        ``bias``) instead of cutting planes from the spike-free relaxation
    search_starts : int, random starts of the search for partly active neurons per class, sign and round
        (:func:`neuron_search.arrangement_ascent`; 0: the relaxation alone, the paper's Algorithm 1)
    search_steps : int, ascent steps per start
    neurons_per_round : int, most neurons the search adds per class, sign and round
    random_state : int, RandomState or None, the search's starts
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
        "max_rounds": [POSITIVE_INT], "tol": [NON_NEGATIVE], "exact_linear": ["boolean"],
        "search_starts": [NON_NEGATIVE_INT], "search_steps": [POSITIVE_INT], "neurons_per_round": [POSITIVE_INT],
        "random_state": ["random_state"], "n_jobs": N_JOBS, "image_shape": IMAGE_SHAPE,
    }

    def __init__(self, beta=0.01, relative=True, bias=True, seed_extreme_points=True, max_rounds=50,
                 tol=1e-3, exact_linear=True, search_starts=32, search_steps=20, neurons_per_round=4,
                 random_state=0, n_jobs=1, image_shape=None):
        self.beta = beta
        self.relative = relative
        self.bias = bias
        self.seed_extreme_points = seed_extreme_points
        self.max_rounds = max_rounds
        self.tol = tol
        self.exact_linear = exact_linear
        self.search_starts = search_starts
        self.search_steps = search_steps
        self.neurons_per_round = neurons_per_round
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.image_shape = image_shape

    def fit(self, X, y):
        """Fit on images ``X`` (N, ...) and labels ``y`` (N,)."""
        self._validate_params()
        if self.exact_linear and not self.bias:
            raise ValueError("CuttingPlaneNetwork(exact_linear=True) needs bias=True: without biases a neuron "
                             "active on every row is not a free linear function; set exact_linear=False")
        rows = self._pixel_rows(X, reset=True)
        targets = self._one_hot(y, len(rows))
        seed_hidden, seed_bias = self._seeds(rows)
        self.beta_ = self.beta * self._beta_max(rows, targets, seed_hidden, seed_bias) if self.relative else self.beta
        rng = check_random_state(self.random_state)
        search = (NeuronSearch(self.search_starts, self.search_steps, self.neurons_per_round, rng)
                  if self.search_starts else None)
        results = []
        for name, column in zip(self.classes_, targets.T):
            results.append(cutting_plane(rows, column, self.beta_, seed_hidden, seed_bias, self.bias,
                                         self.max_rounds, self.tol, exact_linear=self.exact_linear,
                                         search=search))
            logger.info(f"[cutting_plane] class {name}: {results[-1].rounds} rounds, "
                        f"{results[-1].hidden.shape[1] - len(seed_bias)} neurons added, "
                        f"{np.count_nonzero(results[-1].weights)} used, relative duality gap "
                        f"{results[-1].gap / results[-1].objective:.2e}")
        self._store_network(results, len(seed_bias), rows)
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

    def _store_network(self, results, n_seeds, rows):
        """Stack the seeds, every class's added neurons and its linear part (one neuron active on every
        row, :func:`linear_neuron`); drop neurons no class uses."""
        n_classes = len(results)
        offsets = np.array([result.offset for result in results])
        added = [result.hidden[:, n_seeds:] for result in results]
        added_bias = [result.bias[n_seeds:] for result in results]
        added_weights = [result.weights[n_seeds:] for result in results]
        for k, result in enumerate(results):
            if np.any(result.linear):
                neuron, bias, weight = linear_neuron(result.linear, rows)
                added[k] = np.column_stack([added[k], neuron])
                added_bias[k] = np.append(added_bias[k], bias)
                added_weights[k] = np.append(added_weights[k], weight)
                offsets[k] -= weight * bias
        hidden = np.column_stack([results[0].hidden[:, :n_seeds]] + added)
        hidden_bias = np.concatenate([results[0].bias[:n_seeds]] + added_bias)
        output = np.zeros((hidden.shape[1], n_classes))
        output[:n_seeds] = np.column_stack([result.weights[:n_seeds] for result in results])
        edges = n_seeds + np.cumsum([0] + [block.shape[1] for block in added])
        for k in range(n_classes):
            output[edges[k]:edges[k + 1], k] = added_weights[k]
        used = np.any(output != 0, axis=1)
        self.hidden_weights_, self.hidden_bias_ = hidden[:, used], hidden_bias[used]
        self.output_weights_ = output[used]
        self.output_bias_ = offsets
