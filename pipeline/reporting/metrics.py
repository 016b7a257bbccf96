"""Classification metrics: accuracy, per-class accuracy and the confusion matrix."""

import numpy as np


def classification_metrics(y_true, y_pred, classes):
    """Metrics of integer predictions.

    Parameters
    ----------
    y_true, y_pred : int arrays (N,), values in ``range(len(classes))``
    classes : sequence of class names

    Returns
    -------
    dict with ``accuracy`` (float), ``per_class_accuracy`` ({name: float, NaN for a class absent from
    ``y_true``}) and ``confusion_matrix`` (K x K nested list, rows = true class, columns = predicted).
    """
    n_classes = len(classes)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (np.asarray(y_true), np.asarray(y_pred)), 1)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(confusion) / support
    return {
        "accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
        "per_class_accuracy": {str(name): float(value) for name, value in zip(classes, per_class)},
        "confusion_matrix": confusion.tolist(),
    }
