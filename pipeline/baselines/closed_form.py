"""The closed-form two-layer network for whitened data (method.md section 4; Theorems 9 and 15).

If the training rows are whitened, ``A A^T = I_n`` (so ``n <= d`` and ``A^+ = A^T``), the regularised
problem (method.md eq. 16) has known optimal networks, with no training loop:

* one-hot targets ``Y`` (Theorem 15): for each class ``k`` with ``beta < ||A^+ y_k|| = sqrt(n_k)`` one
  neuron ``u_k = A^+ y_k / ||A^+ y_k||`` with output weight ``(sqrt(n_k) - beta) e_k``;
* a scalar target ``y`` (Theorem 9): the neurons ``A^+ (y)_+ / ||A^+ (y)_+||`` and
  ``A^+ (-y)_+ / ||A^+ (-y)_+||`` with weights ``||A^+ (y)_+|| - beta`` and ``-(||A^+ (-y)_+|| - beta)``.

:class:`SampleWhitener` whitens with a linear map of the pixels, so the network folds back into an
ordinary ReLU network on raw pixels that also applies to new images.
"""

import numpy as np
from sklearn.base import BaseEstimator

from features.parameters import IMAGE_SHAPE, NON_NEGATIVE

from .two_layer import TwoLayerNetworkMixin, network_objective


class WhiteningError(ValueError):
    """The training rows cannot be whitened to ``A A^T = I`` (more rows than their rank)."""


class SampleWhitener:
    """The linear map ``M = V S^-1 V^T`` (d, d) with ``A = U S V^T`` (thin SVD of the n <= d training
    rows), so that ``(A M)(A M)^T = U U^T = I_n``; it needs ``A`` of full row rank.

    Attributes: ``components`` V (d, n), ``scales`` S (n,).
    """

    def __init__(self, rows, rank_tol=1e-8):
        n_samples, n_pixels = rows.shape
        if n_samples > n_pixels:
            raise WhiteningError(f"whitening needs at most as many samples as pixels (n <= d); got {n_samples} "
                             f"samples of {n_pixels} pixels: subsample the training set (data.n_train)")
        _, self.scales, components_t = np.linalg.svd(rows, full_matrices=False)
        rank = int(np.sum(self.scales > rank_tol * self.scales[0]))
        if rank < n_samples:
            raise WhiteningError(f"the {n_samples} training rows span only {rank} dimensions, so they cannot be "
                             f"whitened to A A^T = I: use at most {rank} samples (data.n_train) or drop duplicates")
        self.components = components_t.T

    def transform(self, rows):
        """Whitened rows ``A M`` (N, d) of rows ``A`` (N, d)."""
        return ((rows @ self.components) / self.scales) @ self.components.T

    def pull_back(self, weights):
        """Weights (d, m) on raw rows that act like ``weights`` on whitened rows: ``M weights``."""
        return self.components @ ((self.components.T @ weights) / self.scales[:, None])


def one_hot_closed_form(whitened_rows, one_hot, beta):
    """Theorem 15. Returns hidden weights U (d, m) and output weights W (m, K), one neuron per class
    ``k`` with ``beta < ||A^+ y_k||`` (m <= K), for whitened rows (n, d) and one-hot targets (n, K)."""
    directions = whitened_rows.T @ one_hot              # A^+ y_k = A^T y_k for whitened rows
    norms = np.linalg.norm(directions, axis=0)
    active = np.flatnonzero(norms > beta)
    output = np.zeros((len(active), one_hot.shape[1]))
    output[np.arange(len(active)), active] = norms[active] - beta
    return directions[:, active] / norms[active], output


def scalar_closed_form(whitened_rows, targets, beta):
    """Theorem 9. Returns U (d, m) and output weights w (m,), m <= 2, for whitened rows (n, d) and a
    scalar target (n,): one neuron for the positive part of the target and one for the negative part."""
    neurons, weights = [], []
    for sign in (1.0, -1.0):
        direction = whitened_rows.T @ np.maximum(sign * targets, 0.0)
        norm = np.linalg.norm(direction)
        if norm > beta:
            neurons.append(direction / norm)
            weights.append(sign * (norm - beta))
    return np.reshape(np.transpose(neurons), (whitened_rows.shape[1], len(neurons))), np.asarray(weights)


class ClosedFormNetwork(TwoLayerNetworkMixin, BaseEstimator):
    """The optimal two-layer ReLU network of Theorem 15 on whitened pixels, in closed form.

    Parameters
    ----------
    beta : float >= 0, the weight-decay penalty (absolute, in target units: a class keeps its neuron
        while ``beta < sqrt(n_k)``)
    image_shape : None, (H, W) or (H, W, C), for flattened images

    Attributes
    ----------
    hidden_weights_ (d, m), hidden_bias_ (m,), output_weights_ (m, K), output_bias_ (K,): the network on raw
    pixels (the whitening folded into the hidden weights); objective_ : the objective (eq. 16) on the
    whitened training rows; classes_ : (K,) labels.

    Needs ``n <= rank`` of the training pixels (e.g. at most ~700 MNIST images).
    """

    _parameter_constraints = {"beta": [NON_NEGATIVE], "image_shape": IMAGE_SHAPE}

    def __init__(self, beta=1.0, image_shape=None):
        self.beta = beta
        self.image_shape = image_shape

    def fit(self, X, y):
        """Fit on images ``X`` (N, ...) and labels ``y`` (N,), N at most the pixels' rank."""
        self._validate_params()
        rows = self._pixel_rows(X, reset=True)
        targets = self._one_hot(y, len(rows))
        whitener = SampleWhitener(rows)
        whitened = whitener.transform(rows)
        hidden, output = one_hot_closed_form(whitened, targets, self.beta)
        zeros = np.zeros(hidden.shape[1]), np.zeros(targets.shape[1])
        self.objective_ = network_objective(whitened, targets, self.beta, hidden, zeros[0], output, zeros[1])
        self.hidden_weights_, self.hidden_bias_ = whitener.pull_back(hidden), zeros[0]
        self.output_weights_, self.output_bias_ = output, zeros[1]
        return self
