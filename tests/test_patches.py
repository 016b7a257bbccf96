"""Patch sampling and normalisation (features/patches.py)."""

import numpy as np
import pytest

from features.patches import normalize_patches, patch_dim, sample_patches


def random_images(n=6, height=9, width=7, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, channels), dtype=np.uint8)


def test_sampled_patches_are_windows_of_the_images_in_channel_first_order():
    images = random_images()
    patches = sample_patches(images, 4, 50, np.random.default_rng(1))
    assert patches.shape == (50, patch_dim(4, 3))
    windows = {images[n, r:r + 4, c:c + 4].transpose(2, 0, 1).tobytes()
               for n in range(6) for r in range(6) for c in range(4)}
    for patch in patches:
        assert np.round(patch * 255).astype(np.uint8).tobytes() in windows


def test_patches_come_from_distinct_positions_and_cannot_outnumber_them():
    images = random_images(n=2, height=5, width=4, channels=1)
    every = sample_patches(images, 3, 2 * 3 * 2, np.random.default_rng(0))  # all 12 positions
    windows = {images[n, r:r + 3, c:c + 3].tobytes() for n in range(2) for r in range(3) for c in range(2)}
    assert {np.round(p * 255).astype(np.uint8).tobytes() for p in every} == windows
    with pytest.raises(ValueError, match="cannot sample 13 distinct patches: the 2 images have only 12"):
        sample_patches(images, 3, 13, np.random.default_rng(0))


def test_patch_sampling_is_seeded():
    images = random_images()
    first = sample_patches(images, 3, 20, np.random.default_rng(7))
    again = sample_patches(images, 3, 20, np.random.default_rng(7))
    other = sample_patches(images, 3, 20, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_patch_larger_than_image_is_rejected():
    with pytest.raises(ValueError, match="larger than the images"):
        sample_patches(random_images(height=3, width=3), 4, 5, np.random.default_rng(0))


def test_normalised_patches_have_zero_mean_and_unit_variance_without_eps():
    patches = np.random.default_rng(0).random((30, 12))
    normalised = normalize_patches(patches, eps=0.0)
    np.testing.assert_allclose(normalised.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(normalised.var(axis=1), 1, rtol=1e-12)
    damped = normalize_patches(patches, eps=0.5)
    expected = (patches - patches.mean(1, keepdims=True)) / np.sqrt(patches.var(1, keepdims=True) + 0.5)
    np.testing.assert_allclose(damped, expected, rtol=1e-12)
