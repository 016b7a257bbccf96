"""The cutting-plane method's violator searches: the best bias by one sort against brute force, and the
arrangement ascent's neurons against their definition."""

import numpy as np
import pytest

from pipeline.baselines.neuron_search import arrangement_ascent, best_bias, spike_free_violator


def test_best_bias_matches_a_brute_force_over_every_breakpoint():
    rng = np.random.default_rng(0)
    projections = rng.standard_normal((15, 6))
    residual = rng.standard_normal(15)
    residual -= residual.mean()
    values, biases = best_bias(projections, residual)
    for column in range(6):
        candidates = -projections[:, column]
        brute = [residual @ np.maximum(projections[:, column] + b, 0) for b in candidates
                 if np.any(projections[:, column] + b < 0)]  # leaving a row inactive
        assert values[column] == pytest.approx(max(brute), rel=1e-12)
        assert residual @ np.maximum(projections[:, column] + biases[column], 0) == pytest.approx(values[column])


@pytest.mark.parametrize("bias", [True, False])
def test_arrangement_ascent_returns_unit_neurons_with_the_values_they_attain(bias):
    rng = np.random.default_rng(1)
    rows = rng.random((80, 5))
    residual = np.sin(7 * rows[:, 0]) - np.cos(5 * rows[:, 1])
    residual -= residual.mean()
    values, hidden, biases = arrangement_ascent(rows, residual, bias, n_starts=10, n_steps=15,
                                                rng=np.random.default_rng(5))
    attained = residual @ np.maximum(rows @ hidden + biases, 0)
    np.testing.assert_allclose(values, attained, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(hidden, axis=0), 1.0)
    assert np.all(np.diff(values) <= 0)
    if not bias:
        assert not np.any(biases)
    else:  # partly active neurons that beat what the same starts give before any ascent step
        assert np.all(np.any(rows @ hidden + biases <= 0, axis=0))
        start_values, _, _ = arrangement_ascent(rows, residual, bias, 10, 1, np.random.default_rng(1))
        assert values[0] > start_values[0]


def test_the_relaxation_with_biases_is_the_linear_parts_dual_norm():
    rng = np.random.default_rng(2)
    rows = rng.random((20, 4))
    residual = rng.standard_normal(20)
    residual -= residual.mean()
    value, neuron, bias = spike_free_violator(rows, residual, bias=True)
    assert value == pytest.approx(np.linalg.norm((rows - rows.mean(0)).T @ residual))
    assert np.min(rows @ neuron + bias) == pytest.approx(0.0, abs=1e-12)
