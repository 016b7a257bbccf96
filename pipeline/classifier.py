"""The whole Convex-RF model as one scikit-learn classifier."""

from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from features.feature_map import ConvReLUPool
from features.images import check_images
from features.parameters import RANDOM_STATE
from features.stage_protocol import Uncached

from .class_scores import ClassScoresMixin, check_labels
from .readout.output_layer import L1OutputLayer


class ConvexRFClassifier(ClassScoresMixin, BaseEstimator):
    """Extreme-point filters, conv/ReLU/pool features and an l1 output layer (method.md Algorithm 2).

    Parameters
    ----------
    features : :class:`features.feature_map.ConvReLUPool` or None (its defaults): patch sampling,
        whitening, the filter bank and the pooled features; e.g. ``features__n_patches`` in a grid search
    output_layer : :class:`pipeline.L1OutputLayer` or None (its defaults)
    random_state : None or int, seeds the patch sampling in place of ``features.random_state`` when set

    Attributes
    ----------
    features_ : fitted feature transformer; output_layer_ : fitted output layer
    classes_ : (K,) class labels; n_features_in_ : int, pixels per image (``H * W * C``)

    Images are ``(N, H, W[, C])`` arrays or flattened rows with ``features.image_shape`` set, uint8
    (scaled to [0, 1]) or float (see :mod:`features.images`).
    """

    # the exact classes (not any transformer / classifier): a model file may only hold what its loader checks
    _parameter_constraints = {
        "features": [ConvReLUPool, None],
        "output_layer": [L1OutputLayer, None],
        "random_state": RANDOM_STATE,
    }

    def __init__(self, features=None, output_layer=None, random_state=None):
        self.features = features
        self.output_layer = output_layer
        self.random_state = random_state

    def fit(self, X, y, stages=None):
        """Fit on images ``X`` (N, ...) and labels ``y`` (N,).

        ``stages``: a stage runner (:mod:`features.stage_protocol`); the training job passes one that caches.
        """
        self._validate_params()
        stages = Uncached() if stages is None else stages
        features = clone(self.features) if self.features is not None else ConvReLUPool()
        if self.random_state is not None:
            features.set_params(random_state=self.random_state)
        images = check_images(X, features.image_shape)
        y, _ = check_labels(y, len(images), self)
        self.features_ = features.fit(images, stages=stages)
        train_features = stages.transform("features", self.features_, images)
        output_layer = clone(self.output_layer) if self.output_layer is not None else L1OutputLayer()
        self.output_layer_ = stages.fit("output", output_layer, train_features, y)
        self.classes_ = self.output_layer_.classes_
        self.n_features_in_ = self.features_.n_features_in_
        return self

    @property
    def image_shape_(self):
        """(H, W, C) of the training images."""
        return self.features_.image_shape_

    def pooled_features(self, X):
        """Pooled features (N, F * grid**2) of images ``X``: the output layer's input."""
        check_is_fitted(self, "output_layer_")
        return self.features_.transform(X)

    def class_scores(self, X):
        """Output-layer scores (N, K) of every class, also for two classes."""
        features = self.pooled_features(X)  # first: it raises NotFittedError on an unfitted model
        return self.output_layer_.class_scores(features)
