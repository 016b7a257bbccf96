"""How an estimator's ``fit`` hands its expensive steps to a runner that may cache them.

``fit(X, y, stages=...)`` of the composite estimators accepts any object with the two methods of
:class:`Uncached`; the training job passes :class:`pipeline.stages.CachedStages`, which stores each
result under a key of the stage's settings and the keys of the stages before it, so a re-run resumes.
"""


class Uncached:
    """Runs every stage directly (the default for plain ``fit`` calls)."""

    def fit(self, name, estimator, X, y=None, settings=None):
        """Fit ``estimator`` on ``(X, y)`` and return it. ``name`` / ``settings`` identify the stage."""
        return estimator.fit(X) if y is None else estimator.fit(X, y)

    def transform(self, name, estimator, X):
        """Return ``estimator.transform(X)``, an array."""
        return estimator.transform(X)
