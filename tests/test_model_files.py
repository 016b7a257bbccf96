"""Tests of the model-file allow-list (pipeline/model_files.py)."""

import inspect

from sklearn.base import BaseEstimator

import features
import pipeline
from pipeline.baselines import BackpropNetwork, ClosedFormNetwork, CuttingPlaneNetwork, LeastSquaresClassifier
from pipeline.model_files import REGISTRY


def test_the_registry_names_every_public_estimator():
    public = [value for module in (features, pipeline) for value in vars(module).values()
              if inspect.isclass(value) and issubclass(value, BaseEstimator)]
    public += [BackpropNetwork, ClosedFormNetwork, CuttingPlaneNetwork, LeastSquaresClassifier]
    assert {cls.__name__: cls for cls in public} == REGISTRY
