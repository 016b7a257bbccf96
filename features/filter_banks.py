"""Filter banks to compare the extreme points with, at equal filter count (all in the whitened patch space).

* :class:`RandomPatchFilters`: the sampled patches themselves, normalised to unit length;
* :class:`KMeansFilters`: k-means centroids of the unit-length patches (Coates and Ng's filters,
  with scikit-learn's ``KMeans``), normalised to unit length;
* :class:`GaussianFilters`: unit-length Gaussian random directions.

Every bank is a transformer: ``fit(patches)`` sets ``filters_`` (F, d) and ``bias_`` (F,), and
``transform`` gives the ReLU responses ``max(Z U^T + b, 0)`` (:class:`FilterBankMixin`), like
:class:`features.extreme_points.ExtremePointFilters`.
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.utils.validation import check_is_fitted, validate_data

from .parameters import POSITIVE_INT, RANDOM_STATE


class FilterBankMixin(TransformerMixin):
    """``transform``: ReLU responses (n, F) of vectors (n, d) to the fitted ``filters_`` and ``bias_``."""

    def transform(self, X):
        check_is_fitted(self, "filters_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return np.maximum(X @ self.filters_.T + self.bias_, 0.0)

    def _set_filters(self, filters):
        """Store ``filters`` (F, d) scaled to unit length (zero rows stay zero) and zero biases."""
        norms = np.linalg.norm(filters, axis=1, keepdims=True)
        self.filters_ = filters / np.where(norms > 0, norms, 1.0)
        self.bias_ = np.zeros(len(filters))
        return self

    def _count(self, n_patches, at_most):
        """``n_filters`` (None: ``n_patches``), checked to lie in [1, at_most]."""
        count = n_patches if self.n_filters is None else self.n_filters
        if not (isinstance(count, numbers.Integral) and 1 <= count <= at_most):
            raise ValueError(f"{type(self).__name__} needs n_filters from 1 to {at_most} for "
                             f"{n_patches} patches, got {self.n_filters!r}")
        return int(count)


class RandomPatchFilters(FilterBankMixin, BaseEstimator):
    """``n_filters`` of the patches (all when None), chosen at random, as unit-length filters."""

    _parameter_constraints = {"n_filters": [POSITIVE_INT, None], "random_state": RANDOM_STATE}

    def __init__(self, n_filters=None, random_state=None):
        self.n_filters = n_filters
        self.random_state = random_state

    def fit(self, X, y=None):
        self._validate_params()
        X = validate_data(self, X, dtype=np.float64)
        count = self._count(len(X), len(X))
        chosen = np.sort(np.random.default_rng(self.random_state).choice(len(X), count, replace=False))
        return self._set_filters(X[chosen])


class KMeansFilters(FilterBankMixin, BaseEstimator):
    """Unit-length centroids of k-means (``n_filters`` clusters, fewer than the patches; None: a tenth
    of them) on the unit-length patches (Coates and Ng, 2011)."""

    _parameter_constraints = {"n_filters": [POSITIVE_INT, None], "max_iter": [POSITIVE_INT],
                              "random_state": RANDOM_STATE}

    def __init__(self, n_filters=None, max_iter=100, random_state=None):
        self.n_filters = n_filters
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y=None):
        self._validate_params()
        X = validate_data(self, X, dtype=np.float64)
        if len(X) < 2:
            raise ValueError("k-means filters need at least 2 patches; got 1 sample")
        count = max(1, len(X) // 10) if self.n_filters is None else self._count(len(X), len(X) - 1)
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        unit = X / np.where(norms > 0, norms, 1.0)
        kmeans = KMeans(count, n_init=1, max_iter=self.max_iter, random_state=self.random_state).fit(unit)
        self.n_iter_ = kmeans.n_iter_
        return self._set_filters(kmeans.cluster_centers_)


class GaussianFilters(FilterBankMixin, BaseEstimator):
    """``n_filters`` (None: as many as patches) unit-length directions drawn from ``N(0, I_d)``."""

    _parameter_constraints = {"n_filters": [POSITIVE_INT, None], "random_state": RANDOM_STATE}

    def __init__(self, n_filters=None, random_state=None):
        self.n_filters = n_filters
        self.random_state = random_state

    def fit(self, X, y=None):
        self._validate_params()
        X = validate_data(self, X, dtype=np.float64)
        count = self._count(len(X), np.iinfo(np.int32).max)
        rng = np.random.default_rng(self.random_state)
        return self._set_filters(rng.normal(size=(count, X.shape[1])))
