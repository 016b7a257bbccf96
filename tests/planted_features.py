"""Pooled-like features with a planted class rule, shared by the feature-store and working-set tests."""

import numpy as np


def features(n, n_features, seed=0):
    """Non-negative pooled-like features with a planted 3-class rule, float32."""
    rng = np.random.default_rng(seed)
    B = rng.gamma(2.0, 3.0, size=(n, n_features)).astype(np.float32)
    informative = min(6, n_features)
    scores = B[:, :informative] @ rng.normal(size=(informative, 3))
    return B, np.argmax(scores + rng.normal(scale=2.0, size=scores.shape), axis=1)
