"""The ridge read-out against scikit-learn's ridge classifier."""

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier
from sklearn.preprocessing import StandardScaler

from pipeline.readout import ridge
from pipeline.readout.ridge import ridge_readout


def blobs(n, n_features=40, seed=0):
    """float32 non-negative features with a noisy linear 4-class rule and a constant column."""
    rule = np.random.default_rng(99).normal(size=(8, 4))
    rng = np.random.default_rng(seed)
    X = rng.gamma(2.0, 2.0, size=(n, n_features)).astype(np.float32)
    X[:, 3] = 5.0
    y = np.argmax((X[:, :8] - 4.0) @ rule + rng.normal(scale=3.0, size=(n, 4)), axis=1)
    return X, np.array(["a", "b", "c", "d"])[y]


@pytest.mark.parametrize("alpha", [0.1, 30.0])
def test_fit_on_all_rows_predicts_like_sklearn_ridge_classifier(monkeypatch, alpha):
    monkeypatch.setattr(ridge, "_BLOCK_ROWS", 64)  # several row blocks
    X, y = blobs(500)
    X_test, y_test = blobs(200, seed=1)
    result = ridge_readout(X, y, X_test, y_test, seed=0, alphas=(alpha,))
    scaler = StandardScaler().fit(X)
    reference = RidgeClassifier(alpha=alpha, solver="cholesky").fit(scaler.transform(X), y)
    assert result["alpha"] == alpha
    assert result["accuracy"] == reference.score(scaler.transform(X_test), y_test)
    assert result["train_accuracy"] == reference.score(scaler.transform(X), y)


def test_the_penalty_is_chosen_on_held_out_training_rows():
    X, y = blobs(600, n_features=300, seed=2)  # more features than rows per class: little penalty overfits
    X_test, y_test = blobs(200, n_features=300, seed=3)
    singles = {alpha: ridge_readout(X, y, X_test, y_test, seed=0, alphas=(alpha,)) for alpha in (1e-6, 1e3, 1e9)}
    result = ridge_readout(X, y, X_test, y_test, seed=0, alphas=tuple(singles))
    best = max(singles, key=lambda alpha: singles[alpha]["validation_accuracy"])
    assert best == 1e3 and result == singles[best]  # neither the near-interpolating nor the all-intercept fit


def test_mirrored_rows_held_out_with_their_originals_do_not_pick_the_interpolating_penalty():
    X, y = blobs(600, n_features=300, seed=2)
    X_test, y_test = blobs(200, n_features=300, seed=3)
    doubled, labels, groups = np.vstack([X, X]), np.concatenate([y, y]), np.tile(np.arange(len(y)), 2)
    alphas = (1e-6, 1e3, 1e9)
    leaky = ridge_readout(doubled, labels, X_test, y_test, seed=0, alphas=alphas)
    grouped = ridge_readout(doubled, labels, X_test, y_test, seed=0, alphas=alphas, groups=groups)
    # held-out copies of fitted rows (most of them) favour the near-interpolating fit; whole groups do not
    assert leaky["alpha"] == 1e-6 and grouped["alpha"] == 1e3
    assert grouped["validation_accuracy"] < leaky["validation_accuracy"]


@pytest.mark.parametrize("groups", [False, True])
def test_dual_form_with_more_features_than_rows_gives_the_primal_forms_read_out(monkeypatch, groups):
    monkeypatch.setattr(ridge, "_BLOCK_ROWS", 64)
    monkeypatch.setattr(ridge, "_TILE_COLUMNS", 512)  # several column tiles of the kernel and of X^T A
    # wider than one tile of the primal Gram matrix (pipeline.readout.gram._TILE = 2048)
    X, y = blobs(150, n_features=2100, seed=4)
    X_test, y_test = blobs(100, n_features=2100, seed=5)
    rows = None
    if groups:  # pairs of rows of one label, like an image and its mirror
        X, y, rows = np.vstack([X[:75], X[:75, ::-1]]), np.concatenate([y[:75], y[:75]]), np.tile(np.arange(75), 2)
    alphas = (1e-1, 1e1, 1e3)
    data, index = ridge._Standardized(X), np.unique(y, return_inverse=True)[1]
    fit, held_out = ridge.held_out_split(index, 0.2, 0, rows)
    primal, dual = (form(data, np.eye(4)[index], fit, held_out) for form in (ridge._PrimalRidge, ridge._DualRidge))
    for alpha in alphas:
        np.testing.assert_allclose(dual.held_out_scores(alpha), primal.held_out_scores(alpha), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(dual.weights(1e1), primal.weights(1e1), rtol=1e-8, atol=1e-10)
    assert isinstance(ridge._ridge(data, np.eye(4)[index], fit, held_out), ridge._DualRidge)
    result = ridge_readout(X, y, X_test, y_test, seed=0, alphas=alphas, groups=rows)
    scaler = StandardScaler().fit(X)
    reference = RidgeClassifier(alpha=result["alpha"], solver="cholesky").fit(scaler.transform(X), y)
    assert result["accuracy"] == reference.score(scaler.transform(X_test), y_test)
    assert result["train_accuracy"] == reference.score(scaler.transform(X), y)
