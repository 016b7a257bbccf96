"""How an estimator's ``fit`` hands its expensive steps to a runner that may cache them.

``fit(X, y, stages=...)`` of the composite estimators accepts any object with the two methods of
:class:`Uncached`; the training job passes :class:`pipeline.cached_stages.CachedStages`, which stores each
result under a key of the stage's name, its estimator (settings and fitted state) and its inputs, so a
re-run resumes and a change of settings or data recomputes what depends on it.
"""


class Uncached:
    """Runs every stage directly (the default for plain ``fit`` calls)."""

    def fit(self, name, estimator, X, y=None, **fit_params):
        """Fit ``estimator`` on ``(X, y)`` (and ``fit_params``, e.g. ``groups``) and return it; ``name``
        names the stage."""
        return estimator.fit(X, **fit_params) if y is None else estimator.fit(X, y, **fit_params)

    def transform(self, name, estimator, X):
        """Return ``estimator.transform(X)``, an array."""
        return estimator.transform(X)
