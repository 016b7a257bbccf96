"""The ridge read-out reported beside the l1 output layer (``ridge_readout: true``).

Ridge regression on one-hot targets, ``min ||X W - Y_c||^2 + alpha ||W||^2`` on the standardised
features ``X`` (training statistics) and centred targets, solved by Cholesky. The penalty is chosen from
:data:`ALPHAS` on a seeded stratified fifth of the training rows (groups of rows kept whole,
:mod:`pipeline.readout.held_out`; fitted on the rest), then the model is refitted on all training rows.

Two equivalent forms, the smaller one chosen by the shape (N, F) of the training features:

- **primal**, through the (F, F) Gram matrices ``X^T X`` (N >= F): accumulated over row blocks in float64
  (upper triangle, :mod:`pipeline.readout.gram`), so the features are never copied whole; memory ``2 F^2``
  doubles next to the features, time ``N F^2 + 8 F^3 / 3`` flops (eight Choleskys);
- **dual**, through the (N, N) kernel ``X X^T`` (N < F), since ``(X^T X + alpha I)^-1 X^T = X^T (X X^T +
  alpha I)^-1``: the kernel accumulated over column tiles, the held-out rows scored by its off-diagonal
  block, the weights ``W = X^T A`` formed once at the end; memory ``1.64 N^2`` doubles (the kernel and
  the fitted rows' block), time ``N^2 F + 8 N^3 / 3``. With more features than rows (many filters on a
  subsample) this is what fits in memory: F = 32,000 features need 16 GB in the primal form, 5.2 GB in
  the dual form on N = 20,000 rows.

Either is affordable up to about 25,000 on its side, where an eigendecomposition per fit (scikit-learn's
``RidgeClassifierCV``) is not.
"""

import numpy as np

from ..storage.feature_store import ArrayFeatures
from .gram import add_upper_gram, fill_lower, solve_positive_definite
from .held_out import held_out_split

ALPHAS = (1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3, 1e4)  # in units of standardised features (the Gram's diagonal is N)
VALIDATION_FRACTION = 0.2
_BLOCK_ROWS = 2048
_TILE_COLUMNS = 2048


class _Standardized:
    """Row blocks and column tiles of ``features`` (N, F), standardised with the statistics of all its rows,
    as float64."""

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

    def tiles(self):
        """Yield ``(columns, tile)``: consecutive column slices and their (N, c) standardised columns."""
        n_features = self.features.shape[1]
        for start in range(0, n_features, _TILE_COLUMNS):
            columns = slice(start, min(start + _TILE_COLUMNS, n_features))
            yield columns, (self.features[:, columns].astype(np.float64) - self.mean[columns]) / self.scale[columns]

    def normal_equations(self, rows, targets, gram=None):
        """``(X^T X, X^T targets, X^T 1)`` over ``rows`` (``targets`` indexed like all rows); ``gram``: an
        (F, F) Gram matrix of other rows to add them to, in place (full, as returned here), or None."""
        n_features = self.features.shape[1]
        gram = np.zeros((n_features, n_features)) if gram is None else gram  # its upper block triangle grows
        correlation, sums = np.zeros((n_features, targets.shape[1])), 0.0
        for positions, block in self.blocks(rows):
            add_upper_gram(gram, block)
            correlation += block.T @ targets[rows[positions]]
            sums = sums + block.sum(axis=0)
        return fill_lower(gram), correlation, sums

    def kernel(self):
        """(N, N) float64 ``X X^T`` of all rows."""
        n_rows = self.features.shape[0]
        kernel = np.zeros((n_rows, n_rows))
        for _, tile in self.tiles():
            add_upper_gram(kernel, tile.T)
        return fill_lower(kernel)

    def transpose_times(self, coefficients):
        """(F, K) ``X^T coefficients`` for ``coefficients`` (N, K), one column tile at a time."""
        out = np.empty((self.features.shape[1], coefficients.shape[1]))
        for columns, tile in self.tiles():
            out[columns] = tile.T @ coefficients
        return out

    def predict(self, features, weights):
        """(N', K) scores ``((features - mean) / scale) @ weights``."""
        return np.vstack([((features[i:i + _BLOCK_ROWS] - self.mean) / self.scale) @ weights
                          for i in range(0, len(features), _BLOCK_ROWS)])


def _solve(gram, correlation, alpha, overwrite=False):
    """``(gram + alpha I)^{-1} correlation`` by Cholesky, in one (F, F) copy of ``gram`` (or in ``gram``
    itself, destroyed, with ``overwrite``)."""
    regularised = gram if overwrite else gram.copy()
    regularised[np.diag_indices_from(regularised)] += alpha
    return solve_positive_definite(regularised, correlation)


class _PrimalRidge:
    """Ridge through the (F, F) Gram matrices (module docstring): first :meth:`held_out_scores` for each
    alpha, then :meth:`weights` on all rows (which turns the fitted rows' Gram into all rows' one)."""

    def __init__(self, data, onehot, fit, held_out):
        self.data, self.onehot, self.held_out = data, onehot, held_out
        # The columns are centred over all training rows, not exactly over the fitted ones: the fit on them
        # takes their class frequencies as intercept and centres the targets accordingly (X^T 1 = sums).
        self.gram, self.correlation, sums = data.normal_equations(fit, onehot)
        self.intercept = onehot[fit].mean(axis=0)
        self.correlation_centred = self.correlation - np.outer(sums, self.intercept)

    def held_out_scores(self, alpha):
        """(n_held_out, K) class scores of the held-out rows, fitted on the others at ``alpha``."""
        weights = _solve(self.gram, self.correlation_centred, alpha)
        return self.data.predict(self.data.features[self.held_out], weights) + self.intercept

    def weights(self, alpha):
        """(F, K) weights fitted on all rows at ``alpha`` (``X^T 1 = 0`` over all rows: no centring)."""
        self.gram, held_correlation, _ = self.data.normal_equations(self.held_out, self.onehot, gram=self.gram)
        return _solve(self.gram, self.correlation + held_correlation, alpha)


class _DualRidge:
    """Ridge through the (N, N) kernel (module docstring), same interface and order of calls as
    :class:`_PrimalRidge`."""

    def __init__(self, data, onehot, fit, held_out):
        self.data, self.onehot, self.fit, self.held_out = data, onehot, fit, held_out
        self.kernel = data.kernel()
        self.intercept = onehot[fit].mean(axis=0)

    def held_out_scores(self, alpha):
        """(n_held_out, K) class scores of the held-out rows, fitted on the others at ``alpha``."""
        dual = _solve(self.kernel[np.ix_(self.fit, self.fit)], self.onehot[self.fit] - self.intercept, alpha,
                      overwrite=True)  # fancy indexing copied the block
        return self.kernel[np.ix_(self.held_out, self.fit)] @ dual + self.intercept

    def weights(self, alpha):
        """(F, K) weights fitted on all rows at ``alpha``: ``X^T (X X^T + alpha I)^-1 Y`` (the kernel is
        factorised in place: call it last)."""
        return self.data.transpose_times(_solve(self.kernel, self.onehot, alpha, overwrite=True))


def _ridge(data, onehot, fit, held_out):
    """The form of ridge for ``data``'s shape: dual with fewer rows than features, else primal."""
    n_rows, n_features = data.features.shape
    return (_DualRidge if n_rows < n_features else _PrimalRidge)(data, onehot, fit, held_out)


def held_out_scores(train_features, train_labels, alphas, fraction=VALIDATION_FRACTION, seed=0, groups=None):
    """``{alpha: accuracy}``: ridge fitted on the rows of ``train_features`` (N, F) outside a seeded stratified
    ``fraction`` (``groups`` (N,) held out together, or None), scored on that fraction, for each alpha > 0."""
    classes, index = np.unique(train_labels, return_inverse=True)
    fit, held_out = held_out_split(index, fraction, seed, groups)
    return _held_out_accuracies(_ridge(_Standardized(train_features), np.eye(len(classes))[index], fit, held_out),
                                index[held_out], alphas)


def _held_out_accuracies(ridge, held_out_labels, alphas):
    """``{alpha: held-out accuracy}`` of ``ridge`` (:class:`_PrimalRidge` / :class:`_DualRidge`) whose
    held-out rows have the class indices ``held_out_labels``."""
    return {alpha: float(np.mean(np.argmax(ridge.held_out_scores(alpha), axis=1) == held_out_labels))
            for alpha in alphas}


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
    ridge = _ridge(data, onehot, fit, held_out)
    scores = _held_out_accuracies(ridge, index[held_out], alphas)
    alpha = max(scores, key=scores.get)
    weights = ridge.weights(alpha)
    intercept = onehot.mean(axis=0)

    def accuracy(features, labels):
        return float(np.mean(classes[np.argmax(data.predict(features, weights) + intercept, axis=1)] == labels))

    return {"alpha": float(alpha), "validation_accuracy": scores[alpha],
            "train_accuracy": accuracy(train_features, train_labels), "accuracy": accuracy(eval_features, eval_labels)}
