"""The cutting-plane method's restricted problem with the exact linear part, against generic solvers and
against the cutting planes it replaces."""

import numpy as np
import pytest
import scipy.optimize

from pipeline.baselines.cutting_plane import NeuronSearch, cutting_plane
from pipeline.baselines.restricted_layer import LinearPart, RestrictedOutputLayer, linear_neuron
from pipeline.baselines.two_layer import hidden_layer


def biased_problem(n_samples=60, n_pixels=4, seed=0):
    """Rows (n, d) in [0, 1] and a nonlinear scalar target (n,)."""
    rng = np.random.default_rng(seed)
    rows = rng.random((n_samples, n_pixels))
    target = np.maximum(rows[:, 0] - 0.4, 0) - 2 * np.maximum(0.6 - rows[:, 1], 0) + 0.3 * rows[:, -1]
    return rows, target + 0.05 * rng.standard_normal(n_samples)


def test_linear_part_meets_the_group_optimality_condition_and_a_generic_solver():
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((40, 6))
    rows[:, 5] = rows[:, 4]  # a singular Gram matrix
    target = rng.standard_normal(40)
    beta = 0.3 * np.linalg.norm(rows.T @ target)
    linear = LinearPart(rows).solve(target, beta)
    stationarity = rows.T @ (rows @ linear - target) + beta * linear / np.linalg.norm(linear)
    assert np.linalg.norm(stationarity) <= 1e-9 * beta
    objective = lambda v: 0.5 * np.sum((rows @ v - target) ** 2) + beta * np.linalg.norm(v)
    generic = scipy.optimize.minimize(objective, np.ones(6), method="BFGS", options={"gtol": 1e-10})
    assert objective(linear) <= generic.fun * (1 + 1e-10)
    assert not np.any(LinearPart(rows).solve(target, 1.01 * np.linalg.norm(rows.T @ target)))


def test_restricted_layer_with_the_linear_part_reaches_a_generic_solvers_optimum():
    """Against L-BFGS-B on the split form ``w = w+ - w-`` (the minimiser's ``v`` is not zero, so the
    group term is smooth there)."""
    rows, target = biased_problem()
    rng = np.random.default_rng(2)
    hidden, bias = rng.standard_normal((4, 12)), rng.standard_normal(12) * 0.5
    layer = RestrictedOutputLayer(rows, target, intercept=True, linear=True)
    layer.add(hidden, bias)
    beta = 0.5
    layer.solve(beta, tol=1e-12)
    assert np.any(layer.linear) and np.any(layer.weights)
    assert layer.duality_gap(beta) <= 1e-10 * layer.objective(beta)

    features = hidden_layer(rows, hidden, bias)
    features, centered_rows, centered_target = (features - features.mean(0), rows - rows.mean(0),
                                                target - target.mean())

    def objective(z):
        weights, linear = z[:12] - z[12:24], z[24:]
        residual = features @ weights + centered_rows @ linear - centered_target
        norm = np.linalg.norm(linear)
        value = 0.5 * residual @ residual + beta * (np.sum(z[:24]) + norm)
        gradient = np.concatenate([features.T @ residual + beta, -features.T @ residual + beta,
                                   centered_rows.T @ residual + beta * linear / norm])
        return value, gradient

    start = np.concatenate([np.zeros(24), np.full(4, 0.1)])
    generic = scipy.optimize.minimize(objective, start, jac=True, method="L-BFGS-B",
                                      bounds=[(0, None)] * 24 + [(None, None)] * 4,
                                      options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000})
    assert layer.objective(beta) == pytest.approx(generic.fun, rel=1e-8)
    assert layer.objective(beta) <= generic.fun * (1 + 1e-12)


def test_exact_linear_part_matches_the_cutting_planes_it_replaces():
    """With no other neurons, cutting planes from the spike-free relaxation (linear neurons, one pair a
    round) reach, to within their own gap, the group term's optimum
    ``min 1/2 ||A_c v - y_c||^2 + beta ||v||_2``."""
    rows, target = biased_problem(n_samples=50, n_pixels=2)
    no_seeds = np.zeros((2, 0)), np.zeros(0)
    beta = 0.2 * np.linalg.norm((rows - rows.mean(0)).T @ (target - target.mean()))
    planes = cutting_plane(rows, target, beta, *no_seeds, max_rounds=300, tol=1e-10, lasso_tol=1e-14)
    exact = cutting_plane(rows, target, beta, *no_seeds, tol=1e-10, lasso_tol=1e-14, exact_linear=True)
    assert exact.rounds == 1 and not len(exact.weights) and np.any(exact.linear)
    assert planes.rounds > 5 and planes.hidden.shape[1] > 5  # many linear neurons for one exact term
    assert exact.gap <= 1e-10 * exact.objective
    # the planes stop when no linear neuron violates, with the LASSO over their nearly collinear neurons
    # short of its optimum: its own certificate bounds the distance (here 2.6e-6 relative)
    assert planes.gap <= 1e-5 * planes.objective
    assert exact.objective * (1 - 1e-12) <= planes.objective <= exact.objective + planes.gap


def test_with_biases_in_one_dimension_the_search_reaches_the_enumerated_optimum():
    """For d = 1 every neuron is ``(+-a + b)_+`` and the dual constraint is piecewise linear in b, so the
    problem over all neurons is the finite LASSO over the 2n breakpoint neurons plus the linear term,
    solved here by L-BFGS-B on its split form; the search (exact in one dimension) reaches its optimum."""
    rng = np.random.default_rng(3)
    rows = rng.random((25, 1))
    target = np.sin(6 * rows[:, 0]) + 0.1 * rng.standard_normal(25)
    beta = 0.05
    search = NeuronSearch(n_starts=8, n_steps=5, per_round=2, rng=np.random.default_rng(0))
    result = cutting_plane(rows, target, beta, np.zeros((1, 0)), np.zeros(0), max_rounds=100, tol=1e-9,
                           lasso_tol=1e-14, exact_linear=True, search=search)

    points = rows[:, 0]
    neurons = np.hstack([np.maximum(points[:, None] - points[None, :], 0),
                         np.maximum(points[None, :] - points[:, None], 0), points[:, None]])
    neurons -= neurons.mean(0)
    centered = target - target.mean()
    m = neurons.shape[1]

    def objective(z):
        residual = neurons @ (z[:m] - z[m:]) - centered
        return 0.5 * residual @ residual + beta * np.sum(z), np.concatenate(
            [neurons.T @ residual + beta, -neurons.T @ residual + beta])

    generic = scipy.optimize.minimize(objective, np.zeros(2 * m), jac=True, method="L-BFGS-B",
                                      bounds=[(0, None)] * (2 * m),
                                      options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 50_000})
    assert result.gap <= 1e-6 * result.objective
    assert result.objective == pytest.approx(generic.fun, rel=1e-6)
    assert result.objective >= generic.fun * (1 - 1e-9)  # the enumerated problem is the true minimum


def test_linear_neuron_is_active_on_every_image_and_reproduces_the_linear_part():
    rng = np.random.default_rng(4)
    rows, linear = rng.random((30, 5)), rng.standard_normal(5)
    neuron, bias, weight = linear_neuron(linear, rows)
    box = rng.integers(0, 2, (200, 5)).astype(float)  # corners of the pixel box [0, 1]^d
    for images in (rows, box):
        np.testing.assert_allclose(weight * hidden_layer(images, neuron[:, None], np.array([bias]))[:, 0]
                                   - weight * bias, images @ linear, atol=1e-12)
