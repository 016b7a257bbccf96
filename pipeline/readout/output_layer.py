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

from features.parameters import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_INT, StrOptions

from ..class_scores import ClassScoresMixin, check_labels
from ..storage.feature_store import ArrayFeatures, FeatureStore, RowSubset, standardized_columns
from .held_out import check_groups, held_out_split
from .operators import StreamedOperator
from .path import path_table, validated_path
from .penalties import group_norms, penalty_functions, row_duals
from .solve import MODES, PENALIZED_ONLY, PRECISIONS, SOLVERS, solve_standardized
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


def _centred_one_hot(y_index, n_classes):
    """``(Y, frequencies)``: one-hot targets (n, K) of class indices ``y_index`` minus their column means."""
    Y = np.zeros((len(y_index), n_classes))
    Y[np.arange(len(y_index)), y_index] = 1.0
    frequencies = Y.mean(axis=0)
    return Y - frequencies, frequencies


def _stratified_split(y_index, fraction, random_state, groups=None):
    """Sorted (fit rows, held-out rows): ``fraction`` of each class held out, seeded, ``groups`` kept whole
    (:func:`pipeline.readout.held_out.held_out_split`)."""
    try:
        return held_out_split(y_index, fraction, random_state, groups)
    except ValueError as error:
        raise ValueError(f"beta='auto' holds out validation_fraction={fraction} of every class's rows to "
                         f"choose the penalty, which these labels do not allow ({error}): give every class "
                         "more rows, or set beta to a number") from error


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
    beta : float or "auto", penalty (penalised mode); a fraction of ``beta_max_`` if ``relative`` else
        absolute; ``"auto"``: chosen by held-out accuracy along a warm-started path of penalties (see
        ``validation_fraction``), then all rows are fitted at the chosen one
    tau, sigma : float, absolute constraint levels for "lasso" / "bpdn" (``relative`` does not apply)
    group : bool, row-group norm ``sum_f ||W[f, :]||_2`` (True) or l1 over all entries (False)
    relative : bool, see ``beta``
    standardize : bool, scale features to unit training std (they are always centred)
    max_iter : int, SPGL1 iteration limit per solve
    tol : float, SPGL1 optimality tolerance (relative duality gap of each LASSO solve)
    out_of_core : "working_set" | "stream", how features in a
        :class:`pipeline.storage.FeatureStore` are fitted (see :mod:`pipeline.readout.working_set`)
    working_set : int, size of the first (and smallest) working set of the "working_set" strategy;
        in-memory features with more columns than this are fitted by that strategy too (SPGL1 then
        iterates on the set's columns instead of all F, and no float64 copy of B or F x F Gram matrix is made)
    working_set_growth : float >= 1, later working sets hold ``max(working_set, working_set_growth |support|)``
        features (:mod:`pipeline.readout.working_set`)
    warm_start : bool, start from the previous fit's ``coef_`` (same features and classes), e.g. along
        a path of penalties: ``for beta in betas: layer.set_params(beta=beta).fit(B, y)``
    refit : bool, keep the l1 problem's choice of features (the non-zero rows of its solution, or entries
        of a class's column with ``group=False``) but replace their shrunken coefficients by the least
        squares fit on them (the relaxed lasso of Meinshausen 2007, relaxation 0): the l1 penalty selects,
        least squares estimates. ``l1_coef_`` keeps the l1 solution; ``coef_`` is then no longer its
        minimiser, so ``objective`` is larger than the l1 problem's optimum.
    refit_alpha : float >= 0, ``refit``: a ridge penalty ``refit_alpha ||W_S||^2`` on the refit (the
        squared loss over the rows, in units of the standardised features: the Gram matrix's diagonal is the
        number of rows, as for :func:`pipeline.ridge_readout`); 0 is least squares. On the CIFAR-10 config's
        support (8,778 of 12,760 features, 100,000 rows), 100 scored 0.7587 on the held-out rows against
        0.7517 for least squares.
    precision : "auto" | "float32" | "float64", the dtype of SPGL1's products with the compressed problem
        (``"auto"``: float32 from ``tol >= 1e-3``; see :func:`pipeline.readout.solve.solve_standardized`)
    max_rounds : int, most working-set rounds
    rough_beta_rtol : float or None, penalised working-set rounds before the set settles match ``beta``
        to this relative precision (SPGL1's root-find; the penalised-only solvers meet the optimality
        conditions to it; None: to the final precision in every round)
    validation_fraction : float, ``beta="auto"``: the stratified part of the rows held out to score the path
    n_penalties, min_penalty_ratio : ``beta="auto"``: the path aims at ``n_penalties`` penalties from
        ``beta_max`` geometrically down to ``min_penalty_ratio * beta_max`` (:mod:`pipeline.readout.path`)
    patience : int, ``beta="auto"``: stop the path once the penalty has fallen this many steps of its grid
        below the best held-out point's (steps of the penalty, not points), or, below 0.1 beta_max, at a
        held-out accuracy ``significant_drop`` standard errors below the best (:mod:`pipeline.readout.path`)
    significant_drop : float or None, ``beta="auto"``: see ``patience`` (standard errors of the paired
        differences of held-out correctness from the best point's; None: patience alone ends the path)
    random_state : int or None, seeds the held-out split of ``beta="auto"``
    solver : "spgl1" | "newton" | "skglm", SPGL1 (every mode; the penalised one by a root-find along its
        Pareto curve), coordinate descent with Newton steps on the support (penalised mode only,
        :mod:`pipeline.readout.newton`; ``tol`` is then its relative violation of the optimality
        conditions; 9x faster than SPGL1's root-find on MNIST's features) or skglm's coordinate descent
        (penalised mode only, :mod:`pipeline.readout.skglm_solver`), also inside the working sets; with
        ``beta="auto"``, the penalised solvers solve the path's grid of penalties, SPGL1 LASSO problems
    verbose : int, SPGL1 verbosity (0 silent)

    ``fit``, ``decision_function`` and ``predict`` take an in-memory (n, F) array or a complete
    :class:`pipeline.storage.FeatureStore`.

    Attributes
    ----------
    classes_, coef_ (F, K) in the standardised space, intercept_ (K,), mean_ (F,), scale_ (F,),
    beta_ (absolute penalty; the dual norm at the solution in "lasso"/"bpdn" modes),
    tau_ (``Omega(l1_coef_)``), n_iter_ (the solver's iterations over all solves: SPGL1's, Newton's or
    skglm's working-set iterations), beta_max_
    (``Omega*(B_std^T Y_c)``), dual_norm_ (``Omega*(B_std^T R)`` at the solution), n_solves_,
    converged_, n_features_in_, n_rounds_ (working-set rounds; 1 for a direct solve), l1_coef_ (the l1
    solution; the same array as ``coef_`` unless ``refit``), path_ (``beta="auto"``: (points, 9) array, one row
    per solved penalty with the columns :data:`pipeline.readout.path.PATH_COLUMNS`: tau, beta, beta_ratio,
    n_features, score (held-out accuracy), seconds, n_iter, converged, chosen;
    :func:`pipeline.readout.path.path_records` makes dicts of it; else None), beta_ratio_ (the chosen ``beta / beta_max`` of the path's rows, or None).
    """

    _parameter_constraints = {
        "mode": [StrOptions(set(MODES))], "beta": [NON_NEGATIVE, StrOptions({"auto"}), None], "tau": [NON_NEGATIVE, None],
        "sigma": [NON_NEGATIVE, None], "group": ["boolean"], "relative": ["boolean"], "standardize": ["boolean"],
        "max_iter": [POSITIVE_INT], "tol": [POSITIVE], "out_of_core": [StrOptions(set(STRATEGIES))],
        "working_set": [POSITIVE_INT], "working_set_growth": [AT_LEAST_ONE],
        "warm_start": ["boolean"], "refit": ["boolean"], "refit_alpha": [NON_NEGATIVE],
        "precision": [StrOptions(set(PRECISIONS))],
        "max_rounds": [POSITIVE_INT], "rough_beta_rtol": [POSITIVE, None], "validation_fraction": [FRACTION],
        "n_penalties": [POSITIVE_INT], "min_penalty_ratio": [FRACTION], "patience": [POSITIVE_INT],
        "significant_drop": [POSITIVE, None],
        "random_state": ["random_state"], "solver": [StrOptions(set(SOLVERS))], "verbose": ["verbose"],
    }

    def __init__(self, mode="penalized", beta=0.01, tau=None, sigma=None, group=True,
                 relative=True, standardize=True, max_iter=2000, tol=1e-6, out_of_core="working_set",
                 working_set=1024, working_set_growth=1.5, warm_start=False, refit=False, refit_alpha=0.0,
                 precision="auto", max_rounds=20, rough_beta_rtol=0.05, validation_fraction=0.2, n_penalties=16,
                 min_penalty_ratio=1e-3, patience=3, significant_drop=2.0, random_state=0, solver="spgl1", verbose=0):
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
        self.working_set_growth = working_set_growth
        self.warm_start = warm_start
        self.refit = refit
        self.refit_alpha = refit_alpha
        self.precision = precision
        self.max_rounds = max_rounds
        self.rough_beta_rtol = rough_beta_rtol
        self.validation_fraction = validation_fraction
        self.n_penalties = n_penalties
        self.min_penalty_ratio = min_penalty_ratio
        self.patience = patience
        self.significant_drop = significant_drop
        self.random_state = random_state
        self.solver = solver
        self.verbose = verbose

    # -- validation ------------------------------------------------------------------------------

    def check_params(self):
        """Validate the parameters (each against ``_parameter_constraints``, then the level the mode needs)."""
        self._validate_params()
        if self.beta == "auto" and self.mode != "penalized":
            raise ValueError(f"beta='auto' chooses the penalty of mode='penalized', not mode={self.mode!r}")
        if self.solver in PENALIZED_ONLY and self.mode != "penalized":
            raise ValueError(f"solver={self.solver!r} solves mode='penalized' only, not mode={self.mode!r}")
        if self.solver in PENALIZED_ONLY and self.out_of_core == "stream":
            raise ValueError(f"the 'stream' strategy runs SPGL1 on the file: solver={self.solver!r} needs "
                             "out_of_core='working_set'")
        if self.refit_alpha and not self.refit:
            raise ValueError(f"refit_alpha={self.refit_alpha} penalises the refit, which refit=False does not "
                             "make: set refit=True, or leave refit_alpha at 0")
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

    def fit(self, B, y, groups=None):
        """Fit on features ``B`` (n, F) and labels ``y`` (n,); ``groups`` (n,): rows that ``beta='auto'``
        holds out together (an image and its mirror), or None."""
        self.check_params()
        B, y = self._validate(B, y, reset=True)
        if groups is not None:
            groups = check_groups(groups, y)
        y, classes = check_labels(y, len(y), self)
        self.classes_ = classes
        y_index = np.searchsorted(classes, y)
        features, Bs, strategy = self._standardization(B)
        W0 = getattr(self, "l1_coef_", None) if self.warm_start else None
        if W0 is not None and W0.shape != (self.n_features_in_, len(classes)):
            W0 = None
        mode, tau, self.path_, self.beta_ratio_ = self.mode, self.tau, None, None
        beta = None  # from self.beta
        if self.beta == "auto":  # the best held-out point's LASSO level (or relative beta), from its solution
            tau, W0 = self._validated_path(features, Bs, y_index, strategy, groups)
            mode, beta = ("lasso", None) if self.solver == "spgl1" else ("penalized", self.beta_ratio_)
        Y, self.intercept_ = _centred_one_hot(y_index, len(classes))
        res, beta_abs, self.n_rounds_ = self._solve(features, Bs, Y, strategy, mode, tau, W0, beta)
        self.beta_max_ = res.beta_max
        if not res.converged:
            warnings.warn(f"L1OutputLayer ({self.mode}) did not converge: {res.message}",
                          ConvergenceWarning, stacklevel=2)
        self.l1_coef_ = res.W
        self.coef_ = self._least_squares_on_support(features, Y, res.W, res.normal_equations) if self.refit else res.W
        self.tau_ = res.tau
        self.dual_norm_ = res.dual_norm
        self.beta_ = beta_abs if mode == "penalized" else res.dual_norm
        self.n_iter_ = res.n_iter
        self.n_solves_ = res.n_solves
        self.converged_ = res.converged
        return self

    def _standardization(self, B):
        """Set ``mean_`` and ``scale_``; return ``(features, Bs, strategy)``: ``features`` a reader of the
        raw rows (:class:`pipeline.storage.FeatureStore` / :class:`pipeline.storage.ArrayFeatures`), ``Bs``
        the (n, F) float64 standardised copy for a direct in-memory solve (None when the features are
        solved out of core: on disk, or wider than the working set), the out-of-core strategy."""
        if isinstance(B, FeatureStore) or B.shape[1] > self.working_set:
            features = B if isinstance(B, FeatureStore) else ArrayFeatures(B)  # no float64 copy, no F x F Gram
            self.mean_ = features.mean()
            self.scale_ = _scale(features.std(), self.mean_, self.standardize)
            return features, None, self.out_of_core if isinstance(B, FeatureStore) else "working_set"
        Bs, self.mean_, self.scale_ = _standardize(B, self.standardize)
        return ArrayFeatures(B), Bs, None

    def _solve(self, features, Bs, Y, strategy, mode, tau, W0, beta=None, relative=True, gradient=None,
               start_duals=None, start_gram=None):
        """Solve on ``features`` (or their standardised copy ``Bs``) with centred targets ``Y`` (n, K) at
        penalty ``beta`` (``relative`` to beta_max or absolute; None: the ``beta`` and ``relative``
        parameters; ``gradient``: ``B_std^T Y`` (F, K) if known; ``start_duals`` and ``start_gram``: the
        feature duals at ``W0`` and the normal equations of its solve on the same rows, see
        :func:`pipeline.readout.working_set.solve_out_of_core`): ``(SolveResult, absolute beta or None,
        working-set rounds)``."""
        if beta is None:
            beta, relative = self.beta, self.relative
        settings = dict(group=self.group, mode=mode, tau=tau, sigma=self.sigma, tol=float(self.tol),
                        max_iter=self.max_iter, verbose=self.verbose, precision=self.precision, solver=self.solver)
        if Bs is None:
            return solve_out_of_core(features, self.mean_, self.scale_, Y, strategy=strategy,
                                     working_set=self.working_set, growth=self.working_set_growth, beta=beta,
                                     relative=relative, W0=W0,
                                     max_rounds=self.max_rounds, rough_beta_rtol=self.rough_beta_rtol,
                                     gradient=gradient, start_duals=start_duals, start_gram=start_gram,
                                     **settings)
        _, dual, _ = penalty_functions(self.group, Y.shape[1])
        beta_max = dual((Bs.T @ Y if gradient is None else gradient).ravel(), 1)
        beta_abs = None
        if mode == "penalized":
            beta_abs = float(beta) * beta_max if relative else float(beta)
        res = solve_standardized(Bs, Y, beta=beta_abs, beta_max=beta_max, **settings,
                                 x0=None if W0 is None else W0.ravel(),
                                 gram=None if start_gram is None else start_gram.gram)
        return res, beta_abs, 1

    def _validated_path(self, features, Bs, y_index, strategy, groups=None):
        """The penalty chosen on held-out rows (``beta="auto"``, :mod:`pipeline.readout.path`).

        A stratified ``validation_fraction`` of the rows (seeded by ``random_state``, ``groups`` kept whole) is
        held out; the path is solved on the others (their own centred targets, the standardisation of all
        rows: it uses no labels) and each point scored by held-out accuracy, after the least-squares refit
        if ``refit``. Sets ``path_`` (one dict per point) and ``beta_ratio_`` (the chosen ``beta /
        beta_max``); returns the chosen LASSO level ``tau`` and its (F, K) solution.
        """
        fit_rows, held_out = _stratified_split(y_index, self.validation_fraction, self.random_state, groups)
        fit_view, held_out_view = RowSubset(features, fit_rows), RowSubset(features, held_out)
        fit_Bs = None if Bs is None else Bs[fit_view.rows]
        Y, intercept = _centred_one_hot(y_index[fit_view.rows], len(self.classes_))
        gradient = np.reshape(fit_Bs.T @ Y if fit_Bs is not None else
                              StreamedOperator(fit_view, self.mean_, self.scale_, Y.shape[1]).rmatvec(Y.ravel()),
                              (-1, Y.shape[1]))  # once for every solve of the path
        duals = row_duals(gradient, self.group)
        top = int(np.argmax(duals))
        first_slope = float(np.sum(standardized_columns(fit_view, [top], self.mean_, self.scale_) ** 2))

        # the last solve's feature duals (the next point's first working set, strong-rule-like) and normal
        # equations (the next point's Gram entries, the refit's system)
        previous = {}

        def solve_at(tau, beta, W0):
            mode, level = ("penalized", None) if self.solver in PENALIZED_ONLY else ("lasso", tau)
            result = self._solve(fit_view, fit_Bs, Y, strategy, mode, level, W0, beta, relative=False,
                                 gradient=gradient, start_duals=previous.get("duals"),
                                 start_gram=previous.get("normal_equations"))[0]  # beta: penalised only
            previous.update(duals=result.feature_duals, normal_equations=result.normal_equations)
            return result

        held_out_scores = StreamedOperator(held_out_view, self.mean_, self.scale_, Y.shape[1])

        def held_out_correct(W):
            if self.refit:
                W = self._least_squares_on_support(fit_view, Y, W, previous["normal_equations"])
            # one pass over the held-out rows' blocks, not an (n_held_out, |support|) float64 copy
            scores = np.reshape(held_out_scores.matvec(W.ravel()), (-1, W.shape[1])) + intercept
            return np.argmax(scores, axis=1) == y_index[held_out_view.rows]

        points, best, W = validated_path(solve_at, held_out_correct, float(duals.max()), first_slope,
                                         n_penalties=self.n_penalties, min_ratio=self.min_penalty_ratio,
                                         patience=self.patience, constrained=self.solver == "spgl1",
                                         significant_drop=self.significant_drop)
        self.path_ = path_table(points, best)
        self.beta_ratio_ = points[best].beta_ratio
        return points[best].tau, W

    def _least_squares_on_support(self, B, Y, W, normal_equations=None):
        """(F, K) least-squares coefficients on the standardised features where ``W`` is non-zero (per
        class column, or the non-zero rows for ``group``), zero elsewhere; minimum-norm if rank deficient;
        with the ridge penalty ``refit_alpha ||W_S||^2`` (the least squares of ``[B_S; sqrt(alpha) I]``).

        ``normal_equations``: those of the solve that gave ``W`` (same rows, same ``Y``), if it formed them:
        a support inside their set is solved from its Gram matrix by Cholesky (``|S|^3 / 3`` flops instead
        of the ``n |S|^2`` of an SVD least squares, and no pass over the features), unless it is badly
        conditioned (:data:`pipeline.readout.gram.MIN_RCOND`: rank deficient, or nearly)."""
        B = ArrayFeatures(B) if isinstance(B, np.ndarray) else B
        refitted = np.zeros_like(W)
        supports = [np.flatnonzero(np.any(W != 0, axis=1))] if self.group else [np.flatnonzero(c) for c in W.T]
        columns = [slice(None)] if self.group else range(W.shape[1])
        for support, column in zip(supports, columns):
            if not len(support):
                continue
            solution = (None if normal_equations is None
                        else normal_equations.least_squares(support, self.refit_alpha))
            if solution is None:
                solution = self._ridge_least_squares(standardized_columns(B, support, self.mean_, self.scale_), Y)
            refitted[support, column] = solution[:, column]
        return refitted

    def _ridge_least_squares(self, features, Y):
        """(|S|, K) ``argmin ||features W - Y||^2 + refit_alpha ||W||^2`` for ``features`` (n, |S|), by SVD (the
        minimum-norm solution where ``refit_alpha`` is 0 and ``features`` rank deficient)."""
        if self.refit_alpha:
            features = np.vstack([features, np.sqrt(self.refit_alpha) * np.eye(features.shape[1])])
            Y = np.vstack([Y, np.zeros((features.shape[1], Y.shape[1]))])
        # singular values below eps max(n, |S|) of the largest are rank deficiency (numpy's rule; scipy's
        # default, eps, keeps the rounding of two copies of a feature, a 1e12 coefficient)
        return scipy.linalg.lstsq(features, Y, cond=np.finfo(np.float64).eps * max(features.shape),
                                  lapack_driver="gelsd")[0]

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
