"""The one place that calls spgl1 (0.0.3), and owns its workarounds.

:func:`run_spgl1` silences spgl1's unconditional prints, enlarges its history arrays for long runs, and
returns the dual norm of the final gradient; :func:`lasso_solved` says whether a LASSO solve finished.
"""

import contextlib
import importlib
import io
import logging

import numpy as np
from spgl1 import spgl1

# SPGL1 exit codes (spgl1.spgl1.EXIT_*).
EXIT_ROOT_FOUND = 1
EXIT_BPSOL_FOUND = 2
EXIT_LEAST_SQUARES = 3
EXIT_OPTIMAL = 4
EXIT_LINE_ERROR = 6
EXIT_MESSAGES = {
    1: "found a BPDN root",
    2: "found a basis-pursuit solution",
    3: "found a least-squares solution",
    4: "found a LASSO solution",
    5: "too many iterations",
    6: "line-search error",
    7: "found a sub-optimal BPDN solution",
    8: "too many matrix-vector products",
    9: "active set unchanged",
}
# A line-search failure at a relative gap below this counts as a finished solve (see lasso_solved).
GAP_FLOOR = 1e-7


def exit_message(info):
    """SPGL1's exit status of a solve, in words."""
    return EXIT_MESSAGES.get(info["stat"], str(info["stat"]))


@contextlib.contextmanager
def _quiet(verbose):
    """spgl1 0.0.3 prints "Restoring best iterate" unconditionally and logs line-search warnings."""
    if verbose:
        yield
        return
    log = logging.getLogger("spgl1.spgl1")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def history_size(iter_lim):
    """spgl1 0.0.3 keeps per-iteration histories in arrays grown in blocks of ``_allocSize`` (10^4)
    and indexes one past the end when ``iter_lim >= _allocSize`` iterations are reached
    (IndexError). Make the block larger than ``iter_lim`` for the call."""
    module = importlib.import_module("spgl1.spgl1")
    old = getattr(module, "_allocSize", None)
    if old is None or iter_lim < old:
        yield
        return
    module._allocSize = int(iter_lim) + 1
    try:
        yield
    finally:
        module._allocSize = old


def lasso_solved(info, tol):
    """A LASSO solve is done when SPGL1 met its gap tolerance, or when its line search failed
    (no measurable decrease left: the floating-point floor, seen around relative gaps of 1e-9 when
    ``tol`` is set far below that) at a relative gap within ``max(tol, 1e-7)``."""
    if info["stat"] == EXIT_OPTIMAL:
        return True
    return info["stat"] == EXIT_LINE_ERROR and info["rgap"] <= max(tol, GAP_FLOOR)


def run_spgl1(A, y, tau, sigma, x0, norms, tol, max_iter, verbose):
    """One SPGL1 solve of ``A x ~ y`` (LASSO for ``tau > 0``, BPDN for ``sigma > 0``, BP for both 0).

    ``norms``: ``(primal, dual, project)`` of :func:`pipeline.readout.penalties.penalty_functions`;
    ``tol`` is SPGL1's optimality, basis-pursuit and least-squares tolerance alike. Returns ``x``, the
    residual ``r`` (float64), the dual norm of the final gradient ``A^T r`` and SPGL1's info dict.
    """
    primal, dual, project = norms
    with _quiet(verbose), history_size(max_iter), np.errstate(divide="ignore", invalid="ignore"):
        x, r, g, info = spgl1(
            A, y, tau=tau, sigma=sigma, x0=x0,
            verbosity=min(int(verbose), 2), iter_lim=int(max_iter),
            opt_tol=tol, bp_tol=tol, ls_tol=tol,
            project=project, primal_norm=primal, dual_norm=dual,
        )
    return np.asarray(x, dtype=np.float64), np.asarray(r, dtype=np.float64), dual(g, 1), info
