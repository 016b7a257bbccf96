"""Convolution + ReLU + pooling against a naive loop over images and positions."""

import numpy as np
import pytest
import torch

from features.compute_dtype import calibrate
from features.feature_map import ConvReLUPool, conv_relu_pool, region_edges
from features.whitening import PatchWhitener

# bfloat16 keeps 8 significant bits: unit roundoff u = 2**-9 (about 2e-3). The normalised patches q and the
# folded filters w are rounded once (u each), the GEMM accumulates in float32 and its result (offset b
# included) is rounded once more; the two-sided side, (b + b') - r, is formed in float32 from that rounded r
# (the bound below still allows for rounding the offsets' sum and the difference). So a response is off by
# at most 4u (|q| . |w| + |b| + |b'|) <= 4u (sqrt(d) ||w|| + |b| + |b'|)
# (a normalised patch has ||q|| < sqrt(d)), and a pooled feature, a 1-Lipschitz function of its region's
# responses (sum: the region's count times that). Those are worst cases; the errors' signs vary from
# position to position, and on plain (unthresholded) ReLU features the error is within 2**-8 in norm.
UNIT_ROUNDOFF = 2.0**-9


def bfloat16_error_bound(weights, offset, negated_offset, rows, cols, pooling):
    """(F' * grid**2,) worst-case error of each bfloat16 feature of :func:`conv_relu_pool` (see above)."""
    weights, offset = np.asarray(weights), np.abs(np.asarray(offset))
    negated = np.zeros_like(offset) if negated_offset is None else np.abs(np.asarray(negated_offset))
    per_response = 4 * UNIT_ROUNDOFF * (np.sqrt(len(weights)) * np.linalg.norm(weights, axis=0) + offset + negated)
    counts = np.outer(np.diff(rows), np.diff(cols)).ravel() if pooling == "sum" else np.ones((len(rows) - 1) ** 2)
    sides = 1 if negated_offset is None else 2
    return np.tile(np.outer(per_response, counts).ravel(), sides)


def assert_bfloat16_close(bfloat16, float32, bound, norm_rtol=None):
    """bfloat16 features within ``bound`` (per feature) of float32's, within ``norm_rtol`` in norm if given,
    and not float32's themselves."""
    difference = np.abs(bfloat16 - float32)
    assert np.all(difference <= bound), f"worst excess {np.max(difference / bound):.2f} x the bound"
    if norm_rtol is not None:
        assert np.linalg.norm(difference) <= norm_rtol * np.linalg.norm(float32)
    assert difference.max() > 0, "no rounding at all: the product did not run in bfloat16"


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


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_chunking_does_not_change_the_result_and_fills_a_given_array(compute_dtype):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, 8, 8, 1), dtype=np.uint8)
    weights, offset = rng.normal(size=(9, 4)), np.zeros(4)
    whole = conv_relu_pool(images, weights, offset, patch_size=3, eps=0.01, memory_mb=100,
                           compute_dtype=compute_dtype)
    out = np.full((7, 16), np.nan, dtype=np.float32)
    chunks = []
    conv_relu_pool(images, weights, offset, patch_size=3, eps=0.01, memory_mb=1e-6, out=out,
                   compute_dtype=compute_dtype, progress=chunks.append)
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


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("n_images, memory_mb", [(7, 0.06), (1, 0.06), (1, 100)])  # 0.06: 2 (float32) per chunk
def test_chunks_that_do_not_divide_the_images_and_a_single_image(n_images, memory_mb, compute_dtype):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(n_images, 9, 9, 3), dtype=np.uint8)
    weights, offset = rng.normal(size=(27, 40)), rng.normal(size=40)
    chunks = []
    got = conv_relu_pool(images, weights, offset, patch_size=3, eps=0.01, memory_mb=memory_mb,
                         compute_dtype=compute_dtype, progress=chunks.append)
    assert sum(chunks) == n_images and (memory_mb == 100 or len(chunks) > 1 or n_images == 1)
    one_by_one = np.vstack([conv_relu_pool(images[i:i + 1], weights, offset, patch_size=3, eps=0.01,
                                           compute_dtype=compute_dtype) for i in range(n_images)])
    np.testing.assert_array_equal(got, one_by_one)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the cpu path is tested instead")
@pytest.mark.parametrize("compute_dtype, tolerance", [("float32", 1e-4), ("bfloat16", None)])
def test_cuda_features_match_the_cpu_features(compute_dtype, tolerance):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(6, 12, 12, 3), dtype=np.uint8)
    weights, offset = rng.normal(size=(27, 64)), rng.normal(size=64)
    cpu = conv_relu_pool(images, weights, offset, patch_size=3, eps=0.01)
    cuda = conv_relu_pool(images, weights, offset, patch_size=3, eps=0.01, device="cuda",
                          compute_dtype=compute_dtype)
    if tolerance is None:
        edges = region_edges(10, 2)
        assert_bfloat16_close(cuda, cpu, bfloat16_error_bound(weights, offset, None, edges, edges, "sum"))
    else:
        np.testing.assert_allclose(cuda, cpu, rtol=tolerance, atol=tolerance * np.abs(cpu).max())
    assert calibrate("cuda").compute_dtype in ("float32", "bfloat16")


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])  # "auto" resolves per process
def test_features_on_a_dask_cluster_are_identical_to_the_local_ones(tmp_path, compute_dtype):
    distributed = pytest.importorskip("dask.distributed")
    from features.feature_map import ConvReLUPool
    from pipeline.storage import FeatureStore

    images = np.random.default_rng(5).integers(0, 256, size=(30, 10, 10, 3), dtype=np.uint8)
    model = ConvReLUPool(patch_size=3, n_patches=60, compute_dtype=compute_dtype, random_state=0).fit(images)
    local = model.transform(images)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as tasks:
            store = FeatureStore(tmp_path / "features.npy").fill(model.transform, images, block_rows=7,
                                                                scheduler=client)
        assert len(tasks.data) >= 5  # five blocks of images went to the cluster
    np.testing.assert_array_equal(np.load(store.path), local)


def test_a_two_sided_encoding_adds_the_responses_to_the_negated_filters():
    images = np.random.default_rng(5).integers(0, 256, size=(6, 10, 10, 1), dtype=np.uint8)
    one_sided = ConvReLUPool(patch_size=3, n_patches=60, grid=2, compute_dtype="float32", random_state=0).fit(images)
    two_sided = ConvReLUPool(patch_size=3, n_patches=60, grid=2, two_sided=True, compute_dtype="float32",
                             random_state=0).fit(images)
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
    from features.feature_map import response_std

    images = np.random.default_rng(7).integers(0, 256, size=(6, 10, 10, 1), dtype=np.uint8)
    plain = ConvReLUPool(patch_size=3, n_patches=60, grid=2, pooling="max", compute_dtype="float32",
                         random_state=0).fit(images)
    soft = ConvReLUPool(patch_size=3, n_patches=60, grid=2, pooling="max", two_sided=True, threshold=0.5,
                        compute_dtype="float32", random_state=0).fit(images)
    whitened = plain.whitener_.transform(_sampled_patches(plain, images))
    shift = 0.5 * response_std(plain.filter_bank_.filters_, whitened)
    expected = [conv_relu_pool(images, sign * plain.weights_, sign * plain.offset_ - shift, patch_size=3,
                               eps=0.01, pooling="max") for sign in (1, -1)]
    np.testing.assert_allclose(soft.transform(images), np.hstack(expected), rtol=1e-5, atol=1e-5)
    assert np.all(shift > 0)
    n_filters = plain.weights_.shape[1]
    np.testing.assert_allclose(soft.transform(images)[:, :4 * n_filters],
                               np.maximum(plain.transform(images) - np.repeat(shift, 4), 0), rtol=1e-5, atol=1e-5)


def test_a_centered_encoding_subtracts_the_mean_response_over_the_filters_at_each_position():
    """Brute force: every normalised 3 x 3 patch's responses, minus their mean over the filters, ReLU,
    summed over the whole map (grid 1), against the features of ``centered=True``."""
    from features.patches import normalize_patches

    images = np.random.default_rng(8).integers(0, 256, size=(5, 9, 9, 1), dtype=np.uint8)
    plain = ConvReLUPool(patch_size=3, n_patches=80, grid=1, compute_dtype="float32", random_state=0).fit(images)
    centered = ConvReLUPool(patch_size=3, n_patches=80, grid=1, centered=True, compute_dtype="float32",
                            random_state=0).fit(images)
    windows = np.lib.stride_tricks.sliding_window_view(images[..., 0] / 255.0, (3, 3), axis=(1, 2))
    patches = normalize_patches(windows.reshape(-1, 9), plain.whitener_.eps)
    responses = patches @ plain.weights_ + plain.offset_
    encoded = np.maximum(responses - responses.mean(axis=1, keepdims=True), 0)
    expected = encoded.reshape(len(images), -1, encoded.shape[1]).sum(axis=1)
    assert plain.weights_.shape[1] > 1 and np.all(expected.sum(axis=0) > 0)
    np.testing.assert_allclose(centered.transform(images), expected, rtol=1e-4, atol=1e-4)


def _sampled_patches(feature_map, images):
    """The patches ``feature_map.fit`` sampled (same seed and count)."""
    from features.patches import sample_patches

    return sample_patches(images, feature_map.patch_size, feature_map.n_patches, np.random.default_rng(0))


@pytest.mark.parametrize("threshold", [-0.5, "0.5", None])
def test_a_negative_or_non_numeric_threshold_is_refused(threshold):
    images = np.zeros((2, 8, 8, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"'threshold' parameter of ConvReLUPool must be a float in the range \[0.0, inf\)"):
        ConvReLUPool(patch_size=3, n_patches=10, threshold=threshold).fit(images)


@pytest.mark.parametrize("pooling", ["sum", "max", "mean"])
@pytest.mark.parametrize("two_sided", [False, True])
def test_bfloat16_features_match_float32_on_random_images(pooling, two_sided):
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
    weights, offset = rng.normal(size=(27, 48)), rng.normal(size=48) * 0.3
    negated = -offset - 0.2 if two_sided else None
    float32, bfloat16 = (conv_relu_pool(images, weights, offset, patch_size=3, eps=0.01, pooling=pooling,
                                        negated_offset=negated, compute_dtype=dtype)
                         for dtype in ("float32", "bfloat16"))
    assert bfloat16.dtype == np.float32 and bfloat16.shape == float32.shape
    edges = region_edges(14, 2)
    assert_bfloat16_close(bfloat16, float32, bfloat16_error_bound(weights, offset, negated, edges, edges, pooling),
                          norm_rtol=2.0**-8)


@pytest.mark.parametrize("two_sided, threshold, norm_rtol", [(False, 0.0, 2.0**-8), (True, 1.0, None)])
def test_bfloat16_features_match_float32_on_real_images(two_sided, threshold, norm_rtol):
    """sklearn's handwritten digits (8 x 8, 0..16 scaled to 0..240), plain and with the MNIST config's
    encoding (two-sided, soft threshold: the responses that pass it are small differences of larger terms)."""
    from sklearn.datasets import load_digits

    images = (load_digits().images[:200, :, :, None] * 15).astype(np.uint8)
    model = ConvReLUPool(patch_size=3, n_patches=400, two_sided=two_sided, threshold=threshold,
                         compute_dtype="float32", random_state=0).fit(images)
    float32 = model.transform(images)
    n_filters = model.weights_.shape[1] // (2 if two_sided else 1)
    negated = model.offset_[n_filters:] if two_sided else None
    edges = region_edges(6, 2)
    bound = bfloat16_error_bound(model.weights_[:, :n_filters], model.offset_[:n_filters], negated, edges, edges,
                                 "sum")
    assert_bfloat16_close(model.set_params(compute_dtype="bfloat16").transform(images), float32, bound, norm_rtol)


def test_sum_pooling_of_bfloat16_responses_accumulates_in_float32():
    """2,304 equal responses of 1 + 2**-7 (exact in bfloat16): a bfloat16 running sum would stop growing at
    512 (where bfloat16 numbers are 4 apart); float32 accumulation is exact."""
    images = np.zeros((1, 50, 50, 1), dtype=np.float32)
    got = conv_relu_pool(images, np.zeros((9, 1)), np.array([1 + 2.0**-7]), patch_size=3, eps=0.01, grid=1,
                         compute_dtype="bfloat16")
    assert got[0, 0] == 48 * 48 * (1 + 2.0**-7)


def test_an_unknown_compute_dtype_is_refused():
    images = np.zeros((2, 8, 8, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="compute_dtype"):
        ConvReLUPool(patch_size=3, n_patches=10, compute_dtype="float16").fit(images)
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        conv_relu_pool(images, np.ones((9, 1)), np.zeros(1), patch_size=3, eps=0.1, compute_dtype="half")
