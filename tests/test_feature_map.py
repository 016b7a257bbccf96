"""Convolution + ReLU + pooling against a naive loop over images and positions."""

import numpy as np
import pytest
import torch

from features.feature_map import conv_relu_pool, region_edges
from features.whitening import PatchWhitener


def naive_features(images, filters, k, stride, whitener, bias, pooling, grid):
    """Per image, per position: normalise and whiten (``whitener``), dot, ReLU; then pool regions."""
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
                patch = whitener.transform(window.transpose(2, 0, 1).reshape(1, -1) / 255.0)
                response[r, c] = np.maximum(patch @ filters.T + bias, 0)[0]
        region = 0
        for r0, r1 in zip(rows[:-1], rows[1:]):
            for c0, c1 in zip(cols[:-1], cols[1:]):
                features[image, :, region] = reduce(response[r0:r1, c0:c1], axis=(0, 1))
                region += 1
    return features.reshape(n, -1)


@pytest.mark.parametrize("pooling", ["max", "sum", "mean"])
@pytest.mark.parametrize("stride, grid, zca, normalize", [(1, 2, True, True), (2, 3, False, True),
                                                        (1, 1, True, False)])
def test_matches_naive_loop(pooling, stride, grid, zca, normalize):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 11, 10, 3), dtype=np.uint8)
    k, eps = 3, 0.01
    filters = rng.normal(size=(7, 27))
    bias = rng.normal(size=7) * 0.1
    whitener = PatchWhitener(eps, normalize=normalize, zca=zca, zca_eps=0.1).fit(rng.random((200, 27)))
    expected = naive_features(images, filters, k, stride, whitener, bias, pooling, grid)
    weights, offset = whitener.fold(filters, bias)
    got = conv_relu_pool(images, weights, offset, patch_size=k, eps=eps, normalize=normalize, stride=stride,
                         pooling=pooling, grid=grid)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5 * np.abs(expected).max())


def test_chunking_does_not_change_the_result_and_fills_a_given_array():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, 8, 8, 1), dtype=np.uint8)
    weights, offset = rng.normal(size=(9, 4)), np.zeros(4)
    whole = conv_relu_pool(images, weights, offset, patch_size=3, eps=0.01, memory_mb=100)
    out = np.full((7, 16), np.nan, dtype=np.float32)
    chunks = []
    conv_relu_pool(images, weights, offset, patch_size=3, eps=0.01, memory_mb=1e-6, out=out,
                   progress=chunks.append)
    assert chunks == [1] * 7
    np.testing.assert_array_equal(out, whole)


def test_region_edges_partition_the_axis():
    np.testing.assert_array_equal(region_edges(27, 2), [0, 14, 27])
    np.testing.assert_array_equal(region_edges(4, 4), [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="finer than"):
        region_edges(3, 4)


def test_unknown_pooling_is_rejected():
    with pytest.raises(ValueError, match="pooling"):
        conv_relu_pool(np.zeros((1, 4, 4, 1), np.uint8), np.ones((4, 1)), np.zeros(1), patch_size=2,
                       eps=0.1, pooling="median")


def test_float_images_are_taken_as_intensities_and_uint8_images_are_scaled():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(3, 6, 6, 1), dtype=np.uint8)
    weights, offset = rng.normal(size=(9, 5)), rng.normal(size=5)
    as_uint8 = conv_relu_pool(images, weights, offset, patch_size=3, eps=0.01, normalize=False)
    as_float = conv_relu_pool(images / 255.0, weights, offset, patch_size=3, eps=0.01, normalize=False)
    np.testing.assert_allclose(as_uint8, as_float, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_images, memory_mb", [(7, 0.06), (1, 0.06), (1, 100)])  # 0.06: 2 per chunk
def test_chunks_that_do_not_divide_the_images_and_a_single_image(n_images, memory_mb):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(n_images, 9, 9, 3), dtype=np.uint8)
    weights, offset = rng.normal(size=(27, 40)), rng.normal(size=40)
    chunks = []
    got = conv_relu_pool(images, weights, offset, patch_size=3, eps=0.01, memory_mb=memory_mb,
                         progress=chunks.append)
    assert sum(chunks) == n_images and (memory_mb == 100 or len(chunks) > 1 or n_images == 1)
    one_by_one = np.vstack([conv_relu_pool(images[i:i + 1], weights, offset, patch_size=3, eps=0.01)
                            for i in range(n_images)])
    np.testing.assert_array_equal(got, one_by_one)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the cpu path is tested instead")
def test_cuda_features_match_the_cpu_features():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(6, 12, 12, 3), dtype=np.uint8)
    weights, offset = rng.normal(size=(27, 64)), rng.normal(size=64)
    cpu = conv_relu_pool(images, weights, offset, patch_size=3, eps=0.01)
    cuda = conv_relu_pool(images, weights, offset, patch_size=3, eps=0.01, device="cuda")
    np.testing.assert_allclose(cuda, cpu, rtol=1e-4, atol=1e-4 * np.abs(cpu).max())


def test_features_on_a_dask_cluster_are_identical_to_the_local_ones(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    from features.feature_map import ConvReLUPool
    from pipeline.storage import FeatureStore

    images = np.random.default_rng(5).integers(0, 256, size=(30, 10, 10, 3), dtype=np.uint8)
    model = ConvReLUPool(patch_size=3, n_patches=60, random_state=0).fit(images)
    local = model.transform(images)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as tasks:
            store = FeatureStore(tmp_path / "features.npy").fill(model.transform, images, block_rows=7,
                                                                scheduler=client)
        assert len(tasks.data) >= 5  # five blocks of images went to the cluster
    np.testing.assert_array_equal(np.load(store.path), local)


def test_a_two_sided_encoding_adds_the_responses_to_the_negated_filters():
    from features.feature_map import ConvReLUPool

    images = np.random.default_rng(5).integers(0, 256, size=(6, 10, 10, 1), dtype=np.uint8)
    one_sided = ConvReLUPool(patch_size=3, n_patches=60, grid=2, random_state=0).fit(images)
    two_sided = ConvReLUPool(patch_size=3, n_patches=60, grid=2, two_sided=True, random_state=0).fit(images)
    n_filters = one_sided.weights_.shape[1]
    negated = conv_relu_pool(images, -one_sided.weights_, -one_sided.offset_, patch_size=3, eps=0.01)
    np.testing.assert_allclose(two_sided.transform(images),
                               np.hstack([one_sided.transform(images), negated]), rtol=1e-5, atol=1e-5)
    assert two_sided.transform(images).shape == (6, 2 * n_filters * 4)


def test_response_std_is_the_standard_deviation_of_the_responses():
    from features.feature_map import response_std

    rng = np.random.default_rng(6)
    patches, filters = rng.normal(size=(300, 12)) * rng.uniform(0.1, 3, size=12), rng.normal(size=(5, 12))
    np.testing.assert_allclose(response_std(filters, patches), (patches @ filters.T).std(axis=0, ddof=1),
                               rtol=1e-10)


def test_a_soft_threshold_shifts_each_response_by_its_standard_deviations():
    """``max(z - t s, 0)`` on both sides: the features of the plain maps with the shifted offsets, each
    below the plain one (max pooling: by exactly the shift where the plain maximum exceeds it)."""
    from features.feature_map import ConvReLUPool, response_std

    images = np.random.default_rng(7).integers(0, 256, size=(6, 10, 10, 1), dtype=np.uint8)
    plain = ConvReLUPool(patch_size=3, n_patches=60, grid=2, pooling="max", random_state=0).fit(images)
    soft = ConvReLUPool(patch_size=3, n_patches=60, grid=2, pooling="max", two_sided=True, threshold=0.5,
                        random_state=0).fit(images)
    whitened = plain.whitener_.transform(_sampled_patches(plain, images))
    shift = 0.5 * response_std(plain.filter_bank_.filters_, whitened)
    expected = [conv_relu_pool(images, sign * plain.weights_, sign * plain.offset_ - shift, patch_size=3,
                               eps=0.01, pooling="max") for sign in (1, -1)]
    np.testing.assert_allclose(soft.transform(images), np.hstack(expected), rtol=1e-5, atol=1e-5)
    assert np.all(shift > 0)
    n_filters = plain.weights_.shape[1]
    np.testing.assert_allclose(soft.transform(images)[:, :4 * n_filters],
                               np.maximum(plain.transform(images) - np.repeat(shift, 4), 0), rtol=1e-5, atol=1e-5)


def _sampled_patches(feature_map, images):
    """The patches ``feature_map.fit`` sampled (same seed and count)."""
    from features.patches import sample_patches

    return sample_patches(images, feature_map.patch_size, feature_map.n_patches, np.random.default_rng(0))


@pytest.mark.parametrize("threshold", [-0.5, "0.5", None])
def test_a_negative_or_non_numeric_threshold_is_refused(threshold):
    from features.feature_map import ConvReLUPool

    images = np.zeros((2, 8, 8, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"'threshold' parameter of ConvReLUPool must be a float in the range \[0.0, inf\)"):
        ConvReLUPool(patch_size=3, n_patches=10, threshold=threshold).fit(images)
