"""The other models of the paper's Table 1: least squares, backprop, the cutting-plane network and the
closed form for whitened data, checked against each other and against generic solvers."""

import numpy as np
import pytest
import scipy.optimize
from sklearn.datasets import load_digits
from sklearn.linear_model import LinearRegression
from sklearn.utils.estimator_checks import check_estimator

from pipeline.baselines.backprop import BackpropNetwork
from pipeline.baselines.closed_form import ClosedFormNetwork, SampleWhitener, scalar_closed_form
from pipeline.baselines.cutting_plane import CuttingPlaneNetwork, cutting_plane, spike_free_violator
from pipeline.baselines.least_squares import LeastSquaresClassifier
from pipeline import load_model, save_model
from pipeline.baselines.two_layer import network_objective


@pytest.fixture(scope="module")
def digits_small():
    """300 of scikit-learn's digits as (300, 8, 8) float images in [0, 1] and their labels."""
    digits = load_digits()
    return digits.images[:300] / 16.0, digits.target[:300]


def whitened_problem(n_samples=12, n_pixels=30, n_classes=3, seed=0):
    """Rows (n, d) with A A^T = I (spike-free: n <= d), labels (n,) with every class present."""
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n_samples, n_pixels))
    labels = np.arange(n_samples) % n_classes
    return SampleWhitener(rows).transform(rows), labels


def one_hot(labels):
    return np.eye(labels.max() + 1)[labels]


def generic_two_layer_minimum(rows, targets, beta, n_neurons=20, n_starts=8, seed=0):
    """Smallest weight-decay objective ``1/2 ||(A U)_+ W - Y||^2 + beta/2 (||U||^2 + ||W||^2)`` (no biases)
    that scipy's L-BFGS finds from ``n_starts`` random starts: a generic solver of the problem that the
    closed form solves exactly (its minimum equals that of method.md eq. 16)."""
    n_pixels, n_outputs = rows.shape[1], targets.shape[1]
    split = n_pixels * n_neurons

    def objective_and_gradient(theta):
        hidden, output = theta[:split].reshape(n_pixels, n_neurons), theta[split:].reshape(n_neurons, n_outputs)
        pre = rows @ hidden
        active = np.maximum(pre, 0.0)
        residual = active @ output - targets
        value = 0.5 * np.sum(residual ** 2) + 0.5 * beta * (np.sum(hidden ** 2) + np.sum(output ** 2))
        grad_output = active.T @ residual + beta * output
        grad_hidden = rows.T @ ((residual @ output.T) * (pre > 0)) + beta * hidden
        return value, np.concatenate([grad_hidden.ravel(), grad_output.ravel()])

    rng = np.random.default_rng(seed)
    results = [scipy.optimize.minimize(objective_and_gradient, 0.3 * rng.standard_normal(split + n_neurons * n_outputs),
                                       jac=True, method="L-BFGS-B", options={"maxiter": 20000, "gtol": 1e-12,
                                                                             "ftol": 1e-15})
               for _ in range(n_starts)]
    return min(result.fun for result in results)


# --- closed form -----------------------------------------------------------------------------------

def test_sample_whitener_makes_the_rows_orthonormal_and_refuses_too_many_samples():
    rows, _ = whitened_problem()
    np.testing.assert_allclose(rows @ rows.T, np.eye(len(rows)), atol=1e-12)
    with pytest.raises(ValueError, match="n <= d"):
        SampleWhitener(np.ones((5, 3)))
    with pytest.raises(ValueError, match="span only 1 dimensions"):
        SampleWhitener(np.ones((2, 3)))


@pytest.mark.parametrize("beta", [0.3, 1.0, 1.9])
def test_closed_form_one_hot_matches_a_generic_solver(beta):
    """Theorem 15: the closed form's objective is the generic solver's best (8 L-BFGS starts), within
    1e-6 relative (L-BFGS at gtol 1e-12 on a piecewise-smooth objective), and never worse."""
    rows, labels = whitened_problem()
    model = ClosedFormNetwork(beta=beta).fit(rows, labels)
    generic = generic_two_layer_minimum(rows, one_hot(labels), beta)
    assert model.objective_ <= generic * (1 + 1e-9)
    assert model.objective_ == pytest.approx(generic, rel=1e-6)
    # with sqrt(n_k) = 2 per class, beta = 1.9 keeps all three neurons with weight 0.1
    assert model.n_neurons_ == 3


def test_closed_form_drops_the_classes_whose_norm_is_below_beta():
    rows, labels = whitened_problem()
    model = ClosedFormNetwork(beta=2.5).fit(rows, labels)  # beta > sqrt(n_k) = 2 for every class
    assert model.n_neurons_ == 0
    assert model.objective_ == pytest.approx(0.5 * len(labels))


def test_closed_form_scalar_matches_a_generic_solver():
    """Theorem 9 for a signed scalar target."""
    rows, _ = whitened_problem(n_samples=10, n_pixels=16)
    target = np.random.default_rng(1).standard_normal(10)
    neurons, weights = scalar_closed_form(rows, target, 0.5)
    value = network_objective(rows, target[:, None], 0.5, neurons, np.zeros(2), weights[:, None], np.zeros(1))
    generic = generic_two_layer_minimum(rows, target[:, None], 0.5)
    assert value <= generic * (1 + 1e-9)
    assert value == pytest.approx(generic, rel=1e-6)


def test_closed_form_is_no_worse_than_backprop_on_whitened_data():
    rows, labels = whitened_problem()
    closed = ClosedFormNetwork(beta=1.0).fit(rows, labels)
    trained = BackpropNetwork(n_hidden=20, bias=False, beta=1.0, epochs=300, batch_size=12, learning_rate=1e-2,
                              random_state=0).fit(rows, labels)
    assert closed.objective_ <= trained.objective_
    assert trained.objective_ == pytest.approx(closed.objective_, rel=1e-2)  # backprop gets close


def test_closed_form_network_applies_the_whitening_to_new_images():
    rng = np.random.default_rng(3)
    images = rng.random((20, 8, 8))
    labels = np.arange(20) % 4
    model = ClosedFormNetwork(beta=0.5).fit(images, labels)
    whitened = SampleWhitener(images.reshape(20, -1)).transform(images.reshape(20, -1))
    # on the training images each class neuron fires exactly on its class: (A u_k)_+ = y_k / sqrt(n_k)
    np.testing.assert_allclose(model.class_scores(images), one_hot(labels) * (1 - 0.5 / np.sqrt(5)), atol=1e-9)
    assert np.allclose(whitened @ whitened.T, np.eye(20))
    assert model.score(images, labels) == 1.0


# --- cutting plane ---------------------------------------------------------------------------------

def test_spike_free_violator_matches_a_generic_constrained_solver():
    """max r^T A u s.t. A u >= 0, ||u|| <= 1 by NNLS duality, against scipy's SLSQP on the primal."""
    rng = np.random.default_rng(2)
    rows = rng.random((8, 5))
    residual = rng.standard_normal(8)
    value, neuron, _ = spike_free_violator(rows, residual, bias=False)
    generic = scipy.optimize.minimize(
        lambda u: -(residual @ rows @ u), np.full(5, 0.1), method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda u: rows @ u}, {"type": "ineq", "fun": lambda u: 1 - u @ u}],
        options={"ftol": 1e-14, "maxiter": 1000})
    assert value == pytest.approx(-generic.fun, rel=1e-6)
    assert np.linalg.norm(neuron) == pytest.approx(1.0)
    assert np.min(rows @ neuron) >= -1e-12
    assert residual @ rows @ neuron == pytest.approx(value)


def test_cutting_plane_reaches_zero_gap_on_spike_free_data_and_matches_the_closed_form():
    rows, labels = whitened_problem()
    targets = one_hot(labels)
    network = CuttingPlaneNetwork(beta=0.7, relative=False, bias=False, seed_extreme_points=False, tol=1e-9,
                                  exact_linear=False, search_starts=0).fit(rows, labels)
    closed = ClosedFormNetwork(beta=0.7).fit(rows, labels)
    assert network.duality_gap_ <= 1e-9 * network.objective_
    assert network.objective_ == pytest.approx(closed.objective_, rel=1e-9)
    assert network_objective(rows, targets, 0.7, *network.network_) == pytest.approx(closed.objective_, rel=1e-9)
    assert list(network.rounds_) == [2, 2, 2]  # one round adds the class neuron, the next certifies it
    np.testing.assert_allclose(network.class_scores(rows), closed.class_scores(rows), atol=1e-9)


def test_cutting_plane_on_a_signed_scalar_target_finds_theorem_9():
    rows, _ = whitened_problem(n_samples=10, n_pixels=16)
    target = np.random.default_rng(1).standard_normal(10)
    result = cutting_plane(rows, target, 0.5, np.zeros((16, 0)), np.zeros(0), bias=False, tol=1e-9,
                           lasso_tol=1e-12)
    neurons, weights = scalar_closed_form(rows, target, 0.5)
    closed = network_objective(rows, target[:, None], 0.5, neurons, np.zeros(2), weights[:, None], np.zeros(1))
    assert result.gap <= 1e-9 * result.objective
    assert result.objective == pytest.approx(closed, rel=1e-9)
    assert result.max_violation <= 0.5 * (1 + 1e-9)


def test_cutting_plane_with_seeds_and_biases_fits_digits_and_reports_its_gap(digits_small):
    images, labels = digits_small
    network = CuttingPlaneNetwork(beta=0.01, max_rounds=10).fit(images, labels)
    assert network.n_seeds_ > 0 and network.n_neurons_ > 0
    assert np.all(network.rounds_ >= 1) and np.all(network.rounds_ <= 10)
    assert 0 <= network.duality_gap_ < network.objective_
    assert network.score(images, labels) > 0.95


# --- backprop and least squares --------------------------------------------------------------------

def test_backprop_decreases_its_objective_and_is_seeded(digits_small):
    images, labels = digits_small
    settings = dict(n_hidden=30, beta=1e-2, epochs=15, learning_rate=1e-2)
    first = BackpropNetwork(**settings, random_state=7).fit(images, labels)
    again = BackpropNetwork(**settings, random_state=7).fit(images, labels)
    other = BackpropNetwork(**settings, random_state=8).fit(images, labels)
    history = np.array(first.objective_history_)
    assert history[-1] < 0.3 * history[0]
    assert np.all(np.diff(history) < 0)  # every epoch lowers the full objective (Adam, 2 batches an epoch)
    np.testing.assert_array_equal(first.hidden_weights_, again.hidden_weights_)
    assert first.objective_history_ == again.objective_history_
    assert not np.array_equal(first.hidden_weights_, other.hidden_weights_)
    assert first.score(images, labels) > 0.9


def test_least_squares_matches_scikit_learns_linear_regression(digits_small):
    images, labels = digits_small
    model = LeastSquaresClassifier().fit(images, labels)
    rows = images.reshape(len(images), -1)
    reference = LinearRegression().fit(rows, one_hot(labels))
    np.testing.assert_allclose(model.class_scores(images), reference.predict(rows), atol=1e-8)


@pytest.mark.parametrize("estimator", [
    LeastSquaresClassifier(), BackpropNetwork(n_hidden=20, epochs=100, learning_rate=1e-2, random_state=0),
    CuttingPlaneNetwork(max_rounds=5)], ids=lambda e: type(e).__name__)
def test_table_models_pass_scikit_learns_checks(estimator):
    """(ClosedFormNetwork is left out: it needs n <= d, and the checks fit 20-200 samples of 2-10 features.)"""
    results = check_estimator(estimator, on_fail=None)
    assert [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"] == []


@pytest.mark.parametrize("make", [
    lambda: LeastSquaresClassifier(), lambda: ClosedFormNetwork(beta=0.5),
    lambda: BackpropNetwork(n_hidden=8, epochs=2, random_state=0), lambda: CuttingPlaneNetwork(max_rounds=2)],
    ids=["least_squares", "closed_form", "backprop", "cutting_plane"])
def test_table_models_round_trip_through_model_files(make, tmp_path):
    rng = np.random.default_rng(4)
    images, labels = rng.random((30, 8, 8)), np.arange(30) % 3
    model = make().fit(images, labels)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.class_scores(images), model.class_scores(images))
    with pytest.raises(ValueError, match="images have shape 7x7x1 but"):
        loaded.predict(rng.random((2, 7, 7)))
