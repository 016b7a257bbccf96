"""The validated penalty path (pipeline/readout/path.py) and L1OutputLayer(beta="auto")."""

import numpy as np
import pytest

from pipeline import L1OutputLayer
from pipeline.readout.output_layer import _stratified_split
from pipeline.readout.path import next_tau, path_records, penalty_grid, significantly_worse, validated_path
from pipeline.readout.solve import SolveResult, solve_standardized
from pipeline.storage import ArrayFeatures, FeatureStore, RowSubset


def classes_on_a_few_features(n=240, n_features=40, seed=0):
    """4 classes whose means differ on 5 of ``n_features`` Gaussian features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    means = np.zeros((4, n_features))
    means[np.arange(4), [1, 6, 11, 17]] = 1.5
    means[:, 23] = [1.0, -1.0, 1.0, -1.0]
    return means[y] + rng.standard_normal((n, n_features)), y


def test_penalty_grid_is_geometric_and_ends_at_the_smallest_ratio():
    grid = penalty_grid(4, 1e-2)
    assert grid == pytest.approx([10 ** -0.5, 1e-1, 10 ** -1.5, 1e-2])


def test_next_tau_follows_the_first_piece_then_bounded_secants():
    assert next_tau(5.0, [], 10.0, first_slope=2.0) == pytest.approx(2.5)
    # a power law lambda = 10 tau^-1 through two points is followed exactly
    assert next_tau(2.5, [(1.0, 10.0), (2.0, 5.0)], 20.0, 1.0) == pytest.approx(4.0)
    # steps are kept within [1.05, 2] times the last tau
    assert next_tau(0.01, [(1.0, 10.0), (2.0, 5.0)], 20.0, 1.0) == pytest.approx(4.0)
    assert next_tau(4.99, [(1.0, 10.0), (2.0, 5.0)], 20.0, 1.0) == pytest.approx(2.1)


@pytest.mark.parametrize("refit", [False, True])
def test_auto_picks_the_penalty_a_brute_force_grid_picks(refit):
    """Cold penalised solves at each of the path's penalties, on the same fit rows (standardised with the
    statistics of all rows, as the path is) and scored on the same held-out rows, score as the
    warm-started path did, and their best (the first, largest penalty, on ties) is the path's choice."""
    B, y = classes_on_a_few_features(seed=4)
    auto = L1OutputLayer(beta="auto", refit=refit, tol=1e-9, max_iter=100000, patience=50,
                         significant_drop=None).fit(B, y)
    assert len(path_records(auto.path_)) >= 8
    fit_rows, held_out = _stratified_split(y, auto.validation_fraction, auto.random_state)
    Bs = (B - auto.mean_) / auto.scale_
    Y = (y[fit_rows, None] == np.arange(4)).astype(float)
    intercept = Y.mean(axis=0)
    Y -= intercept
    scores = []
    for point in path_records(auto.path_):
        W = solve_standardized(Bs[fit_rows], Y, group=True, mode="penalized", beta=point["beta"], tau=None,
                               sigma=None, beta_max=None, tol=1e-10, max_iter=100000, precision="float64").W
        support = np.flatnonzero(np.any(W != 0, axis=1))
        if refit:
            W[support] = np.linalg.lstsq(Bs[np.ix_(fit_rows, support)], Y, rcond=None)[0]
        predicted = np.argmax(Bs[held_out] @ W + intercept, axis=1)
        scores.append(np.mean(predicted == y[held_out]))
    assert scores == pytest.approx([point["score"] for point in path_records(auto.path_)], abs=1.5 / len(held_out))
    chosen = [point["chosen"] for point in path_records(auto.path_)]
    assert sum(chosen) == 1 and chosen[int(np.argmax(scores))]
    assert auto.beta_ratio_ == pytest.approx(path_records(auto.path_)[int(np.argmax(scores))]["beta_ratio"])


def test_auto_stops_when_held_out_accuracy_stops_improving():
    """The path ends at the first point ``patience`` grid steps (within half a step) below the best."""
    B, y = classes_on_a_few_features(seed=5)
    model = L1OutputLayer(beta="auto", patience=2, n_penalties=30).fit(B, y)
    points = path_records(model.path_)
    best = int(np.argmax([point["score"] for point in points]))
    factor = model.min_penalty_ratio ** (1.5 / model.n_penalties)
    below_best = [point["beta_ratio"] <= points[best]["beta_ratio"] * factor for point in points]
    assert points[-1]["beta_ratio"] <= model.min_penalty_ratio or (below_best[-1] and not any(below_best[:-1]))


def slow_start_path(beta_max=1.0):
    """A fake LASSO solver whose penalty falls slowly near beta_max (``lambda = beta_max / (1 + tau^2)``,
    against a first slope of 10): many points fall within the grid's first step, as on MNIST."""
    def solve_at(tau, beta, W0):
        lam = beta_max / (1.0 + tau ** 2)
        W = np.zeros((20000, 2))
        W[:int(10 / lam), 0] = 1.0  # the penalty, read back by a score function
        return SolveResult(W, None, tau, lam, beta_max, 1, 1, True, "")
    return solve_at


def correct_rows(accuracy, n_rows=2000):
    """(n_rows,) per-row correctness with mean ``accuracy``: the first rows correct, so that a lower
    accuracy gets wrong every row a higher one gets wrong (solutions near each other on a path)."""
    return (np.arange(n_rows) < round(accuracy * n_rows)).astype(float)


def test_held_out_scores_that_dip_near_the_top_do_not_stop_the_path():
    """Held-out accuracy dips over the first points (noise of a few features, as on MNIST: 0.935, 0.917,
    0.931, ...), then rises to a peak at 0.01 beta_max: the path goes on down to the peak."""
    def score(W):
        lam = 10 / np.count_nonzero(W[:, 0])
        dip = {0: 0.935, 1: 0.917, 2: 0.931, 3: 0.930}.get(len(scores))
        scores.append(dip if dip is not None else 0.99 - 0.02 * abs(np.log10(lam) + 2))
        return correct_rows(scores[-1])

    scores = []
    points, best, _ = validated_path(slow_start_path(), score, 1.0, 10.0, n_penalties=16, min_ratio=1e-3,
                                     patience=3, significant_drop=2.0)
    assert sum(point.beta_ratio > 0.5 for point in points[:4]) == 4  # the dip is within the grid's first steps
    assert points[best].beta_ratio == pytest.approx(0.01, rel=0.5)
    assert len(points) > best + 1  # ended by the drop after the peak (patience would end it later)


@pytest.mark.parametrize("drop, stops_at_the_drop", [(0.02, True), (0.001, False)])
def test_a_significant_drop_below_a_tenth_of_beta_max_ends_the_path(drop, stops_at_the_drop):
    """Scores rise to about 0.98 at 0.05 beta_max, then fall by ``drop``: 0.02 is 40 of 2,000 held-out rows,
    6 standard errors of the paired differences (the path ends at the first point below 0.05, within
    patience), 0.001 is 2 rows, noise (patience ends it)."""
    def score(W):
        lam = 10 / np.count_nonzero(W[:, 0])
        return correct_rows(0.98 - drop if lam < 0.05 else 0.98 - 1e-3 * lam)  # rising to just below 0.98 at 0.05

    points, best, _ = validated_path(slow_start_path(), score, 1.0, 10.0, n_penalties=16, min_ratio=1e-3,
                                     patience=5, significant_drop=2.0)
    ratios = [point.beta_ratio for point in points]
    first_below = next(i for i, ratio in enumerate(ratios) if ratio < 0.05)
    assert ratios[best] >= 0.05 > ratios[best + 1]
    assert (len(points) == first_below + 1) == stops_at_the_drop
    if not stops_at_the_drop:
        assert ratios[-1] <= ratios[best] * 1e-3 ** (4.5 / 16)  # patience ended it


def test_a_drop_is_judged_on_the_rows_where_the_two_solutions_disagree():
    """The same fall in accuracy, 0.695 to 0.686 on 8,000 rows (1.7 binomial standard errors of one
    accuracy): significant when the worse solution gets wrong only rows the better one also gets wrong
    or more, not when the two disagree on 40 % of the rows."""
    best = correct_rows(0.695, 8000)
    nested = correct_rows(0.686, 8000)
    disagreeing = best.copy()
    rng = np.random.default_rng(0)
    swapped_right = rng.choice(np.flatnonzero(best == 1), 1600, replace=False)
    swapped_wrong = rng.choice(np.flatnonzero(best == 0), 1600 - 72, replace=False)
    disagreeing[swapped_right], disagreeing[swapped_wrong] = 0.0, 1.0
    assert disagreeing.mean() == pytest.approx(nested.mean())
    assert significantly_worse(nested, best, 2.0)
    assert not significantly_worse(disagreeing, best, 2.0)
    assert not significantly_worse(best, nested, 2.0)  # better, not worse
    assert not significantly_worse(best, best, 2.0)


def test_auto_final_fit_is_optimal_on_all_rows_at_its_penalty():
    """The final fit is the penalised optimum on all rows for the beta_ it reports (dual norm = beta_)
    and uses about the path's choice of features."""
    B, y = classes_on_a_few_features(seed=6)
    model = L1OutputLayer(beta="auto", tol=1e-8, max_iter=100000).fit(B, y)
    assert model.converged_
    assert model.dual_norm_ == pytest.approx(model.beta_, rel=1e-4)
    fixed = L1OutputLayer(beta=model.beta_, relative=False, tol=1e-8, max_iter=100000).fit(B, y)
    assert model.objective(B, y) == pytest.approx(fixed.objective(B, y), rel=1e-6)


def test_auto_agrees_in_memory_on_working_sets_on_a_store_and_with_skglm_and_newton(tmp_path):
    B, y = classes_on_a_few_features(seed=7)
    store = FeatureStore(tmp_path / "features.npy").fill(lambda rows: rows, B.astype(np.float32))
    B32 = B.astype(np.float32)
    fits = [L1OutputLayer(beta="auto", tol=1e-8, max_iter=100000, **kwargs).fit(features, y)
            for features, kwargs in [(B32, {}), (B32, dict(working_set=4)), (store, dict(working_set=4)),
                                     (B32, dict(solver="skglm")), (B32, dict(solver="newton")),
                                     (store, dict(solver="newton", working_set=4))]]
    reference = fits[0]
    for fit in fits[1:3]:
        assert [p["n_features"] for p in path_records(fit.path_)] == [p["n_features"] for p in path_records(reference.path_)]
        assert fit.beta_ratio_ == pytest.approx(reference.beta_ratio_, rel=1e-3)
        np.testing.assert_allclose(fit.coef_, reference.coef_, atol=1e-4 * np.abs(reference.coef_).max())
    skglm, newton, newton_store = fits[3:]
    assert skglm.score(B32, y) == pytest.approx(reference.score(B32, y), abs=0.02)
    # the two penalised solvers walk the same grid of penalties to the same solutions
    assert newton.beta_ratio_ == pytest.approx(skglm.beta_ratio_, rel=1e-6)
    for fit in (newton, newton_store):
        assert [p["n_features"] for p in path_records(fit.path_)] == [p["n_features"] for p in path_records(skglm.path_)]
        np.testing.assert_allclose(fit.coef_, skglm.coef_, atol=1e-4 * np.abs(skglm.coef_).max())


def test_row_subset_reads_its_rows_of_a_store_and_of_an_array(tmp_path):
    B = np.arange(60, dtype=np.float32).reshape(20, 3)
    store = FeatureStore(tmp_path / "f.npy").fill(lambda rows: rows, B, block_rows=3)
    rows = [17, 2, 5, 6, 11]
    for features in (store, ArrayFeatures(B)):
        subset = RowSubset(features, rows)
        assert subset.shape == (5, 3) and len(subset) == 5
        np.testing.assert_array_equal(np.concatenate([b for _, b in subset.row_blocks(block_rows=4)]),
                                      B[np.sort(rows)])
        np.testing.assert_array_equal(subset.columns([2, 0]), B[np.ix_(np.sort(rows), [2, 0])])


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="lasso", tau=1.0), "beta='auto' chooses the penalty of mode='penalized'"),
    (dict(validation_fraction=1.0), "'validation_fraction' parameter"),
    (dict(min_penalty_ratio=0.0), "'min_penalty_ratio' parameter"),
])
def test_auto_bad_parameters_raise(kwargs, match):
    B, y = classes_on_a_few_features(n=40)
    with pytest.raises(ValueError, match=match):
        L1OutputLayer(beta="auto", **kwargs).fit(B, y)


def test_auto_needs_rows_of_every_class_to_hold_out():
    B, y = classes_on_a_few_features(n=40)
    y[0] = 9  # a class with one row
    with pytest.raises(ValueError, match="give every class more rows, or set beta to a number"):
        L1OutputLayer(beta="auto").fit(B, y)


def test_auto_holds_out_each_group_whole(monkeypatch):
    """Rows and their copies (an image and its mirror) share a group: the path is scored on groups it has
    not fitted, and a group mixing labels is refused."""
    from pipeline.readout import output_layer

    B, y = classes_on_a_few_features(n=120)
    doubled, labels, groups = np.vstack([B, B]), np.concatenate([y, y]), np.tile(np.arange(len(y)), 2)
    splits = []

    def recorded_split(*args):
        splits.append(output_layer.held_out_split(*args))
        return splits[-1]

    monkeypatch.setattr(output_layer, "_stratified_split", recorded_split)
    L1OutputLayer(beta="auto", tol=1e-3).fit(doubled, labels, groups=groups)
    (fit_rows, held_out), = splits
    assert len(held_out) == 2 * 24 and not set(groups[fit_rows]) & set(groups[held_out])
    with pytest.raises(ValueError, match="mixes labels"):
        L1OutputLayer(beta="auto").fit(doubled, labels, groups=np.arange(len(labels)) // 2)
