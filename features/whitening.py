"""ZCA whitening of normalised patches (Algorithm 2, step 4)."""

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data


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
