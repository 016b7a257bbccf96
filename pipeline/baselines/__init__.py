"""The paper's other Table-1 models on raw pixels: least squares, backprop, cutting-plane and closed-form networks."""

from .backprop import BackpropNetwork
from .closed_form import ClosedFormNetwork, WhiteningError
from .cutting_plane import CuttingPlaneNetwork
from .least_squares import LeastSquaresClassifier

__all__ = ["BackpropNetwork", "ClosedFormNetwork", "CuttingPlaneNetwork", "LeastSquaresClassifier",
           "WhiteningError"]
