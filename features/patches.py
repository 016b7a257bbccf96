"""Patch sampling and per-patch normalisation (Algorithm 2, steps 2-3).

A patch is a ``k x k`` window over all ``C`` channels of an image, flattened channel-first, i.e. in
``(C, k, k)`` order, to a vector of ``d = C * k * k`` values. That is the order of
``torch.nn.functional.unfold`` and of ``conv2d`` weights, so the feature stage can use the filters as
they are. uint8 pixels are scaled to ``[0, 1]`` first: ``eps`` is in units of the variance of
``[0, 1]`` intensities.
"""

import numpy as np

from .images import pixel_scale


def patch_dim(patch_size, n_channels):
    """Length ``d = C * k * k`` of a flattened ``k x k x C`` patch."""
    return n_channels * patch_size * patch_size


def sample_patches(images, patch_size, n_patches, rng):
    """Sample patches at distinct, uniformly random positions (image, row, column) of the images.

    Parameters
    ----------
    images : array (N, H, W, C), uint8 (scaled by 1/255) or float (taken as is), see
        :mod:`features.images`
    patch_size : int, the side ``k`` of the square patch, ``k <= min(H, W)``
    n_patches : int, the number ``P`` of patches, at most ``N (H - k + 1) (W - k + 1)``
    rng : numpy.random.Generator

    Returns
    -------
    float64 array, shape (P, C * k * k): raw patches, channel-first flattening.
    """
    n_images, height, width, n_channels = images.shape
    if patch_size > min(height, width):
        raise ValueError(f"patch_size {patch_size} is larger than the images ({height} x {width})")
    rows, cols = height - patch_size + 1, width - patch_size + 1
    available = n_images * rows * cols
    if n_patches > available:
        raise ValueError(f"cannot sample {n_patches} distinct patches: the {n_images} images have only "
                         f"{available} positions for {patch_size} x {patch_size} patches")
    position = rng.choice(available, size=n_patches, replace=False)
    image_index, position = np.divmod(position, rows * cols)
    top, left = np.divmod(position, cols)
    offsets = np.arange(patch_size)
    rows = (top[:, None] + offsets)[:, :, None]
    cols = (left[:, None] + offsets)[:, None, :]
    windows = images[image_index[:, None, None], rows, cols]  # (P, k, k, C)
    windows = windows.transpose(0, 3, 1, 2).reshape(n_patches, -1)
    return windows.astype(np.float64) * pixel_scale(images.dtype)


def normalize_patches(patches, eps):
    """Per-patch contrast normalisation ``(p - mean(p)) / sqrt(var(p) + eps)`` (Algorithm 2, step 3).

    Parameters
    ----------
    patches : float array, shape (P, d), pixel values in [0, 1]
    eps : float >= 0, added to each patch's variance (units of [0, 1] intensity squared)

    Returns
    -------
    float64 array, shape (P, d)
    """
    patches = np.asarray(patches, dtype=np.float64)
    centred = patches - patches.mean(axis=1, keepdims=True)
    variance = (centred * centred).mean(axis=1, keepdims=True)
    return centred / np.sqrt(variance + eps)
