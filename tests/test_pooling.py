"""The compiled ReLU + pooling pass against numpy and against the torch reductions used on other devices."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import features.pooling as pooling_module
from features.feature_map import region_edges
from features.pooling import _relu_pool_compiled, _relu_pool_torch, relu_pool


def numpy_relu_pool(responses, rows, cols, pooling, negated):
    """float64 reference: rectify each side, reduce each region, filter-major, negated side second."""
    values = responses.float().numpy().astype(np.float64)
    sides = [values] if negated is None else [values, negated.astype(np.float64) - values]
    reduce = {"sum": np.sum, "mean": np.mean, "max": np.max}[pooling]
    pooled = [np.stack([reduce(np.maximum(side[:, r0:r1, c0:c1], 0), axis=(1, 2))
                        for r0, r1 in zip(rows[:-1], rows[1:]) for c0, c1 in zip(cols[:-1], cols[1:])], axis=-1)
              for side in sides]
    return np.stack(pooled, axis=1).reshape(len(values), -1)


def random_responses(n_images, height, width, n_filters, dtype, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n_images, height, width, n_filters))
                            .astype(np.float32)).to(dtype)


@pytest.mark.parametrize("pooling", ["sum", "mean", "max"])
@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grid", [1, 2, 3])
def test_the_compiled_pass_matches_numpy_and_the_torch_reductions(pooling, two_sided, dtype, grid):
    responses = random_responses(3, 7, 5, 11, dtype)  # uneven regions: 7 rows and 5 columns
    rows, cols = region_edges(7, grid), region_edges(5, grid)
    negated = np.random.default_rng(1).normal(size=11).astype(np.float32) if two_sided else None
    compiled = relu_pool(responses, rows, cols, pooling, negated).numpy()
    expected = numpy_relu_pool(responses, rows, cols, pooling, negated)
    assert compiled.dtype == np.float32 and compiled.shape == (3, (2 if two_sided else 1) * 11 * grid * grid)
    # float32 accumulation of at most 35 terms of size ~1: a few float32 ulps of the sum of |values|
    np.testing.assert_allclose(compiled, expected, rtol=1e-6, atol=35 * 4 * 2.0**-24)
    np.testing.assert_allclose(_relu_pool_torch(responses, rows, cols, pooling, negated).numpy(), compiled,
                               rtol=1e-6, atol=35 * 4 * 2.0**-24)


def test_filter_blocks_that_do_not_divide_the_filters(monkeypatch):
    responses = random_responses(2, 4, 4, 7, torch.bfloat16, seed=2)
    rows = region_edges(4, 2)
    whole = relu_pool(responses, rows, rows, "sum").numpy()
    monkeypatch.setattr(pooling_module, "ACCUMULATOR_BYTES", 4 * 4 * 3)  # 3 filters x 4 regions
    np.testing.assert_array_equal(relu_pool(responses, rows, rows, "sum").numpy(), whole)


def test_bfloat16_values_are_widened_exactly():
    """Zeros of both signs, the largest and smallest normal bfloat16 numbers, a subnormal and infinity
    pooled one position at a time (grid 1 on 1 x 1 maps): their float32 values, rectified."""
    special = torch.tensor([0.0, -0.0, 3.3895e38, -3.3895e38, 1.1755e-38, 9.2e-41, float("inf"), 1.0 + 2.0**-7])
    responses = special.to(torch.bfloat16).view(-1, 1, 1, 1)
    got = _relu_pool_compiled(responses, np.array([0, 1]), np.array([0, 1]), "sum", None).numpy().ravel()
    np.testing.assert_array_equal(got, torch.relu(responses.float()).numpy().ravel())


def test_concurrent_calls_from_threads_give_the_same_features():
    responses = random_responses(4, 9, 9, 40, torch.bfloat16, seed=3)
    rows = region_edges(9, 2)
    alone = relu_pool(responses, rows, rows, "sum").numpy()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: relu_pool(responses, rows, rows, "sum").numpy(), range(8)))
    for result in results:
        np.testing.assert_array_equal(result, alone)


@pytest.mark.parametrize("n_images, n_filters, threads", [(1, 40000, 2), (4, 40000, 2), (4, 4000, 2), (1, 1, 2),
                                                         (3, 7, 4), (64, 100, 1)])
def test_filter_blocks_fit_the_accumulator_budget_and_give_every_thread_work(n_images, n_filters, threads):
    accumulators_per_filter = 2 * 4  # two-sided, 2 x 2 grid
    block = pooling_module.filter_block(n_images, n_filters, accumulators_per_filter, threads)
    items = n_images * -(-n_filters // block)
    assert 1 <= block <= n_filters
    assert block * accumulators_per_filter * 4 <= pooling_module.ACCUMULATOR_BYTES
    assert items >= min(threads, n_images * n_filters)
