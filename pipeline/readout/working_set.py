"""The output-layer problem on many features: a working set solved in memory and certified on all.

Used for features stored on disk (:class:`pipeline.storage.FeatureStore`) and for in-memory features with
more columns than the working set (:class:`pipeline.storage.ArrayFeatures`, always the ``"working_set"`` way).

Two ways, both solving the same problem as the in-memory path (standardised features, centred
one-hot targets, the modes and norms of :mod:`pipeline.readout.solve`):

* ``"stream"``: SPGL1 on a :class:`pipeline.readout.operators.StreamedOperator`, whose products read the file block by block and
  standardise on the fly. Exact, but every SPGL1 iteration reads the whole file twice.
* ``"working_set"``: solve in memory on a working set of features, then certify the solution on all
  features with one streamed pass: ``W`` (zero outside the set) is optimal for the full problem iff
  every feature outside the set has dual value ``Omega*_f(B_f^T R) <= lambda``, the dual norm reached
  on the set (the optimality condition of every mode). While some feature violates it, the next set is
  the solution's support and then the other features with the largest dual values (the violators come
  first), ``max(size, growth |support|)`` in all (``growth = 2``: the rule of Celer, Massias, Gramfort and
  Salmon 2018, for coordinate descent, whose epochs cost ``|set|``; SPGL1's products with the compressed
  set cost ``|set|^2``, so a smaller ``growth`` can pay for its extra rounds), and
  the solve is repeated, warm-started from the solution. The set therefore stays near the support's
  size, however many features the problem has: SPGL1's iterations cost ``|set|^2 K`` and the set's
  columns ``n x |set|`` float64 of memory. The support is kept and at least one violator joins, so
  (for exact solves) the restricted optimum strictly improves from round to round and, while features
  violate, no set repeats. The first set holds the
  ``size`` features with the largest ``Omega*_f(B_f^T Y)`` (the ones that enter first along the
  regularisation path). A set within a factor ``growth`` of all the features is replaced by all of them
  (its next round would hold them all anyway; one round on every feature needs no rough round, in the
  first round as in a later one). In
  penalised mode the rounds match ``lambda = beta`` only to ``rough_beta_rtol`` (5 % by default; fewer
  LASSO solves of the root-find, whose exactness is wasted on a set that will change) until no feature
  violates; then that set is solved at the full tolerance and certified again (more rounds if needed).
  Each round costs two passes over the file (gather the set's columns, certify) instead of two per
  SPGL1 iteration. The Newton solver (:mod:`pipeline.readout.newton`) works on the set's Gram matrix,
  which is carried from round to round (:func:`pipeline.readout.gram.regrown_gram`: only the columns new
  to the set are multiplied), accumulated over row blocks of the features (its rounds never hold the set's
  ``n x |set|`` float64 columns: memory ``|set|^2`` instead, independent of ``n``; the residual and the
  certificate's correlations come from one streamed pass), and its rough rounds meet the optimality
  conditions to ``rough_beta_rtol``.
"""

import dataclasses
import logging

import numpy as np

from ..storage.feature_store import standardized_columns, standardized_row_blocks
from .gram import regrown_gram
from .operators import StreamedOperator
from .penalties import penalty_functions, row_duals
from .root_find import beta_rtol_for
from .solve import SolveResult, solve_l1, solve_standardized

logger = logging.getLogger(__name__)
STRATEGIES = ("working_set", "stream")


def solve_out_of_core(store, mean, scale, Y, *, strategy, working_set, group, mode, beta, relative, tau,
                      sigma, tol, max_iter, verbose=0, W0=None, precision="auto",
                      max_rounds=20, rough_beta_rtol=0.05, solver="spgl1", gradient=None, growth=1.5,
                      start_duals=None, start_gram=None):
    """Solve the output-layer problem on ``store`` (N, F) with centred targets ``Y`` (N, K).

    ``working_set``: size of the first working set (``"working_set"`` strategy). Each round is logged
    (``logging``, INFO) on this module's logger. ``W0`` (F, K): a warm start (e.g. the solution for a
    nearby penalty); its non-zero rows also join the first working set. ``start_duals`` (F,): the dual
    values ``Omega*_f(B_f^T R)`` at ``W0`` (the ``feature_duals`` of the previous solve on the same rows,
    e.g. the previous point of a path): the first set is then chosen by the rule of the later rounds,
    ``W0``'s support and the features with the largest of these values, instead of ``W0``'s support and
    the top ``working_set`` of ``B^T Y``. ``growth``: later sets hold ``max(working_set, growth |support|)``
    features (at least one outside the support). ``max_rounds``: most working-set rounds;
    ``rough_beta_rtol``: in penalised mode, how closely the rounds before the set settles match ``beta``
    (relative; None: as closely as the final round). ``precision`` and ``solver``: see
    :func:`pipeline.readout.solve.solve_standardized` (``"newton"`` and ``"skglm"`` solve the working sets only,
    not ``"stream"``).
    ``gradient``: ``B_std^T Y`` (F, K) if the caller has it (a path of solves on the same rows), else one
    streamed pass computes it. ``start_gram``: the ``normal_equations`` of a previous Newton solve on the
    same rows and targets (a path's previous point), whose Gram entries the first set reuses.
    Returns ``(SolveResult with W of shape (F, K) and R in the original space, absolute beta or None,
    rounds)``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"out-of-core strategy must be one of {STRATEGIES}, got {strategy!r}")
    operator = StreamedOperator(store, mean, scale, Y.shape[1])
    if gradient is None:
        gradient = np.reshape(operator.rmatvec(Y.ravel()), (-1, Y.shape[1]))
    _, dual, _ = penalty_functions(group, Y.shape[1])
    beta_max = dual(gradient.ravel(), 1)
    beta_abs = (float(beta) * beta_max if relative else float(beta)) if mode == "penalized" else None
    if strategy == "stream" and solver != "spgl1":
        raise ValueError(f"the 'stream' strategy runs SPGL1 on the file; solver={solver!r} needs 'working_set'")
    if strategy == "stream":
        result = solve_l1(operator, Y, group=group, mode=mode, beta=beta_abs, tau=tau, sigma=sigma,
                          beta_max=beta_max, tol=tol, max_iter=max_iter, verbose=verbose,
                          x0=None if W0 is None else W0.ravel())
        return result, beta_abs, 1
    inner = dict(group=group, mode=mode, beta=beta_abs, tau=tau, sigma=sigma, beta_max=beta_max, tol=tol,
                 max_iter=max_iter, verbose=verbose, precision=precision, solver=solver)
    return _working_set(store, mean, scale, Y, operator, gradient, (working_set, growth),
                        (W0, start_duals, start_gram), inner, max_rounds, rough_beta_rtol)


def _certificate_slack(tol):
    """Relative slack of the working-set certificate: the dual norm of a LASSO solve at relative gap
    ``tol`` is known to about 15 tol (measured, see :mod:`pipeline.readout.root_find`), and in penalised mode
    to the root-find's tolerance; a violation below that is noise, not a missing feature."""
    return max(beta_rtol_for(tol), 15 * tol)


def _next_working_set(active, W, duals, size, growth):
    """The next round's set (sorted indices) and its warm start: the support of ``W`` (the solution on
    ``active``, shape (|active|, K)), then the other features with the largest ``duals`` (F,),
    ``max(size, growth |support|)`` features in all, at least one of them outside the support."""
    in_support = np.any(W != 0, axis=1)
    support = active[in_support]
    scores = duals.copy()
    scores[support] = -np.inf
    n_others = min(max(size, int(np.ceil(growth * len(support))), len(support) + 1), len(duals)) - len(support)
    grown = np.sort(np.concatenate([support, np.argsort(-scores, kind="stable")[:n_others]]))
    x0 = np.zeros((len(grown), W.shape[1]))
    x0[np.searchsorted(grown, support)] = W[in_support]
    return grown, x0.ravel()


def _covering(active, x0, n_features, k, growth):
    """``(active, x0)``, or all ``n_features`` features (``x0`` zero outside ``active``) when the set is
    within a factor ``growth`` of all of them: its next growth would hold them all, and one round on all
    features needs no certificate and no rough round."""
    if len(active) == n_features or growth * len(active) < n_features:
        return active, x0
    if x0 is None:
        return np.arange(n_features), None
    everything = np.zeros((n_features, k))
    everything[active] = np.reshape(x0, (len(active), k))
    return np.arange(n_features), everything.ravel()


def _first_working_set(gradient, group, size, growth, W0, start_duals):
    """The first round's set (sorted indices) and warm start (or None), see :func:`solve_out_of_core`."""
    if W0 is not None and start_duals is not None:  # W0 is the solution on all features
        return _next_working_set(np.arange(len(gradient)), W0, start_duals, size, growth)
    active = np.sort(np.argsort(-row_duals(gradient, group), kind="stable")[:min(size, len(gradient))])
    if W0 is None:
        return active, None
    active = np.union1d(active, np.flatnonzero(np.any(W0 != 0, axis=1)))
    return active, W0[active].ravel()


def _working_set(store, mean, scale, Y, operator, gradient, sizes, start, inner, max_rounds, rough_beta_rtol):
    """The working-set rounds; ``sizes``: ``(first set's size, growth)``; ``start``: ``(W0, start_duals,
    start_gram)``; ``inner``: the keyword arguments of every in-memory solve."""
    size, growth = sizes
    n_features, k = gradient.shape
    group, tol = inner["group"], inner["tol"]
    W0, start_duals, start_gram = start
    active, x0 = _covering(*_first_working_set(gradient, group, size, growth, W0, start_duals), n_features, k, growth)
    n_iter, n_solves = 0, 0
    # match beta roughly until the set has settled (a set of all features is settled from the start)
    rough = inner["mode"] == "penalized" and rough_beta_rtol is not None and len(active) < n_features
    newton, set_changed, columns = inner["solver"] == "newton", True, None
    # (set, its Gram matrix): the Newton solver's, reused from round to round
    grams = ((np.empty(0, dtype=int), np.empty((0, 0))) if start_gram is None else
             (start_gram.index, start_gram.gram))
    for rounds in range(1, max_rounds + 1):
        if set_changed and newton:  # the Gram matrix from row blocks: no (n, |set|) copy of the columns
            grams = (active, regrown_gram(*grams, active, (block for _, block in
                                                           standardized_row_blocks(store, active, mean, scale))))
        elif set_changed:
            columns = standardized_columns(store, active, mean, scale)  # (n, |set|) float64
        set_changed = False
        result = solve_standardized(columns, Y, **inner, x0=x0, beta_rtol=rough_beta_rtol if rough else None,
                                    **(dict(gram=grams[1], correlation=gradient[active]) if newton else {}))
        n_iter, n_solves = n_iter + result.n_iter, n_solves + result.n_solves
        weights = np.zeros((n_features, k))
        weights[active] = result.W
        if newton:
            residual, correlation = operator.residual_correlation(Y, weights)
        else:
            residual = Y - columns @ result.W
            correlation = np.reshape(operator.rmatvec(residual.ravel()), (n_features, k))
        duals = row_duals(correlation, group)
        outside = duals.copy()
        outside[active] = 0.0
        limit = result.dual_norm * (1 + _certificate_slack(tol))
        violators = np.flatnonzero(outside > limit)
        logger.info("[output] working set round %d%s: %d features, %d outside violate the optimality "
                    "condition (worst %.4f of the dual norm); %d iterations", rounds,
                    " (rough beta)" if rough else "", len(active), len(violators),
                    outside.max(initial=0.0) / max(result.dual_norm, 1e-300), result.n_iter)
        if (not len(violators) and not rough) or rounds == max_rounds:
            break
        if len(violators):
            (active, x0), set_changed, columns = _covering(
                *_next_working_set(active, result.W, duals, size, growth), n_features, k, growth), True, None
            rough = rough and len(active) < n_features  # a set of all features is settled
        else:  # settled at the rough beta: solve the same set at the full tolerance, certify again
            rough, x0 = False, result.W.ravel()
    converged = result.converged and not len(violators) and not rough
    message = (f"{len(violators)} features still violate after {rounds} rounds" if len(violators) else
               f"beta only matched to {rough_beta_rtol:.0%} after {rounds} rounds" if rough else result.message)
    normal_equations = (None if result.normal_equations is None else
                        dataclasses.replace(result.normal_equations, index=active))
    return SolveResult(weights, residual, result.tau, float(duals.max()), inner["beta_max"], n_iter, n_solves,
                       converged, message, duals, normal_equations), inner["beta"], rounds
