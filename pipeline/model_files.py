"""Model files of convexrf's estimators: :func:`save_model` / :func:`load_model` over their allow-list.

The file format and its checks are :mod:`pipeline.storage.model_io`; this module names the classes that
a model file may contain (:data:`REGISTRY`): loading looks classes up there and never imports by name.
"""

from features import (ConvReLUPool, ExtremePointFilters, GaussianFilters, KMeansFilters, PatchWhitener,
                      RandomPatchFilters, ZCAWhitener)

from .baselines import (BackpropNetwork, ClosedFormNetwork, CuttingPlaneNetwork,
                        LeastSquaresClassifier)
from .classifier import ConvexRFClassifier
from .readout import L1OutputLayer
from .storage import model_io

REGISTRY = {cls.__name__: cls for cls in (
    ZCAWhitener, PatchWhitener, ExtremePointFilters, RandomPatchFilters, KMeansFilters, GaussianFilters,
    ConvReLUPool, L1OutputLayer, ConvexRFClassifier, LeastSquaresClassifier, BackpropNetwork,
    CuttingPlaneNetwork, ClosedFormNetwork)}


def save_model(estimator, folder, *, config=None):
    """Save a fitted estimator as ``folder/model.npz`` + ``folder/model.json`` (see
    :func:`pipeline.storage.model_io.save_model`); ``config`` is stored in the manifest."""
    model_io.save_model(estimator, folder, registry=REGISTRY, config=config)


def load_model(folder):
    """The fitted estimator saved in ``folder`` (see :func:`pipeline.storage.model_io.load_model`)."""
    return model_io.load_model(folder, registry=REGISTRY)
