"""Convolution, ReLU and spatial pooling (Algorithm 2, step 7).

Every ``k x k`` patch of an image (valid positions, a configurable stride) is normalised exactly as the
sampled patches were (:func:`features.patches.normalize_patches`), whitened with the same ZCA transform,
multiplied by the filters, passed through ``max(., 0)`` and pooled over a ``grid x grid`` partition of
the response map. The whitening and the filters fold into one ``d x F`` matrix, so each chunk of images
costs one GEMM. Computed with torch in float32, chunk by chunk, into a caller-provided output array
(which may be a memory map).
"""

import numpy as np
import torch
import torch.nn.functional as functional

POOLINGS = ("max", "sum", "mean")


def output_size(image_size, patch_size, stride):
    """Number of valid patch positions along one image axis."""
    return (image_size - patch_size) // stride + 1


def region_edges(length, grid):
    """Boundaries of ``grid`` near-equal intervals of ``range(length)``, as ``grid + 1`` ints."""
    if grid > length:
        raise ValueError(f"pooling grid {grid} is finer than the {length} response positions")
    return np.linspace(0, length, grid + 1).round().astype(int)


def conv_relu_pool(images, filters, *, patch_size, eps, stride=1, whitener=None, bias=None,
                   pooling="sum", grid=2, memory_mb=32, device="cpu", out=None, progress=None):
    """Pooled ReLU responses of every image to every filter.

    Parameters
    ----------
    images : uint8 array (N, H, W, C)
    filters : float array (F, d), ``d = C * k * k``, in the (whitened) patch space, channel-first order
    patch_size : int ``k``; eps : per-patch normalisation constant (see :mod:`features.patches`)
    stride : int, step between patch positions
    whitener : fitted :class:`features.whitening.ZCAWhitener` or None
    bias : (F,) float or None, added to each response before the ReLU
    pooling : "max", "sum" or "mean" over each region of a ``grid x grid`` partition
    memory_mb : float, budget for one chunk's intermediate arrays, in MiB
    device : torch device string ("cpu", "cuda")
    out : float array (N, F * grid**2) to write into (e.g. a memory map); allocated if None
    progress : callable(int) or None, called with the number of images done after each chunk

    Returns
    -------
    float32 array (N, F * grid**2); feature ``f * grid**2 + region`` is filter ``f`` pooled over
    ``region`` (row-major over the grid).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    n_images, height, width, _ = images.shape
    n_filters = len(filters)
    rows = region_edges(output_size(height, patch_size, stride), grid)
    cols = region_edges(output_size(width, patch_size, stride), grid)
    weights, offset = _fold_whitening(filters, whitener, bias, device)
    if out is None:
        out = np.empty((n_images, n_filters * grid * grid), dtype=np.float32)
    chunk = _chunk_size(rows[-1] * cols[-1], weights.shape[0] + n_filters, memory_mb)
    with torch.inference_mode():
        for start in range(0, n_images, chunk):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + chunk])).to(device)
            responses = _responses(batch, weights, offset, patch_size, stride, eps)
            responses = responses.reshape(len(batch), rows[-1], cols[-1], n_filters)
            out[start:start + len(batch)] = _pool(responses, rows, cols, pooling).cpu().numpy()
            if progress is not None:
                progress(len(batch))
    return out


def _fold_whitening(filters, whitener, bias, device):
    """Fold ZCA and filters into ``weights`` (d, F) and ``offset`` (F,), float32 tensors.

    ``relu(((p - mean) W) U^T + b) = relu(p (W U^T) + (b - mean W U^T))``.
    """
    weights = np.asarray(filters, dtype=np.float64).T
    offset = np.zeros(weights.shape[1]) if bias is None else np.asarray(bias, dtype=np.float64).copy()
    if whitener is not None:
        weights = whitener.whitening_ @ weights
        offset -= whitener.mean_ @ weights
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    return as_tensor(weights), as_tensor(offset)


def _chunk_size(n_positions, width, memory_mb):
    """Images per chunk so that the float32 patch and response arrays fit ``memory_mb`` (x2 slack)."""
    per_image = n_positions * width * 4 * 2
    return max(1, int(memory_mb * 2**20 // per_image))


def _responses(batch, weights, offset, patch_size, stride, eps):
    """ReLU responses (n, L, F) of the normalised patches of a uint8 batch (n, H, W, C)."""
    pixels = batch.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    patches = functional.unfold(pixels, patch_size, stride=stride).transpose(1, 2)  # (n, L, d)
    patches = patches - patches.mean(dim=2, keepdim=True)
    variance = patches.square().mean(dim=2, keepdim=True)
    patches = patches * torch.rsqrt(variance + eps)
    return torch.relu_(torch.matmul(patches, weights).add_(offset))


def _pool(responses, rows, cols, pooling):
    """Pool (n, h, w, F) responses over the grid regions -> (n, F * regions), filter-major."""
    reduce = {"max": lambda r: r.amax(dim=(1, 2)), "sum": lambda r: r.sum(dim=(1, 2)),
              "mean": lambda r: r.mean(dim=(1, 2))}[pooling]
    pooled = [reduce(responses[:, r0:r1, c0:c1])
              for r0, r1 in zip(rows[:-1], rows[1:]) for c0, c1 in zip(cols[:-1], cols[1:])]
    return torch.stack(pooled, dim=2).flatten(1)
