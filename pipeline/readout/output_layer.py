"""The l1 output layer as a scikit-learn classifier (method.md section 2, step 8).

:class:`L1OutputLayer` standardises the pooled features, centres one-hot targets and solves
``min_W 1/2 ||B W - Y||_F^2 + beta Omega(W)`` (or its LASSO / BPDN form) with
:func:`pipeline.readout.solve.solve_standardized` for in-memory features, or
:func:`pipeline.readout.working_set.solve_out_of_core` for features on disk or wider than the working set.
"""

import warnings

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from features.parameters import NON_NEGATIVE, POSITIVE, POSITIVE_INT, StrOptions

from ..class_scores import ClassScoresMixin, check_labels
from ..storage.feature_store import ArrayFeatures, FeatureStore, standardized_columns
from .penalties import group_norms, penalty_functions
from .solve import MODES, solve_standardized
from .working_set import STRATEGIES, solve_out_of_core

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sk_validate_data = None

# Rows per block when standardising / scoring, so that temporaries stay at ~32 MiB.
_BLOCK_ELEMENTS = 1 << 22

def _standardize(B, standardize):
    """One float64 copy of B, centred (and scaled to unit std if ``standardize``)."""
    n = B.shape[0]
    mean = np.mean(B, axis=0, dtype=np.float64)
    Bs = np.empty(B.shape, dtype=np.float64)
    step = max(1, _BLOCK_ELEMENTS // max(1, B.shape[1]))
    for i in range(0, n, step):
        np.subtract(B[i:i + step], mean, out=Bs[i:i + step], dtype=np.float64)
    scale = _scale(np.sqrt(np.einsum("ij,ij->j", Bs, Bs) / n), mean, standardize)
    Bs /= scale
    return Bs, mean, scale


def _scale(std, mean, standardize):
    """Per-feature divisors: the std (1 where it is zero up to rounding, as scikit-learn's StandardScaler
    does) if ``standardize``, else ones."""
    if not standardize:
        return np.ones_like(std)
    constant = std <= 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    return np.where(constant, 1.0, std)


class L1OutputLayer(ClassScoresMixin, BaseEstimator):
    """Linear classifier on one-hot targets with an l1 / row-group-l1 penalty, solved by SPGL1.

    Parameters
    ----------
    mode : "penalized" | "lasso" | "bpdn"
        ``min 1/2||BW - Y||^2 + beta Omega(W)``, ``min ||BW - Y|| s.t. Omega(W) <= tau``, or
        ``min Omega(W) s.t. ||BW - Y|| <= sigma`` (B standardised/centred, Y centred one-hot).
    beta : float, penalty (penalised mode); a fraction of ``beta_max_`` if ``relative`` else absolute
    tau, sigma : float, absolute constraint levels for "lasso" / "bpdn" (``relative`` does not apply)
    group : bool, row-group norm ``sum_f ||W[f, :]||_2`` (True) or l1 over all entries (False)
    relative : bool, see ``beta``
    standardize : bool, scale features to unit training std (they are always centred)
    max_iter : int, SPGL1 iteration limit per solve
    tol : float, SPGL1 optimality tolerance (relative duality gap of each LASSO solve)
    out_of_core : "working_set" | "stream", how features in a
        :class:`pipeline.storage.FeatureStore` are fitted (see :mod:`pipeline.readout.working_set`)
    working_set : int, size of the first (and smallest) working set of the "working_set" strategy, which
        then holds ``max(working_set, 2 |support|)`` features; in-memory features with more columns than
        this are fitted by that strategy too (SPGL1 then iterates on the set's columns instead of all F,
        and no float64 copy of B or F x F Gram matrix is made)
    warm_start : bool, start from the previous fit's ``coef_`` (same features and classes), e.g. along
        a path of penalties: ``for beta in betas: layer.set_params(beta=beta).fit(B, y)``
    refit : bool, keep the l1 problem's choice of features (the non-zero rows of its solution, or entries
        of a class's column with ``group=False``) but replace their shrunken coefficients by the least
        squares fit on them (the relaxed lasso of Meinshausen 2007, relaxation 0): the l1 penalty selects,
        least squares estimates. ``l1_coef_`` keeps the l1 solution; ``coef_`` is then no longer its
        minimiser, so ``objective`` is larger than the l1 problem's optimum.
    verbose : int, SPGL1 verbosity (0 silent)

    ``fit``, ``decision_function`` and ``predict`` take an in-memory (n, F) array or a complete
    :class:`pipeline.storage.FeatureStore`.

    Attributes
    ----------
    classes_, coef_ (F, K) in the standardised space, intercept_ (K,), mean_ (F,), scale_ (F,),
    beta_ (absolute penalty; the dual norm at the solution in "lasso"/"bpdn" modes),
    tau_ (``Omega(l1_coef_)``), n_iter_ (SPGL1 iterations, all solves), beta_max_
    (``Omega*(B_std^T Y_c)``), dual_norm_ (``Omega*(B_std^T R)`` at the solution), n_solves_,
    converged_, n_features_in_, n_rounds_ (working-set rounds; 1 for a direct solve), l1_coef_ (the l1
    solution; the same array as ``coef_`` unless ``refit``).
    """

    _parameter_constraints = {
        "mode": [StrOptions(set(MODES))], "beta": [NON_NEGATIVE, None], "tau": [NON_NEGATIVE, None],
        "sigma": [NON_NEGATIVE, None], "group": ["boolean"], "relative": ["boolean"], "standardize": ["boolean"],
        "max_iter": [POSITIVE_INT], "tol": [POSITIVE], "out_of_core": [StrOptions(set(STRATEGIES))],
        "working_set": [POSITIVE_INT], "warm_start": ["boolean"], "refit": ["boolean"], "verbose": ["verbose"],
    }

    def __init__(self, mode="penalized", beta=0.01, tau=None, sigma=None, group=True,
                 relative=True, standardize=True, max_iter=2000, tol=1e-6, out_of_core="working_set",
                 working_set=1024, warm_start=False, refit=False, verbose=0):
        self.mode = mode
        self.beta = beta
        self.tau = tau
        self.sigma = sigma
        self.group = group
        self.relative = relative
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.out_of_core = out_of_core
        self.working_set = working_set
        self.warm_start = warm_start
        self.refit = refit
        self.verbose = verbose

    # -- validation ------------------------------------------------------------------------------

    def check_params(self):
        """Validate the parameters (each against ``_parameter_constraints``, then the level the mode needs)."""
        self._validate_params()
        needed = {"penalized": "beta", "lasso": "tau", "bpdn": "sigma"}[self.mode]
        if getattr(self, needed) is None:
            raise ValueError(f"mode={self.mode!r} needs {needed}")

    def _validate(self, B, y="no_validation", reset=False):
        if isinstance(B, FeatureStore):
            return self._validate_store(B, y, reset)
        # dense float32/float64 only (no copy for either), finite values (scikit-learn's messages:
        # "Input X contains NaN / infinity", "inconsistent numbers of samples", "requires y")
        kwargs = dict(y=y, dtype=(np.float64, np.float32), reset=reset)
        if _sk_validate_data is not None:
            return _sk_validate_data(self, B, **kwargs)
        return self._validate_data(B, **kwargs)  # pragma: no cover - scikit-learn < 1.6

    def _validate_store(self, store, y, reset):
        if not store.complete:
            raise ValueError(f"the feature store {store.path} is incomplete: finish computing it first")
        n_rows, n_features = store.shape
        if reset:
            self.n_features_in_ = n_features
        elif n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but L1OutputLayer is expecting "
                             f"{self.n_features_in_} features as input.")
        if isinstance(y, str) and y == "no_validation":
            return store
        y = np.asarray(y)
        if y.shape != (n_rows,):
            raise ValueError(f"y must have shape ({n_rows},) like the feature store, got {y.shape}")
        return store, y

    # -- fit / predict ---------------------------------------------------------------------------

    def fit(self, B, y):
        self.check_params()
        B, y = self._validate(B, y, reset=True)
        y, classes = check_labels(y, len(y), self)
        y_index = np.searchsorted(classes, y)
        Y = np.zeros((len(y_index), len(classes)))
        Y[np.arange(len(y_index)), y_index] = 1.0
        self.intercept_ = Y.mean(axis=0)
        Y -= self.intercept_
        settings = dict(group=self.group, mode=self.mode, tau=self.tau, sigma=self.sigma, tol=float(self.tol),
                        max_iter=self.max_iter, verbose=self.verbose)
        W0 = getattr(self, "l1_coef_", None) if self.warm_start else None
        if W0 is not None and W0.shape != (self.n_features_in_, len(classes)):
            W0 = None
        strategy = self.out_of_core
        if not isinstance(B, FeatureStore) and B.shape[1] > self.working_set:
            B, strategy = ArrayFeatures(B), "working_set"  # no float64 copy of B, no F x F Gram matrix
        if isinstance(B, (FeatureStore, ArrayFeatures)):
            self.mean_ = B.mean()
            self.scale_ = _scale(B.std(), self.mean_, self.standardize)
            res, beta_abs, self.n_rounds_ = solve_out_of_core(
                B, self.mean_, self.scale_, Y, strategy=strategy, working_set=self.working_set,
                beta=self.beta, relative=self.relative, W0=W0, **settings)
        else:
            Bs, self.mean_, self.scale_ = _standardize(B, self.standardize)
            _, dual, _ = penalty_functions(self.group, len(classes))
            beta_max = dual((Bs.T @ Y).ravel(), 1)
            beta_abs = None
            if self.mode == "penalized":
                beta_abs = float(self.beta) * beta_max if self.relative else float(self.beta)
            res = solve_standardized(Bs, Y, beta=beta_abs, beta_max=beta_max, **settings,
                                     x0=None if W0 is None else W0.ravel())
            self.n_rounds_ = 1
        self.beta_max_ = res.beta_max
        if not res.converged:
            warnings.warn(f"L1OutputLayer ({self.mode}) did not converge: {res.message}",
                          ConvergenceWarning, stacklevel=2)
        self.classes_ = classes
        self.l1_coef_ = res.W
        self.coef_ = self._least_squares_on_support(B, Y, res.W) if self.refit else res.W
        self.tau_ = res.tau
        self.dual_norm_ = res.dual_norm
        self.beta_ = beta_abs if self.mode == "penalized" else res.dual_norm
        self.n_iter_ = res.n_iter
        self.n_solves_ = res.n_solves
        self.converged_ = res.converged
        return self

    def _least_squares_on_support(self, B, Y, W):
        """(F, K) least-squares coefficients on the standardised features where ``W`` is non-zero (per
        class column, or the non-zero rows for ``group``), zero elsewhere; minimum-norm if rank deficient."""
        B = ArrayFeatures(B) if isinstance(B, np.ndarray) else B
        refitted = np.zeros_like(W)
        supports = [np.flatnonzero(np.any(W != 0, axis=1))] if self.group else [np.flatnonzero(c) for c in W.T]
        columns = [slice(None)] if self.group else range(W.shape[1])
        for support, column in zip(supports, columns):
            if not len(support):
                continue
            features = standardized_columns(B, support, self.mean_, self.scale_)
            refitted[support, column] = scipy.linalg.lstsq(features, Y[:, column], lapack_driver="gelsd")[0]
        return refitted

    def class_scores(self, B):
        """(n, K) scores of every class, ``((B - mean_) / scale_) coef_ + intercept_``."""
        check_is_fitted(self, "coef_")
        B = self._validate(B)
        blocks = (B.row_blocks(dtype=np.float64) if isinstance(B, FeatureStore) else
                  ((i, B[i:i + step]) for step in [max(1, _BLOCK_ELEMENTS // max(1, B.shape[1]))]
                   for i in range(0, B.shape[0], step)))
        out = np.empty((len(B), self.coef_.shape[1]))
        for start, rows in blocks:
            block = np.subtract(rows, self.mean_, dtype=np.float64)
            block /= self.scale_
            np.matmul(block, self.coef_, out=out[start:start + len(block)])
        out += self.intercept_
        return out

    def objective(self, B, y):
        """``1/2 ||Y - scores||_F^2 + beta_ Omega(coef_)`` with ``Y`` one-hot.

        On the training data this is ``1/2 ||B_std W - Y_c||^2 + beta Omega(W)``, the problem fit
        solved (the intercept is the training class frequencies).
        """
        scores = self.class_scores(B)
        y = np.asarray(y)
        if y.shape != (scores.shape[0],):
            raise ValueError(f"y must have shape ({scores.shape[0]},), got {y.shape}")
        index = np.searchsorted(self.classes_, y)
        index = np.minimum(index, len(self.classes_) - 1)
        if not np.array_equal(self.classes_[index], y):
            raise ValueError("y contains labels not seen in fit")
        scores[np.arange(len(y)), index] -= 1.0
        omega, _ = group_norms(self.coef_, self.group)
        return 0.5 * float(np.einsum("ij,ij->", scores, scores)) + self.beta_ * omega
