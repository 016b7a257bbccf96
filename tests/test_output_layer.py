"""Tests of the l1 output layer estimator (pipeline/readout/output_layer.py)."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, MultiTaskLasso

from pipeline import L1OutputLayer
from pipeline.readout.penalties import group_norms

TRUE_ROWS = (3, 11, 19, 30, 42)


def planted(n=200, n_features=50, n_classes=4, seed=0, noise=0.1):
    """Gaussian B, W_true with non-zero rows TRUE_ROWS, y = argmax(B W_true + noise)."""
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n, n_features))
    W = np.zeros((n_features, n_classes))
    W[list(TRUE_ROWS)] = 3.0 * rng.standard_normal((len(TRUE_ROWS), n_classes))
    y = np.argmax(B @ W + noise * rng.standard_normal((n, n_classes)), axis=1)
    return B, y, W


def onehot(y, classes):
    return (np.asarray(y)[:, None] == np.asarray(classes)[None, :]).astype(float)


def standardized(model, B):
    return (B - model.mean_) / model.scale_


def dual_norm(G, group):
    return group_norms(G, group)[1]


# -- 1. planted sparse recovery -------------------------------------------------------------------


def class_means_data(n, seed, sep=3.0):
    """4 classes whose means differ only on the features TRUE_ROWS (unit Gaussian noise elsewhere):
    the population one-hot regression uses exactly those rows."""
    rng = np.random.default_rng(seed)
    means = np.zeros((4, 50))
    for k in range(4):
        means[k, TRUE_ROWS[k]] = sep
    means[:, TRUE_ROWS[4]] = sep * np.array([1, -1, 1, -1])
    y = rng.integers(0, 4, n)
    return means[y] + rng.standard_normal((n, 50)), y


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_planted_support_and_accuracy(seed):
    B, y = class_means_data(1200, seed)
    model = L1OutputLayer(beta=0.2).fit(B[:200], y[:200])
    assert model.converged_
    assert model.coef_.shape == (50, 4)
    rows = np.flatnonzero(np.linalg.norm(model.coef_, axis=1) > 0)
    assert tuple(rows) == TRUE_ROWS
    assert np.mean(model.predict(B[:200]) == y[:200]) >= 0.95
    assert np.mean(model.predict(B[200:]) == y[200:]) >= 0.95
    # a smaller penalty keeps the true rows and adds others
    wide = L1OutputLayer(beta=0.05).fit(B[:200], y[:200])
    wide_rows = np.flatnonzero(np.linalg.norm(wide.coef_, axis=1) > 0)
    assert set(TRUE_ROWS) < set(wide_rows)
    assert wide.tau_ > model.tau_


def test_arbitrary_labels_and_two_classes():
    B, y, _ = planted(n_classes=2, seed=5)
    labels = np.array([7, -3])[y]
    model = L1OutputLayer(beta=0.05).fit(B, labels)
    np.testing.assert_array_equal(model.classes_, [-3, 7])
    assert model.coef_.shape == (50, 2) and model.intercept_.shape == (2,)
    scores = model.class_scores(B)
    np.testing.assert_allclose(model.decision_function(B), scores[:, 1] - scores[:, 0])
    np.testing.assert_array_equal(model.predict(B), np.where(model.decision_function(B) > 0, 7, -3))
    assert set(np.unique(model.predict(B))) <= {-3, 7}
    assert np.mean(model.predict(B) == labels) >= 0.9
    # with two one-hot columns the centred targets are opposite, and so are the columns of W
    np.testing.assert_allclose(model.coef_[:, 0], -model.coef_[:, 1], atol=1e-6)


# -- 2. and 3. agreement with scikit-learn ------------------------------------------------------


def sklearn_objective(B, Y, coef, intercept, beta, group):
    R = Y - B @ coef - intercept
    return 0.5 * float(np.sum(R * R)) + beta * group_norms(coef, group)[0]


def test_independent_lasso_matches_sklearn_lasso_per_class():
    B, y, _ = planted(seed=6)
    n = len(y)
    Yc = onehot(y, np.unique(y))
    Yc -= Yc.mean(axis=0)
    beta = 0.2 * np.abs((B - B.mean(axis=0)).T @ Yc).max()
    model = L1OutputLayer(group=False, standardize=False, relative=False, beta=beta).fit(B, y)
    assert model.converged_ and model.beta_ == beta
    np.testing.assert_array_equal(model.scale_, 1.0)
    Y = onehot(y, model.classes_)
    coefs, intercepts = [], []
    for k in range(Y.shape[1]):
        lasso = Lasso(alpha=beta / n, fit_intercept=True, tol=1e-10, max_iter=100000)
        lasso.fit(B, Y[:, k])
        coefs.append(lasso.coef_)
        intercepts.append(lasso.intercept_)
    coef = np.stack(coefs, axis=1)
    scale = np.abs(coef).max()
    assert np.abs(model.coef_ - coef).max() <= 1e-4 * scale
    # same zero pattern (up to entries that are ~0 in either)
    assert np.array_equal(np.abs(model.coef_) > 1e-3 * scale, np.abs(coef) > 1e-3 * scale)
    # intercept in the raw feature space
    raw_intercept = model.intercept_ - model.mean_ @ model.coef_
    np.testing.assert_allclose(raw_intercept, intercepts, atol=1e-4)
    reference = sklearn_objective(B, Y, coef, np.array(intercepts), beta, group=False)
    assert model.objective(B, y) == pytest.approx(reference, rel=1e-6)
    assert model.objective(B, y) >= reference * (1 - 1e-9)


def test_group_lasso_matches_sklearn_multitask_lasso():
    B, y, _ = planted(seed=7)
    B = B * np.linspace(0.5, 3.0, B.shape[1]) + 2.0  # so that standardising matters
    n = len(y)
    model = L1OutputLayer(beta=0.05).fit(B, y)
    assert model.converged_
    X = standardized(model, B)
    Y = onehot(y, model.classes_)
    mtl = MultiTaskLasso(alpha=model.beta_ / n, fit_intercept=True, tol=1e-10, max_iter=100000)
    mtl.fit(X, Y)
    reference = sklearn_objective(X, Y, mtl.coef_.T, mtl.intercept_, model.beta_, group=True)
    assert model.objective(B, y) == pytest.approx(reference, rel=1e-5)
    assert np.abs(model.coef_ - mtl.coef_.T).max() <= 1e-3 * np.abs(mtl.coef_).max()


# -- 4. constrained modes -------------------------------------------------------------------------


@pytest.mark.parametrize("group", [True, False])
def test_lasso_mode_constraint_is_active_and_on_the_pareto_curve(group):
    B, y, _ = planted(seed=8)
    probe = L1OutputLayer(beta=0.01, group=group).fit(B, y)
    tau = 0.5 * probe.tau_
    model = L1OutputLayer(mode="lasso", tau=tau, group=group).fit(B, y)
    assert model.converged_
    assert model.tau_ <= tau * (1 + 1e-6)
    assert model.tau_ >= tau * (1 - 1e-4)  # active
    assert group_norms(model.coef_, group)[0] == pytest.approx(model.tau_)
    # beta_ is the dual norm at the solution, and the penalised problem at beta_ gives the same W
    R = onehot(y, model.classes_) - model.decision_function(B)
    assert dual_norm(standardized(model, B).T @ R, group) == pytest.approx(model.beta_, rel=1e-6)
    same = L1OutputLayer(beta=model.beta_, relative=False, group=group).fit(B, y)
    assert same.tau_ == pytest.approx(tau, rel=1e-3)
    np.testing.assert_allclose(same.coef_, model.coef_, atol=1e-3 * np.abs(model.coef_).max())


@pytest.mark.parametrize("group", [True, False])
def test_bpdn_mode_residual_bound(group):
    B, y, _ = planted(seed=9)
    Y = onehot(y, np.unique(y))
    Yc = Y - Y.mean(axis=0)
    Bc = (B - B.mean(axis=0)) / B.std(axis=0)
    least_squares = np.linalg.norm(Yc - Bc @ np.linalg.lstsq(Bc, Yc, rcond=None)[0])
    sigma = 0.5 * (least_squares + np.linalg.norm(Yc))
    model = L1OutputLayer(mode="bpdn", sigma=sigma, group=group).fit(B, y)
    assert model.converged_
    residual = np.linalg.norm(Y - model.decision_function(B))
    assert residual <= sigma * (1 + 1e-4)
    assert residual >= sigma * (1 - 1e-3)  # the constraint is active at the minimum-norm W
    assert 0 < model.tau_ and 0 < model.beta_ < model.beta_max_


def test_constrained_modes_trivial_levels():
    B, y, _ = planted(seed=10)
    zero = L1OutputLayer(mode="lasso", tau=0.0).fit(B, y)
    assert not zero.coef_.any() and zero.beta_ == zero.beta_max_
    Y = onehot(y, np.unique(y))
    loose = L1OutputLayer(mode="bpdn", sigma=np.linalg.norm(Y - Y.mean(axis=0))).fit(B, y)
    assert not loose.coef_.any()


# -- 5. penalised mode ----------------------------------------------------------------------------


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("beta", [0.3, 0.03])
def test_penalized_dual_norm_condition(group, beta):
    B, y, _ = planted(seed=11)
    model = L1OutputLayer(beta=beta, group=group).fit(B, y)
    assert model.converged_
    assert model.beta_ == pytest.approx(beta * model.beta_max_)
    X = standardized(model, B)
    G = X.T @ (onehot(y, model.classes_) - model.decision_function(B))
    assert abs(dual_norm(G, group) - model.beta_) <= 1e-4 * model.beta_ * (1 + 1e-6)
    # KKT: active entries / rows have |G| = beta and point along W (to the LASSO solve's accuracy)
    if group:
        norms = np.linalg.norm(G, axis=1)
        active = np.linalg.norm(model.coef_, axis=1) > 0
        np.testing.assert_allclose(norms[active], model.beta_, rtol=1e-3)
        cos = np.sum(G[active] * model.coef_[active], axis=1) / (
            norms[active] * np.linalg.norm(model.coef_[active], axis=1))
        assert cos.min() > 1 - 1e-3
    else:
        active = model.coef_ != 0
        np.testing.assert_allclose(G[active], model.beta_ * np.sign(model.coef_[active]), rtol=1e-3)
    assert model.beta_max_ == pytest.approx(dual_norm(X.T @ (onehot(y, model.classes_)
                                                             - model.intercept_), group))


@pytest.mark.parametrize("kwargs", [dict(beta=1.0), dict(beta=5.0), dict(beta=None, relative=False)])
def test_beta_at_or_above_beta_max_gives_zero(kwargs):
    B, y, _ = planted(seed=12)
    B_test, _, _ = planted(seed=13)
    if kwargs.get("beta", 0) is None:
        beta_max = L1OutputLayer(beta=1.0).fit(B, y).beta_max_
        kwargs = dict(beta=beta_max, relative=False)
    model = L1OutputLayer(**kwargs).fit(B, y)
    assert not model.coef_.any() and model.tau_ == 0.0
    scores = model.decision_function(B_test)
    np.testing.assert_allclose(scores, np.broadcast_to(model.intercept_, scores.shape))
    predictions = model.predict(B_test)
    assert np.all(predictions == predictions[0])
    assert predictions[0] == np.bincount(y).argmax()


@pytest.mark.parametrize("tol", [1e-3, 1e-2])
def test_loose_tolerance_objective_is_within_its_gap_of_the_reference(tol):
    # At tol >= 1e-3 the products run in float32 and the root-find stops at |lambda - beta| <= d beta,
    # d = max(sqrt(tol), 20 tol): the penalised objective must still be within tol + d^2 (the LASSO
    # solve's gap and the root-find's) of the optimum.
    B, y, _ = planted(n=400, seed=7)
    B = B * np.linspace(0.5, 3.0, B.shape[1]) + 2.0
    model = L1OutputLayer(beta=0.05, tol=tol).fit(B, y)
    assert model.converged_
    X, Y = standardized(model, B), onehot(y, model.classes_)
    mtl = MultiTaskLasso(alpha=model.beta_ / len(y), tol=1e-10, max_iter=100000).fit(X, Y)
    reference = sklearn_objective(X, Y, mtl.coef_.T, mtl.intercept_, model.beta_, group=True)
    d = max(np.sqrt(tol), 20 * tol)
    assert reference * (1 - 1e-9) <= model.objective(B, y) <= reference * (1 + tol + d ** 2)
    assert abs(model.dual_norm_ - model.beta_) <= d * model.beta_


@pytest.mark.parametrize("solver", ["spgl1", "newton"])  # newton: solved from its Gram matrix
@pytest.mark.parametrize("group", [True, False])
def test_refit_is_least_squares_on_the_l1_support(group, solver):
    B, y, _ = planted(seed=15)
    lasso = L1OutputLayer(beta=0.1, group=group, solver=solver).fit(B, y)
    relaxed = L1OutputLayer(beta=0.1, group=group, refit=True, solver=solver).fit(B, y)
    np.testing.assert_array_equal(relaxed.l1_coef_, lasso.coef_)
    X, Yc = standardized(relaxed, B), onehot(y, relaxed.classes_) - relaxed.intercept_
    for k in range(Yc.shape[1]):
        support = np.flatnonzero(np.any(lasso.coef_ != 0, axis=1) if group else lasso.coef_[:, k])
        assert 0 < len(support) < B.shape[1]
        expected = np.zeros(B.shape[1])
        expected[support] = np.linalg.lstsq(X[:, support], Yc[:, k], rcond=None)[0]
        np.testing.assert_allclose(relaxed.coef_[:, k], expected, atol=1e-10)
    # least squares on the same support: a smaller residual than the shrunken l1 coefficients
    residual = lambda m: np.linalg.norm(onehot(y, m.classes_) - m.decision_function(B))  # noqa: E731
    assert residual(relaxed) < residual(lasso)


@pytest.mark.parametrize("solver", ["spgl1", "newton"])  # spgl1: by SVD; newton: from its Gram matrix
@pytest.mark.parametrize("group", [True, False])
def test_ridge_refit_is_ridge_regression_on_the_l1_support(group, solver):
    B, y, _ = planted(seed=15)
    alpha = 30.0
    lasso = L1OutputLayer(beta=0.1, group=group, solver=solver).fit(B, y)
    ridge = L1OutputLayer(beta=0.1, group=group, refit=True, refit_alpha=alpha, solver=solver).fit(B, y)
    X, Yc = standardized(ridge, B), onehot(y, ridge.classes_) - ridge.intercept_
    for k in range(Yc.shape[1]):
        support = np.flatnonzero(np.any(lasso.coef_ != 0, axis=1) if group else lasso.coef_[:, k])
        expected = np.zeros(B.shape[1])
        expected[support] = np.linalg.solve(X[:, support].T @ X[:, support] + alpha * np.eye(len(support)),
                                            X[:, support].T @ Yc[:, k])
        np.testing.assert_allclose(ridge.coef_[:, k], expected, atol=1e-10)
    least_squares = L1OutputLayer(beta=0.1, group=group, refit=True, solver=solver).fit(B, y)
    assert np.linalg.norm(ridge.coef_) < np.linalg.norm(least_squares.coef_)  # shrunk


def test_refit_alpha_without_a_refit_is_refused():
    B, y, _ = planted(seed=15)
    with pytest.raises(ValueError, match="set refit=True"):
        L1OutputLayer(beta=0.1, refit_alpha=10.0).fit(B, y)


def test_refit_on_a_rank_deficient_support_is_the_minimum_norm_least_squares():
    """Two copies of a feature share its coefficient: their Gram block is singular, so the Newton solver's
    refit falls back from Cholesky to the SVD's minimum-norm solution (equal halves)."""
    B, y, _ = planted(seed=16)
    B = np.column_stack([B, B[:, TRUE_ROWS[0]]])
    relaxed = L1OutputLayer(beta=0.1, refit=True, solver="newton").fit(B, y)
    support = np.flatnonzero(np.any(relaxed.l1_coef_ != 0, axis=1))
    assert {TRUE_ROWS[0], B.shape[1] - 1} <= set(support)
    X, Yc = standardized(relaxed, B), onehot(y, relaxed.classes_) - relaxed.intercept_
    np.testing.assert_allclose(relaxed.coef_[support], np.linalg.lstsq(X[:, support], Yc, rcond=None)[0],
                               atol=1e-8)
    np.testing.assert_allclose(relaxed.coef_[TRUE_ROWS[0]], relaxed.coef_[-1], atol=1e-8)


def test_objective_is_minimal_at_the_solution():
    B, y, _ = planted(seed=14)
    model = L1OutputLayer(beta=0.05).fit(B, y)
    best = model.objective(B, y)
    rng = np.random.default_rng(0)
    coef = model.coef_.copy()
    for _ in range(5):
        model.coef_ = coef + 1e-3 * rng.standard_normal(coef.shape)
        assert model.objective(B, y) > best
    model.coef_ = coef


def test_convergence_warning_when_iterations_run_out():
    B, y, _ = planted(seed=15)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        model = L1OutputLayer(beta=0.01, max_iter=2).fit(B, y)
    assert not model.converged_


# -- 6. standardisation ---------------------------------------------------------------------------


def test_standardization_uses_training_statistics_only():
    B, y, _ = planted(seed=16)
    B[:, 5] = 4.0  # a constant feature: scale 1, never used
    B = B * 3.0 + 1.0
    model = L1OutputLayer(beta=0.05).fit(B, y)
    np.testing.assert_allclose(model.mean_, B.mean(axis=0))
    expected_scale = B.std(axis=0)
    expected_scale[5] = 1.0
    np.testing.assert_allclose(model.scale_, expected_scale)
    assert not model.coef_[5].any()
    mean, scale, coef = model.mean_.copy(), model.scale_.copy(), model.coef_.copy()

    B_test = 10.0 * np.random.default_rng(1).standard_normal((30, 50)) - 7.0
    scores = model.decision_function(B_test)
    np.testing.assert_array_equal(model.mean_, mean)
    np.testing.assert_array_equal(model.scale_, scale)
    np.testing.assert_array_equal(model.coef_, coef)
    np.testing.assert_allclose(scores, ((B_test - mean) / scale) @ coef + model.intercept_)

    # float32 input gives the same model (statistics and solve in float64)
    model32 = L1OutputLayer(beta=0.05).fit(B.astype(np.float32), y)
    np.testing.assert_allclose(model32.mean_, mean, rtol=1e-6)
    np.testing.assert_allclose(model32.decision_function(B_test.astype(np.float32)), scores,
                               atol=1e-3)


def test_no_standardization_still_centres():
    B, y, _ = planted(seed=17)
    B = B + 5.0
    model = L1OutputLayer(beta=0.05, standardize=False).fit(B, y)
    np.testing.assert_array_equal(model.scale_, 1.0)
    np.testing.assert_allclose(model.mean_, B.mean(axis=0))
    # centred features: the intercept is the class frequencies, and the mean score is too
    np.testing.assert_allclose(model.intercept_, np.bincount(y) / len(y))
    np.testing.assert_allclose(model.decision_function(B).mean(axis=0), model.intercept_,
                               atol=1e-10)


def test_clone_and_params():
    model = L1OutputLayer(mode="lasso", tau=2.0, group=False)
    copy = clone(model)
    assert copy.get_params() == model.get_params()


# -- 7. errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="ridge"), "'mode' parameter of L1OutputLayer must be a str among"),
        (dict(mode="lasso"), "needs tau"),
        (dict(mode="bpdn"), "needs sigma"),
        (dict(beta=None), "needs beta"),
        (dict(beta=-0.1), r"'beta' parameter of L1OutputLayer must be a float in the range \[0.0, inf\)"),
        (dict(mode="lasso", tau=-1.0), r"'tau' parameter of L1OutputLayer must be a float in the range \[0.0, inf\)"),
        (dict(mode="bpdn", sigma=-1.0), r"'sigma' parameter .* must be a float in the range \[0.0, inf\)"),
        (dict(beta=float("nan")), r"'beta' parameter of L1OutputLayer must be a float in the range \[0.0, inf\)"),
        (dict(beta=float("inf")), r"'beta' parameter of L1OutputLayer must be a float in the range \[0.0, inf\)"),
        (dict(tol=0.0), r"'tol' parameter of L1OutputLayer must be a float in the range \(0.0, inf\)"),
        (dict(max_iter=0), r"'max_iter' parameter of L1OutputLayer must be an int in the range \[1, inf\)"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    B, y, _ = planted(n=20, seed=18)
    with pytest.raises(ValueError, match=match):
        L1OutputLayer(**kwargs).fit(B, y)


def test_bad_data_raise():
    B, y, _ = planted(n=20, seed=19)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        L1OutputLayer().fit(B, y[:-1])
    bad = B.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        L1OutputLayer().fit(bad, y)
    bad[3, 4] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        L1OutputLayer().fit(bad, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        L1OutputLayer().fit(B, np.zeros(len(y), dtype=int))
    model = L1OutputLayer().fit(B, y)
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full_like(B, np.nan))
    with pytest.raises(ValueError, match="features"):
        model.predict(B[:, :10])
    with pytest.raises(ValueError, match="labels not seen"):
        model.objective(B, y + 100)
