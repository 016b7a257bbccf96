"""The ridge read-out reported beside the l1 output layer (``ridge_readout: true``).

Ridge regression on one-hot targets, ``min ||X W - Y_c||^2 + alpha ||W||^2`` on the standardised
features ``X`` (training statistics) and centred targets, solved through the (F, F) Gram matrix by
Cholesky. The penalty is chosen from :data:`ALPHAS` on a seeded stratified fifth of the training rows
(groups of rows kept whole, :mod:`pipeline.readout.held_out`; fitted on the rest), then the model is
refitted on all training rows. The Gram matrices are accumulated over row blocks in float64 (upper
triangle, :mod:`pipeline.readout.gram`), so the features are never copied whole: memory ``3 F^2``
doubles next to the features, time ``N F^2 + 8 F^3 / 3`` flops (eight Choleskys), affordable up to
F ~ 25,000 where an eigendecomposition per fit (scikit-learn's ``RidgeClassifierCV``) is not.
"""

import numpy as np

from ..storage.feature_store import ArrayFeatures
from .gram import add_upper_gram, fill_lower, solve_positive_definite
from .held_out import held_out_split

ALPHAS = (1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3, 1e4)  # in units of standardised features (the Gram's diagonal is N)
VALIDATION_FRACTION = 0.2
_BLOCK_ROWS = 2048


class _Standardized:
    """Row blocks of ``features`` (N, F), standardised with the statistics of all its rows, as float64."""

    def __init__(self, features):
        self.features = features
        statistics = ArrayFeatures(features)
        self.mean, std = statistics.mean(), statistics.std()
        self.scale = np.where(std > 0, std, 1.0)

    def blocks(self, rows):
        """Yield ``(positions, block)``: consecutive chunks of ``rows``, standardised."""
        for start in range(0, len(rows), _BLOCK_ROWS):
            chunk = rows[start:start + _BLOCK_ROWS]
            yield slice(start, start + len(chunk)), (self.features[chunk].astype(np.float64) - self.mean) / self.scale

    def normal_equations(self, rows, targets):
        """``(X^T X, X^T targets, X^T 1)`` over ``rows`` (``targets`` indexed like all rows)."""
        n_features = self.features.shape[1]
        gram, correlation, sums = np.zeros((n_features, n_features)), np.zeros((n_features, targets.shape[1])), 0.0
        for positions, block in self.blocks(rows):
            add_upper_gram(gram, block)
            correlation += block.T @ targets[rows[positions]]
            sums = sums + block.sum(axis=0)
        return fill_lower(gram), correlation, sums

    def predict(self, features, weights):
        """(N', K) scores ``((features - mean) / scale) @ weights``."""
        return np.vstack([((features[i:i + _BLOCK_ROWS] - self.mean) / self.scale) @ weights
                          for i in range(0, len(features), _BLOCK_ROWS)])


def _solve(gram, correlation, alpha):
    """``(gram + alpha I)^{-1} correlation`` by Cholesky, in one (F, F) copy of ``gram``."""
    regularised = gram.copy()
    regularised[np.diag_indices_from(regularised)] += alpha
    return solve_positive_definite(regularised, correlation)


def held_out_scores(train_features, train_labels, alphas, fraction=VALIDATION_FRACTION, seed=0, groups=None):
    """``{alpha: accuracy}``: ridge fitted on the rows of ``train_features`` (N, F) outside a seeded stratified
    ``fraction`` (``groups`` (N,) held out together, or None), scored on that fraction, for each alpha > 0."""
    classes, index = np.unique(train_labels, return_inverse=True)
    onehot = np.eye(len(classes))[index]
    data = _Standardized(train_features)
    fit, held_out = held_out_split(index, fraction, seed, groups)
    return _held_out_scores(data, index, onehot, fit, held_out, alphas)[0]


def _held_out_scores(data, index, onehot, fit, held_out, alphas):
    """``(scores {alpha: held-out accuracy}, X^T X, X^T onehot)``: ridge on the rows ``fit`` of ``data``
    (:class:`_Standardized`), scored on the rows ``held_out``, and the fitted rows' normal equations."""
    # The columns are centred over all training rows, not exactly over the fitted ones: the fit on them
    # takes their class frequencies as intercept and centres the targets accordingly (X^T 1 = sums).
    gram, correlation, sums = data.normal_equations(fit, onehot)
    intercept = onehot[fit].mean(axis=0)
    correlation_centred = correlation - np.outer(sums, intercept)
    scores = {}
    for alpha in alphas:
        held_scores = data.predict(data.features[held_out], _solve(gram, correlation_centred, alpha)) + intercept
        scores[alpha] = float(np.mean(np.argmax(held_scores, axis=1) == index[held_out]))
    return scores, gram, correlation


def ridge_readout(train_features, train_labels, eval_features, eval_labels, seed, alphas=ALPHAS, groups=None):
    """Fit the ridge read-out on ``train_features`` (N, F) and score it on ``eval_features`` (N', F);
    ``groups`` (N,): rows held out together to choose the penalty (an image and its mirror), or None.

    Returns ``{"alpha", "validation_accuracy" (on the held-out fifth, for the chosen alpha),
    "train_accuracy", "accuracy" (on eval)}``.
    """
    classes, index = np.unique(train_labels, return_inverse=True)
    onehot = np.eye(len(classes))[index]
    data = _Standardized(train_features)
    fit, held_out = held_out_split(index, VALIDATION_FRACTION, seed, groups)
    scores, gram, correlation = _held_out_scores(data, index, onehot, fit, held_out, alphas)
    alpha = max(scores, key=scores.get)
    held_gram, held_correlation, _ = data.normal_equations(held_out, onehot)
    gram += held_gram
    del held_gram
    weights = _solve(gram, correlation + held_correlation, alpha)  # X^T 1 = 0 over all rows
    intercept = onehot.mean(axis=0)

    def accuracy(features, labels):
        return float(np.mean(classes[np.argmax(data.predict(features, weights) + intercept, axis=1)] == labels))

    return {"alpha": float(alpha), "validation_accuracy": scores[alpha],
            "train_accuracy": accuracy(train_features, train_labels), "accuracy": accuracy(eval_features, eval_labels)}
