"""Extreme-point filters (eq. 10) against independent references and the optimality condition.

References: Clarabel (an interior-point QP solver, via qpsolvers) on the full simplex QP, and scipy's
NNLS on the augmented system ``[A^T; M 1^T] lambda ~ [a_i; M]``. Tolerances: Clarabel stops at a
relative duality gap of about 1e-8, so objectives are compared to 1e-6 relative, and ours must never
be worse than the reference by more than rounding (it is the exact minimiser).
"""

import warnings

import numpy as np
import pytest
import qpsolvers
import scipy.optimize
import scipy.sparse
from sklearn.exceptions import ConvergenceWarning

from features import extreme_points
from features.extreme_points import extreme_point_filters
from features.patches import normalize_patches
from features.simplex_qp import min_norm_point


def simplex_qp_reference(patches, i):
    """Minimum of ||a_i - sum_{j != i} lambda_j a_j||^2 on the simplex, by Clarabel."""
    others = np.delete(patches, i, axis=0)
    n = len(others)
    solution = qpsolvers.solve_qp(
        scipy.sparse.csc_matrix(others @ others.T), -others @ patches[i],
        A=scipy.sparse.csc_matrix(np.ones((1, n))), b=np.ones(1), lb=np.zeros(n), solver="clarabel")
    return float(np.sum((patches[i] - solution @ others) ** 2))


def nnls_reference(patches, i):
    """The same minimum through NNLS, exactly: with ``y_j = a_i - a_j``,
    ``min_{mu >= 0} ||Y^T mu||^2 + (1^T mu - 1)^2`` is solved by ``mu = t lambda*`` with ``lambda*`` the
    simplex minimiser (for fixed ``lambda`` the best ``t`` gives ``f / (1 + f)``, increasing in ``f``).
    """
    differences = patches[i] - np.delete(patches, i, axis=0)
    system = np.vstack([differences.T, np.ones(len(differences))])
    target = np.append(np.zeros(patches.shape[1]), 1.0)
    solution, _ = scipy.optimize.nnls(system, target, maxiter=50 * len(differences))
    return float(np.sum((solution / solution.sum() @ differences) ** 2))


def random_patches(n, d, seed=0):
    return normalize_patches(np.random.default_rng(seed).random((n, d)) ** 2, eps=0.01)


@pytest.mark.parametrize("n, d, n_candidates", [(60, 8, 10), (150, 12, 20), (40, 30, 200)])
def test_objective_matches_generic_qp_and_nnls(n, d, n_candidates):
    patches = random_patches(n, d)
    solution = extreme_point_filters(patches, n_candidates=n_candidates)
    for i in range(0, n, 7):
        ours = solution.residual_norms[i] ** 2
        clarabel = simplex_qp_reference(patches, i)
        assert ours <= clarabel * (1 + 1e-9) + 1e-12
        assert ours == pytest.approx(clarabel, rel=1e-6, abs=1e-9)
        assert ours == pytest.approx(nnls_reference(patches, i), rel=1e-9, abs=1e-12)


def test_certificate_is_the_optimality_condition_checked_independently():
    patches = random_patches(200, 10, seed=3)
    solution = extreme_point_filters(patches, n_candidates=8)   # small working sets force extra rounds
    assert solution.rounds > 1
    assert solution.max_relative_gap <= 1e-8
    for row, i in enumerate(solution.kept):
        r = solution.filters[row] * solution.residual_norms[i]
        x = patches[i] - r
        others = np.delete(patches, i, axis=0)
        assert np.max((others - x) @ r) <= 1e-8 * (r @ r)


def test_filters_are_unit_norm_and_bias_is_lemma_7():
    patches = random_patches(50, 6, seed=4)
    solution = extreme_point_filters(patches, n_candidates=49)
    np.testing.assert_allclose(np.linalg.norm(solution.filters, axis=1), 1.0, rtol=1e-12)
    for row, i in enumerate(solution.kept):
        others = np.delete(patches, i, axis=0)
        assert solution.bias[row] == pytest.approx(np.min(-others @ solution.filters[row]), rel=1e-10)


def test_two_patches_have_the_closed_form_filter():
    patches = np.array([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
    solution = extreme_point_filters(patches)
    difference = patches[0] - patches[1]
    np.testing.assert_allclose(solution.filters, [difference, -difference] / np.linalg.norm(difference))


def test_patch_inside_the_hull_is_dropped_and_counted():
    rng = np.random.default_rng(5)
    corners = rng.normal(size=(6, 4))
    centre = corners.mean(axis=0, keepdims=True)
    solution = extreme_point_filters(np.vstack([corners, centre]))
    assert solution.n_inside_hull == 1
    np.testing.assert_array_equal(solution.kept, np.arange(6))
    assert solution.residual_norms[6] <= 1e-6 * np.linalg.norm(centre)


def test_duplicate_patches_are_both_inside_the_hull_of_the_others():
    patches = random_patches(20, 5, seed=6)
    patches = np.vstack([patches, patches[:1]])
    solution = extreme_point_filters(patches)
    assert 0 not in solution.kept and 20 not in solution.kept
    assert solution.n_inside_hull == 2


def test_collinear_patches_keep_only_the_two_ends():
    direction = np.array([1.0, -2.0, 0.5])
    patches = np.outer([0.0, 0.3, 0.5, 0.9, 2.0], direction)
    solution = extreme_point_filters(patches)
    np.testing.assert_array_equal(solution.kept, [0, 4])
    np.testing.assert_allclose(solution.filters, np.array([-direction, direction]) / np.linalg.norm(direction))


def test_fewer_patches_than_dimensions_are_all_extreme():
    patches = random_patches(8, 30, seed=7)
    solution = extreme_point_filters(patches)
    assert solution.n_inside_hull == 0
    for i in range(8):
        assert solution.residual_norms[i] ** 2 == pytest.approx(simplex_qp_reference(patches, i), rel=1e-6)


def test_result_is_identical_with_one_or_two_jobs(monkeypatch):
    patches = random_patches(300, 9, seed=8)
    one = extreme_point_filters(patches, n_candidates=12, n_jobs=1, batch_size=64)
    monkeypatch.setattr(extreme_points, "_WORKER_START_SECONDS", 0.0)  # the workers, however small the job
    two = extreme_point_filters(patches, n_candidates=12, n_jobs=2, batch_size=64)
    np.testing.assert_array_equal(one.filters, two.filters)
    np.testing.assert_array_equal(one.kept, two.kept)


def test_a_job_shorter_than_starting_the_workers_is_solved_in_this_process(monkeypatch):
    """The first batch is timed here; the rest stays here when it would take less than starting workers."""
    def no_workers(*args, **kwargs):
        raise AssertionError("joblib workers were started for a job shorter than their start")

    patches = random_patches(300, 9, seed=8)
    monkeypatch.setattr(extreme_points, "Parallel", no_workers)
    here = extreme_point_filters(patches, n_candidates=12, n_jobs=2, batch_size=64)
    monkeypatch.setattr(extreme_points, "_WORKER_START_SECONDS", 0.0)
    with pytest.raises(AssertionError, match="workers were started"):
        extreme_point_filters(patches, n_candidates=12, n_jobs=2, batch_size=64)
    np.testing.assert_array_equal(here.filters, extreme_point_filters(patches, n_candidates=12).filters)


def test_min_norm_point_warm_start_reaches_the_same_optimum():
    points = np.random.default_rng(9).normal(size=(80, 6)) + 1.0
    support, weights = min_norm_point(points)
    warm_support, warm_weights = min_norm_point(points, start=np.arange(5), start_weights=np.full(5, 0.2))
    assert np.sum((weights @ points[support]) ** 2) == pytest.approx(
        np.sum((warm_weights @ points[warm_support]) ** 2), rel=1e-12)
    assert len(support) <= points.shape[1] + 1
    assert np.all(weights > 0) and weights.sum() == pytest.approx(1.0)


def test_single_patch_is_rejected():
    with pytest.raises(ValueError, match="at least 2 patches"):
        extreme_point_filters(np.ones((1, 3)))


def test_dask_cluster_gives_the_same_filters_as_the_local_run():
    distributed = pytest.importorskip("dask.distributed")
    patches = random_patches(300, 9, seed=10)
    local = extreme_point_filters(patches, n_candidates=12, n_jobs=1, batch_size=50)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as tasks:
            remote = extreme_point_filters(patches, n_candidates=12, n_jobs=2, batch_size=50, scheduler=client)
        assert len(tasks.data) >= 6   # the 300 patches went to the cluster in batches of 50
        by_address = extreme_point_filters(patches, n_candidates=12, n_jobs=2, batch_size=50,
                                           scheduler=cluster.scheduler_address)
        assert len(client.scheduler_info()["workers"]) == 2
    for result in (remote, by_address):
        np.testing.assert_array_equal(result.filters, local.filters)
        np.testing.assert_array_equal(result.relative_gaps, local.relative_gaps)


def test_patch_just_outside_a_facet_is_certified_despite_cancellation():
    """r_i is 1e-5 of ||a_i|| and the sum of lambda_j a_j cancels to it: in float64 alone the relative
    certificate stalls near 1e-7 (measured 3.5e-7); extended-precision refinement certifies it."""
    rng = np.random.default_rng(11)
    d = 12
    facet = np.hstack([np.ones((d, 1)), rng.uniform(-1, 1, size=(d, d - 1))])   # on the plane x_1 = 1
    below = np.hstack([rng.uniform(-1, 0.9, size=(200, 1)), rng.uniform(-1, 1, size=(200, d - 1))])
    candidate = facet.mean(axis=0) + 1e-5 * np.eye(d)[0]
    patches = np.vstack([candidate, facet, below])
    solution = extreme_point_filters(patches, n_candidates=30)
    assert 0 in solution.kept
    assert solution.support_sizes[0] == d
    np.testing.assert_allclose(solution.filters[0], np.eye(d)[0], atol=1e-9)
    assert solution.residual_norms[0] == pytest.approx(1e-5, rel=1e-9)
    assert solution.relative_gaps[0] <= 1e-8


ISSUE_PATCHES = np.array([[0.3], [-1.2], [0.7], [2.5], [0.0]])  # d = 1: only -1.2 and 2.5 are extreme


def test_one_dimensional_patches_keep_the_two_ends_with_finite_filters():
    solution = extreme_point_filters(ISSUE_PATCHES)
    np.testing.assert_array_equal(solution.kept, [1, 3])
    np.testing.assert_array_equal(solution.filters, [[-1.0], [1.0]])
    assert solution.n_inside_hull == 3 and np.isfinite(solution.bias).all()


def test_inside_the_hull_is_decided_after_the_refinement():
    # hull_tol=0: only a residual that is exactly 0 is inside; the zero patch's residual is 0 only once refined
    solution = extreme_point_filters(ISSUE_PATCHES, hull_tol=0.0)
    assert np.isfinite(solution.filters).all() and np.isfinite(solution.bias).all()
    assert 4 not in solution.kept and solution.residual_norms[4] == 0.0


def test_a_near_zero_patch_inside_the_hull_is_dropped():
    square = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0], [1e-13, -2e-13]])
    solution = extreme_point_filters(square)
    np.testing.assert_array_equal(solution.kept, [0, 1, 2, 3])
    assert solution.n_inside_hull == 1


def test_non_finite_patches_are_refused():
    for value in (np.nan, np.inf):
        patches = ISSUE_PATCHES.copy()
        patches[2, 0] = value
        with pytest.raises(ValueError, match=r"patches hold NaN or infinite values \(in 1 rows\)"):
            extreme_point_filters(patches)


def test_running_out_of_rounds_warns():
    patches = np.random.default_rng(0).standard_normal((300, 10))
    with pytest.warns(ConvergenceWarning, match=r"not certified optimal after max_rounds=1 rounds"):
        solution = extreme_point_filters(patches, n_candidates=2, max_rounds=1, violators_per_round=1)
    assert solution.max_relative_gap > 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        extreme_point_filters(patches[:40])  # certified: no warning
