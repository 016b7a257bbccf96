"""The one-layer baseline of method.md's Table 1: least squares on raw pixels with one-hot targets."""

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator

from features.parameters import IMAGE_SHAPE

from .two_layer import PixelClassifierMixin


class LeastSquaresClassifier(PixelClassifierMixin, BaseEstimator):
    """``min_{W, c} ||A W + 1 c^T - Y||_F^2`` on pixel rows ``A`` (N, d) and one-hot ``Y`` (N, K); the
    minimum-norm solution (LAPACK ``gelsd``) where pixels are constant or collinear.

    Parameters
    ----------
    image_shape : None, (H, W) or (H, W, C), for flattened images (see :mod:`features.images`)

    Attributes
    ----------
    coef_ : (d, K) float64; intercept_ : (K,) float64; classes_ : (K,) labels
    objective_ : float, ``1/2 ||A W + c - Y||_F^2`` on the training data
    """

    _parameter_constraints = {"image_shape": IMAGE_SHAPE}

    def __init__(self, image_shape=None):
        self.image_shape = image_shape

    def fit(self, X, y):
        """Fit on images ``X`` (N, ...) and labels ``y`` (N,)."""
        self._validate_params()
        rows = self._pixel_rows(X, reset=True)
        targets = self._one_hot(y, len(rows))
        mean_row, mean_target = rows.mean(axis=0), targets.mean(axis=0)
        self.coef_ = scipy.linalg.lstsq(rows - mean_row, targets - mean_target, lapack_driver="gelsd")[0]
        self.intercept_ = mean_target - mean_row @ self.coef_
        self.objective_ = float(0.5 * np.sum((self._scores(rows) - targets) ** 2))
        return self

    def _scores(self, rows):
        return rows @ self.coef_ + self.intercept_
