"""Convolution + ReLU + pooling against a naive loop over images and positions."""

import numpy as np
import pytest

from features.feature_map import conv_relu_pool, region_edges
from features.patches import normalize_patches
from features.whitening import ZCAWhitener


def naive_features(images, filters, k, stride, eps, whitener, bias, pooling, grid):
    """Per image, per position: normalise, whiten, dot, ReLU; then pool regions (float64)."""
    n, height, width, _ = images.shape
    out_h, out_w = (height - k) // stride + 1, (width - k) // stride + 1
    rows, cols = region_edges(out_h, grid), region_edges(out_w, grid)
    reduce = {"max": np.max, "sum": np.sum, "mean": np.mean}[pooling]
    features = np.zeros((n, len(filters), grid * grid))
    for image in range(n):
        response = np.zeros((out_h, out_w, len(filters)))
        for r in range(out_h):
            for c in range(out_w):
                window = images[image, r * stride:r * stride + k, c * stride:c * stride + k]
                patch = normalize_patches(window.transpose(2, 0, 1).reshape(1, -1) / 255.0, eps)
                if whitener is not None:
                    patch = whitener.transform(patch)
                response[r, c] = np.maximum(patch @ filters.T + bias, 0)[0]
        region = 0
        for r0, r1 in zip(rows[:-1], rows[1:]):
            for c0, c1 in zip(cols[:-1], cols[1:]):
                features[image, :, region] = reduce(response[r0:r1, c0:c1], axis=(0, 1))
                region += 1
    return features.reshape(n, -1)


@pytest.mark.parametrize("pooling", ["max", "sum", "mean"])
@pytest.mark.parametrize("stride, grid, whiten", [(1, 2, True), (2, 3, False), (1, 1, True)])
def test_matches_naive_loop(pooling, stride, grid, whiten):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 11, 10, 3), dtype=np.uint8)
    k, eps = 3, 0.01
    filters = rng.normal(size=(7, 27))
    bias = rng.normal(size=7) * 0.1
    whitener = ZCAWhitener(0.1).fit(normalize_patches(rng.random((200, 27)), eps)) if whiten else None
    expected = naive_features(images, filters, k, stride, eps, whitener, bias, pooling, grid)
    got = conv_relu_pool(images, filters, patch_size=k, eps=eps, stride=stride, whitener=whitener,
                         bias=bias, pooling=pooling, grid=grid)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5 * np.abs(expected).max())


def test_chunking_does_not_change_the_result_and_fills_a_given_array():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, 8, 8, 1), dtype=np.uint8)
    filters = rng.normal(size=(4, 9))
    whole = conv_relu_pool(images, filters, patch_size=3, eps=0.01, memory_mb=100)
    out = np.full((7, 16), np.nan, dtype=np.float32)
    chunks = []
    conv_relu_pool(images, filters, patch_size=3, eps=0.01, memory_mb=1e-6, out=out, progress=chunks.append)
    assert chunks == [1] * 7
    np.testing.assert_array_equal(out, whole)


def test_region_edges_partition_the_axis():
    np.testing.assert_array_equal(region_edges(27, 2), [0, 14, 27])
    np.testing.assert_array_equal(region_edges(4, 4), [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="finer than"):
        region_edges(3, 4)


def test_unknown_pooling_is_rejected():
    with pytest.raises(ValueError, match="pooling"):
        conv_relu_pool(np.zeros((1, 4, 4, 1), np.uint8), np.ones((1, 4)), patch_size=2, eps=0.1,
                       pooling="median")
