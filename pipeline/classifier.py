"""The whole Convex-RF model as one scikit-learn classifier."""

import numpy as np
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
    horizontal_flips : bool, fit the output layer on the training images and their left-right mirrors
        (twice the rows, the same labels; the patches and filters come from the images alone). Each image
        and its mirror are held out together where the output layer chooses its penalty.

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
        "horizontal_flips": ["boolean"],
    }

    def __init__(self, features=None, output_layer=None, random_state=None, horizontal_flips=False):
        self.features = features
        self.output_layer = output_layer
        self.random_state = random_state
        self.horizontal_flips = horizontal_flips

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
        train_features = stages.transform("features", self.features_, self.training_images(images))
        output_layer = clone(self.output_layer) if self.output_layer is not None else L1OutputLayer()
        labels, groups = self.training_labels(y)
        self.output_layer_ = stages.fit("output", output_layer, train_features, labels, groups=groups)
        self.classes_ = self.output_layer_.classes_
        self.n_features_in_ = self.features_.n_features_in_
        return self

    def training_images(self, images):
        """The images (N, H, W, C) the output layer is fitted on: ``images``, then with ``horizontal_flips``
        their mirrors (rows ``N + i`` mirror row ``i``; 2N rows)."""
        return np.concatenate([images, images[:, :, ::-1]]) if self.horizontal_flips else images

    def training_labels(self, y):
        """``(labels, groups)`` of the rows of :meth:`training_images`: ``y`` (N,), or ``y`` twice with
        ``groups`` pairing each image with its mirror; groups None without flips."""
        if not self.horizontal_flips:
            return y, None
        return np.concatenate([y, y]), np.tile(np.arange(len(y)), 2)

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
