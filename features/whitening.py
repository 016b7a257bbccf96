"""Patch normalisation and ZCA whitening (Algorithm 2, steps 3-4)."""

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from .patches import normalize_patches


class ZCAWhitener(TransformerMixin, BaseEstimator):
    """ZCA whitening ``x -> (x - mean) V (D + eps I)^(-1/2) V^T``, fitted on a patch matrix.

    ``[V, D] = eig(cov(X))``. With ``eps = 0`` the fitted patches get identity covariance; ``eps > 0``
    damps the directions of small variance (eigenvalue ``D_k`` becomes ``D_k / (D_k + eps)``).

    Parameters
    ----------
    eps : float >= 0
        Regulariser added to the eigenvalues, in the units of the patch covariance (normalised patches
        have a per-coordinate variance near 1).

    Attributes
    ----------
    mean_ : (d,) coordinate means of the fitted patches
    whitening_ : (d, d) symmetric matrix ``V (D + eps)^(-1/2) V^T``
    colouring_ : (d, d) its inverse ``V (D + eps)^(1/2) V^T``, to show filters in pixel space
    """

    _parameter_constraints = {"eps": [Interval(Real, 0, None, closed="left")]}

    def __init__(self, eps=0.1):
        self.eps = eps

    def fit(self, X, y=None):
        """Fit on patches ``X`` of shape (P, d)."""
        X = validate_data(self, X, dtype=np.float64)
        if self.eps < 0:
            raise ValueError(f"ZCA eps must be >= 0, got {self.eps}")
        self.mean_ = X.mean(axis=0)
        centred = X - self.mean_
        covariance = centred.T @ centred / X.shape[0]
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        eigenvalues = np.clip(eigenvalues, 0.0, None) + self.eps
        if eigenvalues.min() <= 0:
            raise ValueError("the patch covariance is singular and eps = 0: set a positive ZCA eps")
        self.whitening_ = (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
        self.colouring_ = (eigenvectors * np.sqrt(eigenvalues)) @ eigenvectors.T
        return self

    def transform(self, X):
        """Whiten patches ``X`` (P, d) -> (P, d)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return (X - self.mean_) @ self.whitening_


class PatchWhitener(TransformerMixin, BaseEstimator):
    """Per-patch normalisation and ZCA whitening of patches (Algorithm 2, steps 3-4).

    ``transform`` maps raw patches ``p`` (rows of ``X``) to ``zca(normalize(p))``.

    Parameters
    ----------
    eps : float >= 0, normalisation constant, see :func:`features.patches.normalize_patches`
    normalize : bool, normalise each patch (False: use raw patches, e.g. for plain feature vectors)
    zca : bool, ZCA-whiten the normalised patches
    zca_eps : float >= 0, ZCA regulariser (:class:`ZCAWhitener` ``eps``)

    Attributes
    ----------
    zca_ : fitted :class:`ZCAWhitener`, or None when ``zca=False``
    n_features_in_ : int, patch dimension ``d``
    """

    _parameter_constraints = {
        "eps": [Interval(Real, 0, None, closed="left")],
        "normalize": ["boolean"],
        "zca": ["boolean"],
        "zca_eps": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, eps=0.01, normalize=True, zca=True, zca_eps=0.1):
        self.eps = eps
        self.normalize = normalize
        self.zca = zca
        self.zca_eps = zca_eps

    def fit(self, X, y=None):
        """Fit the whitening on raw patches ``X`` (P, d)."""
        if self.eps < 0:
            raise ValueError(f"normalisation eps must be >= 0, got {self.eps}")
        X = validate_data(self, X, dtype=np.float64)
        self.zca_ = ZCAWhitener(self.zca_eps).fit(self._normalized(X)) if self.zca else None
        return self

    def transform(self, X):
        """Normalised (and whitened) patches (P, d) of raw patches ``X`` (P, d)."""
        check_is_fitted(self, "n_features_in_")
        X = self._normalized(validate_data(self, X, dtype=np.float64, reset=False))
        return X if self.zca_ is None else self.zca_.transform(X)

    def fold(self, filters, bias):
        """Responses to filters in the whitened space as one affine map of normalised patches.

        ``zca(q) u + b = (q - mean) W u + b = q (W u) + (b - mean W u)`` for a normalised patch ``q``.

        Parameters
        ----------
        filters : (F, d) filters ``u`` in the whitened patch space; bias : (F,)

        Returns
        -------
        weights (d, F) float64 and offset (F,) float64
        """
        check_is_fitted(self, "n_features_in_")
        weights = np.asarray(filters, dtype=np.float64).T
        offset = np.array(bias, dtype=np.float64)
        if self.zca_ is not None:
            weights = self.zca_.whitening_ @ weights
            offset -= self.zca_.mean_ @ weights
        return weights, offset

    def _normalized(self, X):
        return normalize_patches(X, self.eps) if self.normalize else X
