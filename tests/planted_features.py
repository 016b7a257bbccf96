"""Pooled-like features with a planted class rule, and centred regression problems with a planted sparse
solution, shared by the feature-store, working-set and solver tests."""

import numpy as np


def features(n, n_features, seed=0):
    """Non-negative pooled-like features with a planted 3-class rule, float32."""
    rng = np.random.default_rng(seed)
    B = rng.gamma(2.0, 3.0, size=(n, n_features)).astype(np.float32)
    informative = min(6, n_features)
    scores = B[:, :informative] @ rng.normal(size=(informative, 3))
    return B, np.argmax(scores + rng.normal(scale=2.0, size=scores.shape), axis=1)


def centred_problem(n=120, n_features=30, k=3, seed=0, common_factor=0.0, support=(2, 7, 19)):
    """Centred features (n, F) and targets (n, K) ``B W + noise`` with ``W`` non-zero on the rows ``support``;
    ``common_factor``: the weight of one Gaussian factor shared by all features (correlated features, as
    pooled ones are)."""
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n, n_features)) + common_factor * rng.standard_normal((n, 1))
    W = np.zeros((n_features, k))
    W[list(support)] = rng.standard_normal((len(support), k))
    Y = B @ W + 0.5 * rng.standard_normal((n, k))
    return B - B.mean(axis=0), Y - Y.mean(axis=0)
