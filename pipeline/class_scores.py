"""What every classifier here shares: checked class labels, and ``decision_function`` / ``predict`` from
``class_scores`` (an (N, K) score per class)."""

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d


def check_labels(y, n_samples, estimator):
    """``(y as a 1-D array, its sorted classes)`` for ``n_samples`` samples, at least 2 classes."""
    y = column_or_1d(y, warn=True)
    check_classification_targets(y)
    if len(y) != n_samples:
        raise ValueError(f"X has {n_samples} samples but y has {len(y)} labels; give one label per sample")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"{type(estimator).__name__} needs samples of at least 2 classes; got 1 class "
                         f"({classes[0]})")
    return y, classes


class ClassScoresMixin(ClassifierMixin):
    """``decision_function`` and ``predict`` of a classifier whose ``class_scores(X)`` is (N, K)."""

    def decision_function(self, X):
        """Scores (N, K); for two classes (N,), the second class's score minus the first's (positive:
        ``classes_[1]``)."""
        scores = self.class_scores(X)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X):
        """Predicted class labels (N,): the class of the largest score."""
        scores = self.class_scores(X)  # first: it raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(scores, axis=1)]
