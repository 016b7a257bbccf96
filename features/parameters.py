"""Parameter constraints shared by the estimators, in scikit-learn's ``_parameter_constraints`` vocabulary.

Each estimator declares its parameters once, as ``_parameter_constraints`` checked by
``BaseEstimator._validate_params`` in ``fit``; the job configuration (:mod:`pipeline.config`) derives its
types, choices and ranges from the same declarations.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import HasMethods, Interval, RealNotInt, StrOptions

POSITIVE_INT = Interval(Integral, 1, None, closed="left")
NON_NEGATIVE_INT = Interval(Integral, 0, None, closed="left")
NON_NEGATIVE = Interval(Real, 0, None, closed="left")  # finite: scikit-learn's intervals exclude inf and NaN
POSITIVE = Interval(Real, 0, None, closed="neither")
FRACTION = Interval(RealNotInt, 0, 1, closed="neither")
AT_LEAST_ONE = Interval(Real, 1, None, closed="left")  # a factor >= 1
# joblib's worker count: a positive count, or -1, -2, ... (all cores, all but one, ...); None is 1
N_JOBS = [Interval(Integral, None, -1, closed="right"), POSITIVE_INT, None]
# where parallel work runs: None (local), a Dask scheduler address or a dask.distributed.Client
SCHEDULER = [str, HasMethods(["submit", "close"]), None]
DEVICE = [StrOptions({"cpu", "cuda"})]
IMAGE_SHAPE = [tuple, list, None]
RANDOM_STATE = ["random_state", np.random.Generator]

__all__ = ["AT_LEAST_ONE", "DEVICE", "FRACTION", "IMAGE_SHAPE", "NON_NEGATIVE", "NON_NEGATIVE_INT", "N_JOBS", "POSITIVE",
           "POSITIVE_INT", "RANDOM_STATE", "SCHEDULER", "HasMethods", "Interval", "RealNotInt", "StrOptions"]
