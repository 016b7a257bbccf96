"""Extreme-point filters (method.md eq. 10; Algorithm 2, steps 5-6).

For each patch ``a_i`` the filter is ``u_i = r_i / ||r_i||`` with ``r_i`` the residual of ``a_i`` from
the convex hull of the other patches. Each residual is a least-squares problem on the probability
simplex over ``P - 1`` patches, solved exactly by Wolfe's algorithm (:mod:`features.simplex_qp`) on a
working set and *certified against all patches*:

1. the working set of patch ``i`` starts as the ``n_candidates`` patches most aligned with it;
2. solve on the working set (parallel over patches, joblib);
3. certify: ``lambda`` is optimal over all patches iff ``r_i^T (a_j - x_i) <= 0`` for every ``j != i``
   (``x_i = a_i - r_i``); the scores for all pairs are one blocked GEMM, never a ``P x P`` matrix;
4. add the most violating patches to the working sets that fail and repeat from 2 for those.

Residuals are summed in extended precision, and patches where Wolfe stops at float64 rounding (their
violators are already in the working set) get their weights refined in extended precision: near the hull
of the others ``||r_i|| << ||a_i||`` and float64 alone would floor the certificate at about
``eps (||a_i|| / ||r_i||)^2``.

Every patch carries its certificate, the relative gap ``max_j r_i^T (a_j - x_i) / ||r_i||^2`` (an
upper bound on the relative excess of the objective over its optimum, times two); a ConvergenceWarning
says when ``max_rounds`` ran out before every certificate held. A patch whose residual is at most
``hull_tol * max(||a_i||, mean_j ||a_j||)`` (the mean: a zero patch has no scale of its own) lies
inside the hull of the others: it has no extreme point and is dropped and counted. The test is made on
the final residuals, after the refinement.
"""

import time
import warnings
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import validate_data
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .filter_banks import FilterBankMixin
from .parallel import parallel_backend
from .parameters import N_JOBS, NON_NEGATIVE, POSITIVE_INT, SCHEDULER
from .simplex_qp import min_norm_point

# Local joblib workers are started only when the solves left after the first batch (solved in this process
# and timed) would take longer than this in one process: starting two loky workers costs their imports
# (numpy, scikit-learn, torch through this package), measured at 3-8 s on 2 cores, while the digits job's
# 300 filters take 0.5 s in one process (8.1 s with two fresh workers).
_WORKER_START_SECONDS = 3.0


@dataclass(frozen=True)
class FilterSolution:
    """Extreme-point filters and their certificates.

    Attributes
    ----------
    filters : (F, d) float64, unit-norm filters ``u_i`` of the kept patches
    bias : (F,) float64, Lemma 7's ``b_i = min_{j != i} -a_j^T u_i``
    kept : (F,) int64, indices of the kept patches into the input patch matrix
    residual_norms : (P,) float64, ``||r_i||`` for every patch
    relative_gaps : (P,) float64, certificate per patch (0 where the patch is inside the hull)
    support_sizes : (P,) int64, number of non-zero weights ``lambda_j`` per patch
    rounds : int, certification rounds used
    """

    filters: np.ndarray
    bias: np.ndarray
    kept: np.ndarray
    residual_norms: np.ndarray
    relative_gaps: np.ndarray
    support_sizes: np.ndarray
    rounds: int

    @property
    def n_inside_hull(self):
        return len(self.residual_norms) - len(self.kept)

    @property
    def max_relative_gap(self):
        return float(self.relative_gaps.max(initial=0.0))


def extreme_point_filters(patches, n_candidates=256, hull_tol=1e-6, tol=1e-12, cert_tol=1e-10,
                          violators_per_round=32, max_rounds=50, n_jobs=1, batch_size=256,
                          block_size=1024, scheduler=None, progress=None):
    """Compute the extreme-point filter of every patch against all the others.

    Parameters
    ----------
    patches : (P, d) float array, normalised (and possibly whitened) patches ``a_i``
    n_candidates : int, size of the initial working set (most aligned patches)
    hull_tol : float, a residual norm at most ``hull_tol * max(||a_i||, mean_j ||a_j||)`` means "inside the hull"
    tol : float, Wolfe's stopping tolerance on the working set (relative)
    cert_tol : float, relative gap above which a patch's working set is enlarged
    violators_per_round : int, most violating patches added per failing patch and round
    max_rounds : int, cap on certification rounds (the certificate is reported either way, with a
        ConvergenceWarning when some patch is not certified)
    n_jobs : int, joblib workers for the per-patch solves
    batch_size : int, patches per joblib task
    block_size : int, rows per GEMM block in the candidate search and the certification
    scheduler : None (local joblib workers), a Dask scheduler address or a ``dask.distributed.Client``
    progress : callable(str) or None, receives one line per round; a tqdm bar shows the solves

    Returns
    -------
    FilterSolution
    """
    patches = np.ascontiguousarray(patches, dtype=np.float64)
    n_patches = len(patches)
    if n_patches < 2:
        raise ValueError(f"need at least 2 patches to compute extreme points, got {n_patches}")
    bad_rows = np.count_nonzero(~np.isfinite(patches).all(axis=1))
    if bad_rows:
        raise ValueError(f"patches hold NaN or infinite values (in {bad_rows} rows); extreme points need "
                         "finite patches")
    norms = np.linalg.norm(patches, axis=1)
    hull_tolerances = hull_tol * np.maximum(norms, norms.mean())
    working_sets = list(_most_aligned(patches, min(n_candidates, n_patches - 1), block_size))
    supports = [None] * n_patches
    weights = [None] * n_patches
    residuals = np.empty_like(patches)
    relative_gaps, max_inner = np.zeros(n_patches), np.zeros(n_patches)
    pending = np.arange(n_patches)
    with parallel_backend(scheduler, scatter=[patches]):
        for rounds in range(1, max_rounds + 1):
            _solve_on_working_sets(patches, pending, working_sets, supports, weights, tol, n_jobs,
                                   batch_size, local=scheduler is None, description=f"filters, round {rounds}")
            residuals[pending] = [_residual(patches, i, supports[i], weights[i]) for i in pending]
            inside = np.linalg.norm(residuals, axis=1) <= hull_tolerances
            violators = _update_certificates(patches, residuals, pending, inside, relative_gaps, max_inner,
                                             cert_tol, violators_per_round, block_size)
            # Violators all inside the working set: Wolfe stopped at its float64 rounding level. Iterative
            # refinement in extended precision (residual and weights) then recovers the optimum.
            stalled = np.array([i for i, v in zip(pending, violators)
                                if len(v) and np.isin(v, working_sets[i]).all()], dtype=np.int64)
            for i in stalled:
                weights[i] = _refine(patches, i, supports[i], weights[i])
                residuals[i] = _residual(patches, i, supports[i], weights[i])
            inside = np.linalg.norm(residuals, axis=1) <= hull_tolerances  # refined residuals may reach 0
            violators = dict(zip(pending, violators))
            violators.update(zip(stalled, _update_certificates(
                patches, residuals, stalled, inside, relative_gaps, max_inner, cert_tol, violators_per_round,
                block_size)))
            failing = [(i, new) for i, v in violators.items()
                       if len(new := np.setdiff1d(v, working_sets[i], assume_unique=True))]
            if progress is not None:
                progress(f"round {rounds}: solved {len(pending)} patches, {len(failing)} not yet optimal, "
                         f"worst relative gap {relative_gaps.max():.2e}")
            if not failing:
                break
            for i, new in failing:
                working_sets[i] = np.union1d(working_sets[i], new)
            pending = np.array([i for i, _ in failing])
        else:
            warnings.warn(f"extreme-point filters: {len(failing)} of {n_patches} patches are not certified "
                          f"optimal after max_rounds={max_rounds} rounds (worst relative gap "
                          f"{relative_gaps.max():.2e} > cert_tol={cert_tol:.0e}); raise max_rounds or "
                          "violators_per_round", ConvergenceWarning, stacklevel=2)
    residual_norms = np.linalg.norm(residuals, axis=1)
    kept = np.flatnonzero(~inside)
    relative_gaps[inside] = 0.0
    filters = residuals[kept] / residual_norms[kept, None]
    return FilterSolution(
        filters=filters,
        bias=-max_inner[kept] / residual_norms[kept],
        kept=kept,
        residual_norms=residual_norms,
        relative_gaps=relative_gaps,
        support_sizes=np.array([len(s) for s in supports], dtype=np.int64),
        rounds=rounds,
    )



class ExtremePointFilters(FilterBankMixin, BaseEstimator):
    """The extreme-point filter bank of a patch matrix, as a scikit-learn transformer.

    ``fit`` computes the filter ``u_i`` of every patch against all the others
    (:func:`extreme_point_filters`); ``transform`` gives the ReLU responses ``max(Z U^T + b, 0)`` of
    vectors in the same (normalised, whitened) patch space.

    Parameters
    ----------
    n_candidates, hull_tol, n_jobs, batch_size, scheduler : see :func:`extreme_point_filters`
    use_bias : bool, use Lemma 7's bias ``b_i`` in ``bias_`` (else zeros)
    verbose : int, print one line per certification round when > 0

    Attributes
    ----------
    filters_ : (F, d) unit-norm filters; bias_ : (F,) biases added before the ReLU
    kept_ : (F,) indices of the patches the filters come from
    residual_norms_, relative_gaps_, support_sizes_ : (P,) per-patch solution and certificate
    n_inside_hull_ : int, patches dropped for lying inside the hull of the others
    max_relative_gap_ : float, the worst certificate; n_rounds_ : int, certification rounds
    """

    _parameter_constraints = {"n_candidates": [POSITIVE_INT], "hull_tol": [NON_NEGATIVE], "use_bias": ["boolean"],
                              "n_jobs": N_JOBS, "batch_size": [POSITIVE_INT], "scheduler": SCHEDULER,
                              "verbose": ["verbose"]}

    def __init__(self, n_candidates=256, hull_tol=1e-6, use_bias=False, n_jobs=1, batch_size=256,
                 scheduler=None, verbose=0):
        self.n_candidates = n_candidates
        self.hull_tol = hull_tol
        self.use_bias = use_bias
        self.n_jobs = n_jobs
        self.batch_size = batch_size
        self.scheduler = scheduler
        self.verbose = verbose

    def fit(self, X, y=None):
        """Compute the filters of the patches ``X`` (P, d), P >= 2."""
        self._validate_params()
        X = validate_data(self, X, dtype=np.float64)
        if len(X) < 2:
            raise ValueError("extreme points need at least 2 patches; got 1 sample")
        solution = extreme_point_filters(
            X, n_candidates=self.n_candidates, hull_tol=self.hull_tol, n_jobs=self.n_jobs,
            batch_size=self.batch_size, scheduler=self.scheduler,
            progress=(lambda line: print(f"[filters] {line}", flush=True)) if self.verbose else None)
        self.filters_ = solution.filters
        self.bias_ = solution.bias if self.use_bias else np.zeros(len(solution.kept))
        self.kept_ = solution.kept
        self.residual_norms_ = solution.residual_norms
        self.relative_gaps_ = solution.relative_gaps
        self.support_sizes_ = solution.support_sizes
        self.n_inside_hull_ = solution.n_inside_hull
        self.max_relative_gap_ = solution.max_relative_gap
        self.n_rounds_ = solution.rounds
        return self


def _most_aligned(patches, k, block_size):
    """Sorted indices (P, k) of the ``k`` other patches with the largest ``a_i^T a_j``, by blocked GEMM.

    The support of ``lambda`` is made of patches that face ``a_i``: measured on CIFAR-10 patches, this
    initial working set needs fewer certification rounds than the nearest patches in distance.
    """
    aligned = np.empty((len(patches), k), dtype=np.int64)
    for start in range(0, len(patches), block_size):
        inner = patches[start:start + block_size] @ patches.T
        inner[np.arange(len(inner)), np.arange(start, start + len(inner))] = -np.inf
        aligned[start:start + len(inner)] = np.sort(np.argpartition(-inner, k - 1, axis=1)[:, :k], axis=1)
    return aligned


def _solve_on_working_sets(patches, pending, working_sets, supports, weights, tol, n_jobs, batch_size, local,
                           description):
    """Run Wolfe's algorithm for each pending patch on its working set; updates supports/weights.

    ``local``: joblib's local workers (False: a Dask cluster). There the first batch is solved in this
    process, and the rest go to the ``n_jobs`` workers only when they would take more than
    ``_WORKER_START_SECONDS`` here.
    """
    batches = [pending[s:s + batch_size] for s in range(0, len(pending), batch_size)]
    problems = [[(i, working_sets[i], supports[i], weights[i]) for i in batch] for batch in batches]
    with tqdm(total=len(pending), desc=description, unit="patch", disable=None, leave=False) as bar:
        for batch, batch_results in zip(batches, _batch_solutions(patches, problems, tol, n_jobs, local)):
            for i, (support, weight) in zip(batch, batch_results):
                supports[i], weights[i] = support, weight
            bar.update(len(batch))


def _batch_solutions(patches, problems, tol, n_jobs, local):
    """Yield :func:`_solve_batch`'s result for each batch of ``problems``, in order (see
    :func:`_solve_on_working_sets` for where)."""
    in_process = local
    if local and n_jobs != 1 and len(problems) > 1:  # the first batch here, timed
        start = time.perf_counter()
        yield _solve_batch(patches, problems[0], tol)
        problems = problems[1:]
        in_process = (time.perf_counter() - start) * len(problems) < _WORKER_START_SECONDS
    if in_process:
        yield from (_solve_batch(patches, batch, tol) for batch in problems)
    else:
        yield from Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_solve_batch)(patches, batch, tol) for batch in problems)


def _solve_batch(patches, problems, tol):
    """Solve ``[(i, working_set, previous_support, previous_weights), ...]``; returns global supports.

    The per-patch linear algebra is tiny: one BLAS thread per worker avoids oversubscription.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return [_solve_one(patches, *problem, tol) for problem in problems]


def _solve_one(patches, i, working_set, previous_support, previous_weights, tol):
    """Wolfe's algorithm for patch ``i`` on ``working_set`` (sorted global indices), warm-started."""
    differences = patches[i] - patches[working_set]
    start = None if previous_support is None else np.searchsorted(working_set, previous_support)
    local_support, weight = min_norm_point(differences, start, previous_weights, tol=tol)
    return working_set[local_support], weight


def _residual(patches, i, support, weights):
    """``r_i = a_i - sum_j lambda_j a_j`` (d,), summed in extended precision (``np.longdouble``).

    For a patch near the hull of the others the terms cancel to a small ``r_i``; float64 sums would
    leave an error of ``eps ||a||``, which the certificate, relative to ``||r_i||^2``, would magnify.
    """
    combination = weights.astype(np.longdouble) @ patches[support].astype(np.longdouble)
    return (patches[i].astype(np.longdouble) - combination).astype(np.float64)


def _refine(patches, i, support, weights, steps=2):
    """Iterative refinement of the weights on ``support`` (their sum kept at 1), in ``np.longdouble``.

    Each step solves ``min_delta || r_i - sum_{k>0} delta_k (a_{s_k} - a_{s_0}) ||`` by least squares
    with the extended-precision residual. The weights stay in extended precision: float64 weights
    alone move ``r_i`` by ``eps ||a||``, too much when ``||r_i|| << ||a_i||``. A step that would push a
    weight off the simplex is not taken.
    """
    if len(support) == 1:
        return weights
    points = patches[support]
    differences = (points[1:] - points[0]).T
    weights = weights.astype(np.longdouble)
    for _ in range(steps):
        delta = np.linalg.lstsq(differences, _residual(patches, i, support, weights), rcond=None)[0]
        refined = weights.copy()
        refined[1:] += delta
        refined[0] -= delta.sum()
        if not np.all(refined > 0):
            break
        weights = refined
    return weights


def _update_certificates(patches, residuals, rows, inside, relative_gaps, max_inner, cert_tol,
                         n_violators, block_size):
    """Certify ``rows``: write their gaps and ``max_j r_i^T a_j``; return their violator lists."""
    gaps, best_inner, violators = _certify(patches, residuals, rows, inside[rows], cert_tol, n_violators,
                                           block_size)
    relative_gaps[rows], max_inner[rows] = gaps, best_inner
    return violators


def _certify(patches, residuals, rows, inside, cert_tol, n_violators, block_size):
    """Check the optimality condition of the given patches against all patches.

    Returns
    -------
    relative_gaps : (len(rows),) ``max_{j != i} r_i^T (a_j - x_i) / ||r_i||^2`` (0 inside the hull)
    max_inner : (len(rows),) ``max_{j != i} r_i^T a_j``, for the bias of Lemma 7
    violators : list of int arrays, up to ``n_violators`` most violating ``j`` per row (empty if
        the row is certified or inside the hull)
    """
    gaps = np.zeros(len(rows))
    max_inner = np.zeros(len(rows))
    violators = []
    for start in range(0, len(rows), block_size):
        block = rows[start:start + block_size]
        r = residuals[block]
        inner = r @ patches.T                                   # (b, P): r_i^T a_j
        inner[np.arange(len(block)), block] = -np.inf           # exclude j == i
        own = np.einsum("ij,ij->i", r, patches[block] - r)      # r_i^T x_i
        scores = inner - own[:, None]                           # r_i^T (a_j - x_i)
        squared = np.einsum("ij,ij->i", r, r)
        best = scores.max(axis=1)
        max_inner[start:start + len(block)] = inner.max(axis=1)
        block_gaps = np.where(inside[start:start + len(block)], 0.0,
                              np.maximum(best, 0.0) / np.where(squared > 0, squared, 1.0))
        gaps[start:start + len(block)] = block_gaps
        for row, gap in zip(scores, block_gaps):
            if gap <= cert_tol:
                violators.append(np.empty(0, dtype=np.int64))
                continue
            count = min(n_violators, int(np.count_nonzero(row > 0)))
            top = np.argpartition(row, -count)[-count:]
            violators.append(top[row[top] > 0])
    return gaps, max_inner, violators
