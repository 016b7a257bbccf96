"""Tests of the working-set and streamed solves (pipeline/readout/working_set.py) on stored features."""

import numpy as np
import pytest

from pipeline.storage import FeatureStore
from pipeline import L1OutputLayer
from planted_features import features


def stored(tmp_path, B, dtype="float32", block_rows=7, name="features.npy"):
    return FeatureStore(tmp_path / name).fill(np.asarray, B, dtype=dtype, block_rows=block_rows)


@pytest.mark.parametrize("settings", [dict(mode="penalized", beta=0.05), dict(mode="penalized", beta=0.02, group=False),
                                      dict(mode="lasso", tau=1.0), dict(mode="bpdn", sigma=0.7)],
                         ids=["group", "l1", "lasso", "bpdn"])
@pytest.mark.parametrize("strategy", ["working_set", "stream"])
@pytest.mark.parametrize("n, n_features", [(300, 60), (60, 150)])
def test_fit_on_a_store_matches_the_in_memory_fit(tmp_path, strategy, n, n_features, settings):
    B, y = features(n, n_features)
    if settings["mode"] == "bpdn":  # sigma as a fraction of the norm of the centred targets
        settings = dict(settings, sigma=settings["sigma"] * np.sqrt(n - np.sum(np.bincount(y) ** 2) / n))
    layer = dict(tol=1e-8, max_iter=20000, out_of_core=strategy, **settings)
    direct = L1OutputLayer(**layer, working_set=n_features).fit(B, y)  # SPGL1 on all features at once
    store = stored(tmp_path, B)
    on_disk = L1OutputLayer(**layer, working_set=8).fit(store, y)
    in_memory = L1OutputLayer(**layer, working_set=8).fit(B, y)  # wider than the set: the working-set way
    assert direct.n_rounds_ == 1
    if strategy == "working_set":  # the same working-set solve on the array as on its store
        assert in_memory.n_rounds_ == on_disk.n_rounds_
    # the objective of each form: Omega(W) for BPDN (subject to ||R|| <= sigma), the penalised one else
    objective = (lambda m: m.tau_) if settings["mode"] == "bpdn" else (lambda m: m.objective(B, y))
    for fitted in (on_disk, in_memory):
        assert objective(fitted) == pytest.approx(objective(direct), rel=1e-6)
        np.testing.assert_array_equal(fitted.predict(B), direct.predict(B))
    np.testing.assert_allclose(on_disk.decision_function(store), on_disk.decision_function(B), rtol=1e-10, atol=1e-10)
    if strategy == "working_set" and settings.get("beta") == 0.05:
        assert on_disk.n_rounds_ > 1  # the first 8 features were not enough: the certificate grew the set


@pytest.mark.parametrize("on_disk", [False, True], ids=["in_memory", "store"])
def test_warm_starts_along_a_path_of_penalties(tmp_path, on_disk):
    B, y = features(200, 60, seed=3)
    data = stored(tmp_path, B) if on_disk else B
    path = L1OutputLayer(tol=1e-8, max_iter=20000, working_set=16, warm_start=True)
    warm_iterations = cold_iterations = 0
    for beta in (0.2, 0.1, 0.05, 0.03):
        path.set_params(beta=beta).fit(data, y)
        cold = L1OutputLayer(beta=beta, tol=1e-8, max_iter=20000, working_set=16).fit(data, y)
        assert path.objective(B, y) == pytest.approx(cold.objective(B, y), rel=1e-6)
        warm_iterations += path.n_iter_
        cold_iterations += cold.n_iter_
    assert warm_iterations < cold_iterations


def test_newton_working_sets_never_hold_the_sets_columns(tmp_path, monkeypatch):
    """The Newton rounds build their Gram matrices from row blocks; the result is the in-memory one's."""
    import pipeline.readout.working_set as working_set
    B, y = features(300, 60)
    layer = dict(beta=0.05, tol=1e-8, max_iter=20000, solver="newton")
    direct = L1OutputLayer(**layer, working_set=60).fit(B, y)

    def refused(*args):
        raise AssertionError("the Newton working set gathered the (n, |set|) columns")
    monkeypatch.setattr(working_set, "standardized_columns", refused)
    on_disk = L1OutputLayer(**layer, working_set=8).fit(stored(tmp_path, B), y)
    assert on_disk.n_rounds_ > 1
    assert on_disk.objective(B, y) == pytest.approx(direct.objective(B, y), rel=1e-8)
    np.testing.assert_array_equal(on_disk.predict(B), direct.predict(B))


@pytest.mark.parametrize("solver", ["spgl1", "newton"])  # newton: the refit from the last set's Gram matrix
def test_refit_on_a_store_matches_the_in_memory_refit(tmp_path, solver):
    B, y = features(300, 60)
    layer = dict(beta=0.05, tol=1e-8, max_iter=20000, refit=True, solver=solver)
    direct = L1OutputLayer(**layer, working_set=60).fit(B, y)
    on_disk = L1OutputLayer(**layer, working_set=8).fit(stored(tmp_path, B), y)
    np.testing.assert_array_equal(np.any(on_disk.l1_coef_ != 0, axis=1), np.any(direct.l1_coef_ != 0, axis=1))
    np.testing.assert_allclose(on_disk.coef_, direct.coef_, atol=1e-6 * np.abs(direct.coef_).max())


def test_next_working_set_keeps_the_support_and_adds_the_largest_duals():
    from pipeline.readout.working_set import _next_working_set

    active = np.array([1, 4, 6, 9])
    W = np.array([[0.0, 0.0], [2.0, -1.0], [0.0, 0.0], [0.0, 3.0]])  # support: features 4 and 9
    duals = np.array([0.1, 0.9, 0.0, 5.0, 0.2, 0.3, 0.4, 7.0, 0.5, 0.1, 0.6, 0.05])
    grown, x0 = _next_working_set(active, W, duals, size=3, growth=2.0)
    # max(3, 2 x 2 support) = 4 features: the support, then 7 and 3 (largest duals outside it)
    np.testing.assert_array_equal(grown, [3, 4, 7, 9])
    np.testing.assert_array_equal(x0.reshape(4, 2), [[0, 0], [2, -1], [0, 0], [0, 3]])
    grown, _ = _next_working_set(active, W, duals, size=6, growth=2.0)  # the floor: at least `size` features
    np.testing.assert_array_equal(grown, [1, 3, 4, 7, 9, 10])
    grown, _ = _next_working_set(active, W, duals, size=100, growth=2.0)  # never more than all features
    np.testing.assert_array_equal(grown, np.arange(12))
    grown, _ = _next_working_set(active, W, duals, size=1, growth=1.0)  # at least one feature joins
    np.testing.assert_array_equal(grown, [4, 7, 9])


def test_first_working_set_from_the_duals_of_a_previous_solution():
    """Given the feature duals at the warm start (the previous point of a path), the first set is the warm
    start's support and the largest of those duals; without them, the top of B^T Y joins the support."""
    from pipeline.readout.working_set import _first_working_set

    gradient = np.zeros((12, 2))
    gradient[[0, 1, 2], 0] = [3.0, 2.0, 1.0]
    W0 = np.zeros((12, 2))
    W0[[4, 9]] = 1.0
    start_duals = np.array([0.1, 0.9, 0.0, 5.0, 1.0, 0.3, 0.4, 7.0, 0.5, 1.0, 0.6, 0.05])
    active, x0 = _first_working_set(gradient, True, 3, 2.0, W0, start_duals)
    np.testing.assert_array_equal(active, [3, 4, 7, 9])
    np.testing.assert_array_equal(x0.reshape(4, 2), W0[[3, 4, 7, 9]])
    active, x0 = _first_working_set(gradient, True, 3, 2.0, W0, None)
    np.testing.assert_array_equal(active, [0, 1, 2, 4, 9])
    assert _first_working_set(gradient, True, 3, 2.0, None, None)[1] is None


@pytest.mark.parametrize("growth", [2.0, 1.25])
def test_working_set_stays_near_the_support_on_many_features(monkeypatch, growth):
    """400 features, a few informative: every set holds max(size, growth |support|) features (support of
    the previous round's solution), far fewer than all, and the result equals SPGL1 on all features at once."""
    import pipeline.readout.working_set as out_of_core

    B, y = features(300, 400, seed=5)
    layer = dict(beta=0.1, tol=1e-8, max_iter=20000)
    direct = L1OutputLayer(**layer, working_set=400).fit(B, y)
    sets, supports = [], []
    solve = out_of_core.solve_standardized

    def recording(columns, *args, **kwargs):
        result = solve(columns, *args, **kwargs)
        sets.append(columns.shape[1])
        supports.append(int(np.sum(np.any(result.W != 0, axis=1))))
        return result

    monkeypatch.setattr(out_of_core, "solve_standardized", recording)
    small = L1OutputLayer(**layer, working_set=8, working_set_growth=growth).fit(B, y)
    assert len(sets) == small.n_rounds_ > 1
    # each round's set is `growth` times the previous support, except the last: the settled set again,
    # solved at the full tolerance after the rounds that matched beta roughly
    grown = [max(8, int(np.ceil(growth * support)), support + 1) for support in supports[:-2]]
    assert sets[:-1] == [8] + grown and sets[-1] == sets[-2]
    assert max(sets) <= np.ceil(growth * max(supports)) < 400 / 2  # (growth 2: 8, 16, 32, 64, 124, 124)
    assert small.objective(B, y) == pytest.approx(direct.objective(B, y), rel=1e-7)
    np.testing.assert_array_equal(np.any(small.coef_ != 0, axis=1), np.any(direct.coef_ != 0, axis=1))


@pytest.mark.parametrize("solver", ["spgl1", "newton"])
def test_a_set_within_the_growth_factor_of_all_features_is_solved_on_all_of_them_in_one_round(tmp_path, solver):
    """50 of 60 features, growth 1.5: the next set would hold all 60, so the first one does (one round, no
    rough round); a set of 30 (30 x 1.5 < 60) still grows round by round. Both reach the direct optimum."""
    B, y = features(300, 60)
    layer = dict(beta=0.05, tol=1e-8, max_iter=20000, solver=solver, working_set_growth=1.5)
    direct = L1OutputLayer(**layer, working_set=60).fit(B, y)
    covering = L1OutputLayer(**layer, working_set=50).fit(stored(tmp_path, B), y)
    growing = L1OutputLayer(**layer, working_set=30).fit(stored(tmp_path, B, name="again.npy"), y)
    assert direct.n_rounds_ == covering.n_rounds_ == 1 < growing.n_rounds_
    for fitted in (covering, growing):
        assert fitted.objective(B, y) == pytest.approx(direct.objective(B, y), rel=1e-7)


@pytest.mark.parametrize("solver", ["spgl1", "newton"])
def test_a_later_set_of_all_features_is_solved_at_full_tolerance_in_its_round(tmp_path, solver, caplog):
    """30 of 60 features, growth 1.5: the first (rough) round's set grows to all 60 features; that round is
    solved at the full tolerance and ends the fit (no rough round on all features, then a second one)."""
    B, y = features(300, 60)
    layer = dict(beta=0.05, tol=1e-8, max_iter=20000, solver=solver, working_set_growth=1.5)
    with caplog.at_level("INFO", logger="pipeline.readout.working_set"):
        growing = L1OutputLayer(**layer, working_set=30).fit(stored(tmp_path, B), y)
    rounds = [record.getMessage() for record in caplog.records if "working set round" in record.getMessage()]
    first_covering = next(i for i, message in enumerate(rounds) if ": 60 features" in message)
    assert "rough" in rounds[0] and first_covering > 0
    assert len(rounds) == growing.n_rounds_ == first_covering + 1 and "rough" not in rounds[first_covering]
    direct = L1OutputLayer(**layer, working_set=60).fit(B, y)
    assert growing.objective(B, y) == pytest.approx(direct.objective(B, y), rel=1e-7)
