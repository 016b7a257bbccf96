"""What the Table-1 models of method.md share: pixel inputs, one-hot targets, and the two-layer ReLU
network with its regularised objective.

A two-layer network maps a row ``a`` (d,) to ``f(a) = sum_j (a^T u_j + b_j)_+ w_j + c`` (K outputs);
with weight decay ``beta/2 (||W||^2 + ||U||^2)`` and rescaled neurons its training objective is

    1/2 ||(A U + b)_+ W + c - Y||_F^2 + beta sum_j ||u_j||_2 ||w_j||_2        (method.md eq. 16)

(:func:`network_objective`; the biases ``b``, ``c`` are not penalised). Every model of this module
family stores its network as ``hidden_weights_`` U (d, m), ``hidden_bias_`` b (m,), ``output_weights_``
W (m, K), ``output_bias_`` c (K,), so one ``decision_function`` serves them all.
"""

import numpy as np
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.validation import check_is_fitted

from features.images import check_images, pixel_scale

from ..class_scores import ClassScoresMixin, check_labels


class PixelClassifierMixin(ClassScoresMixin):
    """Images (or flattened rows) in, pixel vectors to the model, class labels out.

    ``_pixel_rows(X)`` validates images as :func:`features.images.check_images` does and returns them as
    float64 rows (N, H*W*C), uint8 scaled to [0, 1]; ``_one_hot(y)`` sets ``classes_`` and returns the
    one-hot targets (N, K); ``predict`` takes the argmax of the class scores, which subclasses compute
    from pixel rows in ``_scores(rows)``.
    """

    def _pixel_rows(self, X, reset):
        image_shape = getattr(self, "image_shape", None)
        expected = None if reset else self.image_shape_
        images = check_images(X, image_shape, expected, estimator_name=type(self).__name__)
        if reset:
            self.image_shape_ = images.shape[1:]
            self.n_features_in_ = int(np.prod(self.image_shape_))
        return images.reshape(len(images), -1).astype(np.float64) * pixel_scale(images.dtype)

    def _one_hot(self, y, n_samples):
        y, self.classes_ = check_labels(y, n_samples, self)
        one_hot = LabelBinarizer().fit(self.classes_).transform(y).astype(np.float64)
        return np.hstack([1 - one_hot, one_hot]) if len(self.classes_) == 2 else one_hot

    def class_scores(self, X):
        """Network outputs (N, K), one column per class of ``classes_``."""
        check_is_fitted(self, "classes_")
        return self._scores(self._pixel_rows(X, reset=False))



class TwoLayerNetworkMixin(PixelClassifierMixin):
    """Class scores of the fitted network ``hidden_weights_``, ``hidden_bias_``, ``output_weights_``,
    ``output_bias_``, and its objective on the training data in ``objective_``."""

    def _scores(self, rows):
        return network_output(rows, *self.network_)

    @property
    def network_(self):
        """``(U (d, m), b (m,), W (m, K), c (K,))``."""
        return self.hidden_weights_, self.hidden_bias_, self.output_weights_, self.output_bias_

    @property
    def n_neurons_(self):
        """Hidden neurons with a non-zero output weight."""
        return int(np.count_nonzero(np.any(self.output_weights_ != 0, axis=1)))


def hidden_layer(rows, hidden_weights, hidden_bias):
    """ReLU activations ``(A U + b)_+`` (N, m) of rows ``A`` (N, d)."""
    return np.maximum(rows @ hidden_weights + hidden_bias, 0.0)


def network_output(rows, hidden_weights, hidden_bias, output_weights, output_bias):
    """Outputs ``(A U + b)_+ W + c`` (N, K) of the two-layer network."""
    return hidden_layer(rows, hidden_weights, hidden_bias) @ output_weights + output_bias


def network_objective(rows, targets, beta, hidden_weights, hidden_bias, output_weights, output_bias):
    """The regularised training objective (method.md eq. 16), in squared target units:
    ``1/2 ||f(A) - Y||_F^2 + beta sum_j ||u_j|| ||w_j||`` (the minimum over rescalings of weight decay)."""
    residual = network_output(rows, hidden_weights, hidden_bias, output_weights, output_bias) - targets
    penalty = np.linalg.norm(hidden_weights, axis=0) @ np.linalg.norm(output_weights, axis=1)
    return float(0.5 * np.sum(residual ** 2) + beta * penalty)
