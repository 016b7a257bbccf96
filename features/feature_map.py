"""Convolution, ReLU and spatial pooling (Algorithm 2, step 7).

Every ``k x k`` patch of an image (valid positions, a configurable stride) is normalised exactly as the
sampled patches were (:func:`features.patches.normalize_patches`), whitened with the same ZCA transform,
multiplied by the filters, passed through ``max(., 0)`` and pooled over a ``grid x grid`` partition of
the response map. The whitening and the filters fold into one ``d x F`` matrix
(:meth:`features.whitening.PatchWhitener.fold`), so each chunk of images costs one GEMM and one pass
over its responses (:mod:`features.pooling`). Computed with torch, chunk by chunk, into a caller-provided
output array (which may be a memory map).

The patch normalisation is computed in float32; the filter product, the offsets (thresholds) and the
responses in the *compute dtype*: float32, or bfloat16 (float32 accumulation in the GEMM; the negated
side of the two-sided encoding and the pooling in float32) where the device multiplies bfloat16 matrices
fast. ``"auto"`` decides per device by a short
calibration product (:func:`calibrate`), not by the processor's name.
"""

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from .extreme_points import ExtremePointFilters
from .compute_dtype import COMPUTE_DTYPES, TORCH_DTYPES, resolve_compute_dtype
from .images import check_images, pixel_scale
from .parameters import (DEVICE, IMAGE_SHAPE, NON_NEGATIVE, POSITIVE, POSITIVE_INT, RANDOM_STATE, HasMethods,
                         Interval, RealNotInt, StrOptions)
from .patches import sample_patches
from .pooling import relu_pool
from .stage_protocol import Uncached
from .whitening import PatchWhitener

POOLINGS = ("max", "sum", "mean")
# What the None defaults of ConvReLUPool resolve to, where the images allow it.
DEFAULT_PATCH_SIZE, DEFAULT_N_PATCHES, DEFAULT_GRID = 5, 1000, 2
# The feature GEMM runs on a multiple of this many rows (padded): BLAS kernels round a row's dot products
# differently for a handful of rows than for many, so without it an image's features would depend on how
# many images share its chunk (e.g. 1 x 1 images, one row each).
GEMM_ROW_MULTIPLE = 64


class EmptyFilterBankError(ValueError):
    """Every sampled patch lies inside the convex hull of the others: the images are too uniform for filters."""


def output_size(image_size, patch_size, stride):
    """Number of valid patch positions along one image axis."""
    return (image_size - patch_size) // stride + 1


def region_edges(length, grid):
    """Boundaries of ``grid`` near-equal intervals of ``range(length)``, as ``grid + 1`` ints."""
    if grid > length:
        raise ValueError(f"pooling grid {grid} is finer than the {length} response positions")
    return np.linspace(0, length, grid + 1).round().astype(int)


def conv_relu_pool(images, weights, offset, *, patch_size, eps, normalize=True, stride=1, pooling="sum",
                   grid=2, memory_mb=32, device="cpu", negated_offset=None, compute_dtype="float32", out=None,
                   progress=None):
    """Pooled ReLU responses ``max(q W + offset, 0)`` of every normalised patch ``q`` of every image.

    Parameters
    ----------
    images : array (N, H, W, C), uint8 (scaled by 1/255) or float (taken as is)
    weights : (d, F) float, ``d = C * k * k`` in channel-first patch order: the filters with the
        whitening folded in (:meth:`features.whitening.PatchWhitener.fold`)
    offset : (F,) float, added to each response before the ReLU
    patch_size : int ``k``; eps : per-patch normalisation constant (see :mod:`features.patches`)
    normalize : bool, normalise each patch before the product
    stride : int, step between patch positions
    pooling : "max", "sum" or "mean" over each region of a ``grid x grid`` partition
    memory_mb : float, budget for one chunk's intermediate arrays, in MiB
    device : torch device string ("cpu", "cuda")
    negated_offset : (F,) float or None: also the responses to the negated filters,
        ``max(-q W + negated_offset, 0)``, from the same product (one GEMM for both sides)
    compute_dtype : "float32", "bfloat16" or "auto" (:func:`resolve_compute_dtype`): the dtype of the
        filter product, the offsets and the responses; patches are normalised and responses pooled
        (accumulated) in float32 either way
    out : float array (N, F' * grid**2) to write into (e.g. a memory map); allocated if None
    progress : callable(int) or None, called with the number of images done after each chunk

    Returns
    -------
    float32 array (N, F' * grid**2), ``F' = F`` (``2F`` with ``negated_offset``, the negated filters
    second); feature ``f * grid**2 + region`` is filter ``f`` pooled over ``region`` (row-major).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    dtype = TORCH_DTYPES[resolve_compute_dtype(compute_dtype, device)]
    n_images, height, width, _ = images.shape
    patch_dim, n_filters = weights.shape
    n_sides = 1 if negated_offset is None else 2
    rows = region_edges(output_size(height, patch_size, stride), grid)
    cols = region_edges(output_size(width, patch_size, stride), grid)
    # the offset rides in the GEMM as the weights' last row, against a constant 1 after each patch
    affine = _as_tensor(np.vstack([np.asarray(weights), np.asarray(offset)[None]]), dtype, device)
    # the negated side from the first one's responses r = qW + offset: -qW + negated_offset = both - r
    both_offsets = None if negated_offset is None else np.asarray(offset) + np.asarray(negated_offset)
    scale = pixel_scale(images.dtype)
    if out is None:
        out = np.empty((n_images, n_filters * n_sides * (len(rows) - 1) * (len(cols) - 1)), dtype=np.float32)
    n_positions = rows[-1] * cols[-1]
    chunk = chunk_size(n_positions, patch_dim, n_filters, memory_mb, affine.element_size())
    # buffers reused by all chunks: the patches (and the constant 1) and the responses, image by image
    buffer_rows = _padded(min(chunk, n_images) * n_positions)
    inputs = torch.ones((buffer_rows, patch_dim + 1), dtype=dtype, device=device)
    responses = torch.empty((buffer_rows, n_filters), dtype=dtype, device=device)
    with torch.inference_mode():
        for start in range(0, n_images, chunk):
            # a private copy: the input may be a read-only memory map, and is never written to
            batch = torch.from_numpy(np.array(images[start:start + chunk])).to(device)
            pixels = batch.permute(0, 3, 1, 2).to(torch.float32) * scale
            n_rows = len(batch) * n_positions
            patches = inputs[:n_rows, :patch_dim].view(len(batch), rows[-1], cols[-1], patch_dim)
            _patches(pixels, patch_size, stride, eps if normalize else None, out=patches)
            # the GEMM on padded rows (GEMM_ROW_MULTIPLE); the rows past n_rows are discarded
            torch.matmul(inputs[:_padded(n_rows)], affine, out=responses[:_padded(n_rows)])
            pooled = relu_pool(responses[:n_rows].view(len(batch), rows[-1], cols[-1], n_filters), rows, cols,
                               pooling, both_offsets)
            out[start:start + len(batch)] = pooled.cpu().numpy()
            if progress is not None:
                progress(len(batch))
    return out


def _padded(n_rows):
    """``n_rows`` rounded up to a multiple of :data:`GEMM_ROW_MULTIPLE`."""
    return -(-n_rows // GEMM_ROW_MULTIPLE) * GEMM_ROW_MULTIPLE


def _as_tensor(array, dtype, device):
    """``array`` as a torch tensor of ``dtype`` on ``device``, rounded once from float32."""
    return torch.as_tensor(np.asarray(array, dtype=np.float32), device=device).to(dtype)


def response_std(filters, patches):
    """(F,) standard deviation of each filter's response ``patches @ filters.T`` over the patches.

    ``filters`` (F, d), ``patches`` (P, d): through the (d, d) patch covariance, ``sqrt(u^T C u)``, so that
    no (P, F) response matrix is formed (40,000 x 40,000 at the paper's scale).
    """
    covariance = np.cov(np.asarray(patches, dtype=np.float64), rowvar=False).reshape(patches.shape[1], -1)
    variances = ((filters @ covariance) * filters).sum(axis=1)
    return np.sqrt(np.clip(variances, 0.0, None))


def chunk_size(n_positions, patch_dim, n_filters, memory_mb, itemsize=4):
    """Images per chunk so that one chunk's responses (``itemsize`` bytes per value: 4 for float32, 2
    for bfloat16) and float32 patches (x3) fit ``memory_mb``."""
    per_image = n_positions * (n_filters * itemsize + 3 * patch_dim * 4)
    return max(1, int(memory_mb * 2**20 // per_image))


def _patches(pixels, patch_size, stride, eps, out):
    """Write the patches of float images (n, C, H, W) into ``out`` (n, h, w, d) (any strides and float
    dtype), channel-first, normalised in float32 unless eps is None."""
    # (n, h, w, C, k, k) windows: a view of the pixels; gathered by one copy
    windows = pixels.unfold(2, patch_size, stride).unfold(3, patch_size, stride).permute(0, 2, 3, 1, 4, 5)
    if eps is None:
        out.unflatten(3, windows.shape[3:]).copy_(windows)
        return
    patches = windows.reshape(out.shape)
    patches = patches - patches.mean(dim=3, keepdim=True)
    scale = patches.square().mean(dim=3, keepdim=True).add_(eps).rsqrt_()
    torch.mul(patches, scale, out=out)


class ConvReLUPool(TransformerMixin, BaseEstimator):
    """Images -> pooled ReLU responses to a filter bank learned from their patches (steps 2-7).

    ``fit`` samples ``n_patches`` patches at distinct positions, fits the patch normalisation and
    whitening (``whitener``) and the filter bank (``filter_bank``, extreme points by default) on them;
    ``transform`` computes :func:`conv_relu_pool` with the whitening folded into the filters.

    Parameters
    ----------
    patch_size : int, side ``k`` of the square patches; None: 5, or the images' shorter side if smaller
        (so that plain feature vectors, read as 1 x 1 images, work with the defaults)
    n_patches : int >= 2 (a count), float in (0, 1] (a fraction of all patch positions), or None: 1,000,
        or all patch positions if there are fewer
    whitener : :class:`features.whitening.PatchWhitener` or None: the default one, except that plain
        feature vectors (1 x 1 images, e.g. a 2-D table without ``image_shape``) are not normalised per
        patch (``normalize=False``: a vector's own mean and scale are information, not lighting)
    filter_bank : a transformer whose ``fit(patches)`` sets ``filters_`` (F, d) and ``bias_`` (F,),
        :class:`features.extreme_points.ExtremePointFilters` if None
    stride, pooling, memory_mb, device : see :func:`conv_relu_pool`
    grid : int, pool over ``grid x grid`` regions; None: 2, or the response map's shorter side if smaller
    compute_dtype : see :func:`conv_relu_pool`; ``"auto"`` (the default) is resolved by each process where
        ``transform`` runs (:func:`resolve_compute_dtype`): pass the resolved dtype when blocks of images are
        transformed by other processes or machines that must agree (the training job does)
    two_sided : bool, also the responses to the negated filters, ``max(-(z u + b) - t, 0)`` (2F filters)
    centered : bool, subtract from each response the mean response over all filters at the same position,
        ``z u + b - mean_j (z u_j + b_j)``, before the threshold and the ReLU: Coates, Lee and Ng 2011's
        triangle encoding (a per-position adaptive threshold); the mean is linear in ``z``, so it folds into
        the filters (``u - mean_j u_j``, ``b - mean_j b_j``) and costs nothing at transform time
    threshold : float >= 0, soft threshold ``alpha`` of the ReLU, in units of each filter's response
        standard deviation ``s`` over the sampled (whitened) patches: responses are ``max(z u + b - t, 0)``
        with ``t = alpha s`` (Coates and Ng 2011's soft-threshold encoder; 0 is the plain ReLU)
    image_shape : None, (H, W) or (H, W, C): the shape of one image when rows are flattened
        (see :mod:`features.images`)
    random_state : int, numpy Generator or None, seeds the patch sampling
    verbose : int, progress bar over images in ``transform`` when > 0

    Attributes
    ----------
    whitener_ : fitted whitener; filter_bank_ : fitted filter bank
    weights_ : (d, F) and offset_ : (F,), the folded affine map of normalised patches ((d, 2F) and (2F,),
        the negated filters second, when ``two_sided``), centring and thresholds included
    patch_size_, n_patches_, grid_ : the patch side, patch count and pooling grid used (defaults resolved)
    image_shape_ : (H, W, C) seen in fit; n_features_in_ : ``H * W * C``
    """

    _parameter_constraints = {
        "patch_size": [POSITIVE_INT, None], "n_patches": [Interval(numbers.Integral, 2, None, closed="left"),
                                                           Interval(RealNotInt, 0, 1, closed="right"), None],
        "whitener": [HasMethods(["fit", "transform", "fold"]), None], "filter_bank": [HasMethods(["fit"]), None],
        "stride": [POSITIVE_INT], "pooling": [StrOptions(set(POOLINGS))], "grid": [POSITIVE_INT, None],
        "memory_mb": [POSITIVE], "device": DEVICE, "compute_dtype": [StrOptions(set(COMPUTE_DTYPES))],
        "two_sided": ["boolean"], "centered": ["boolean"], "threshold": [NON_NEGATIVE],
        "image_shape": IMAGE_SHAPE, "random_state": RANDOM_STATE, "verbose": ["verbose"],
    }

    def __init__(self, patch_size=None, n_patches=None, whitener=None, filter_bank=None, stride=1,
                 pooling="sum", grid=None, memory_mb=32, device="cpu", compute_dtype="auto", two_sided=False,
                 centered=False, threshold=0.0, image_shape=None, random_state=None, verbose=0):
        self.patch_size = patch_size
        self.n_patches = n_patches
        self.whitener = whitener
        self.filter_bank = filter_bank
        self.stride = stride
        self.pooling = pooling
        self.grid = grid
        self.memory_mb = memory_mb
        self.device = device
        self.compute_dtype = compute_dtype
        self.two_sided = two_sided
        self.centered = centered
        self.threshold = threshold
        self.image_shape = image_shape
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None, stages=None):
        """Learn the whitening and the filters from patches of images ``X`` (see :mod:`features.images`).

        ``stages``: a stage runner (:mod:`features.stage_protocol`) that may cache the whitening and filters.
        """
        self._validate_params()
        stages = Uncached() if stages is None else stages
        images = check_images(X, self.image_shape)
        self.patch_size_, self.grid_, self.n_patches_ = self._resolved(images.shape[1:], len(images))
        patches = sample_patches(images, self.patch_size_, self.n_patches_, np.random.default_rng(self.random_state))
        plain_vectors = images.shape[1:3] == (1, 1)
        whitener = clone(self.whitener) if self.whitener is not None else PatchWhitener(normalize=not plain_vectors)
        self.whitener_ = stages.fit("whitening", whitener, patches)
        filter_bank = clone(self.filter_bank) if self.filter_bank is not None else ExtremePointFilters()
        whitened = self.whitener_.transform(patches)
        self.filter_bank_ = stages.fit("filters", filter_bank, whitened)
        filters, bias = self.filter_bank_.filters_, self.filter_bank_.bias_
        if len(filters) == 0:
            raise EmptyFilterBankError(f"the filter bank is empty: all {self.n_patches_} patches lie inside the convex hull of "
                             "the others (constant or repeated patches); use more varied images")
        if self.centered:
            if len(filters) < 2:
                raise ValueError("centered=True subtracts the mean response over the filters, which leaves a single "
                                 "filter with none: use centered=False or more patches")
            filters, bias = filters - filters.mean(axis=0), bias - np.mean(bias)
        self.weights_, offset = self.whitener_.fold(filters, bias)
        thresholds = self.threshold * response_std(filters, whitened) if self.threshold else 0.0
        self.offset_ = offset - thresholds
        if self.two_sided:
            self.weights_ = np.hstack([self.weights_, -self.weights_])
            self.offset_ = np.hstack([self.offset_, -offset - thresholds])
        self.image_shape_ = tuple(int(s) for s in images.shape[1:])
        self.n_features_in_ = int(np.prod(self.image_shape_))
        return self

    def transform(self, X):
        """Pooled features, float32 (N, F * grid**2), of images ``X`` (2F filters when ``two_sided``)."""
        check_is_fitted(self, "weights_")
        images = check_images(X, self.image_shape, self.image_shape_, type(self).__name__)
        # two-sided: the second half of weights_ is the negated first half, so one GEMM serves both
        n_filters = self.weights_.shape[1] // (2 if self.two_sided else 1)
        negated_offset = self.offset_[n_filters:] if self.two_sided else None
        with tqdm(total=len(images), desc="features", unit="img", leave=False,
                  disable=None if self.verbose else True) as bar:
            return conv_relu_pool(
                images, self.weights_[:, :n_filters], self.offset_[:n_filters], patch_size=self.patch_size_,
                eps=self.whitener_.eps, normalize=self.whitener_.normalize, stride=self.stride,
                pooling=self.pooling, grid=self.grid_, memory_mb=self.memory_mb, device=self.device,
                negated_offset=negated_offset, compute_dtype=self.compute_dtype, progress=bar.update)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # features are float32 for any input
        return tags

    def check_images(self, image_shape, n_images):
        """Raise ValueError unless ``n_images`` images of ``image_shape`` (H, W, C) suit the parameters."""
        self._validate_params()
        self._resolved(image_shape, n_images)

    def _resolved(self, image_shape, n_images):
        """``(patch_size, grid, n_patches)`` for these images, defaults resolved, each checked to fit."""
        height, width, _ = image_shape
        side = min(height, width)
        patch_size = min(DEFAULT_PATCH_SIZE, side) if self.patch_size is None else self.patch_size
        if patch_size > side:
            raise ValueError(f"patch_size {patch_size} is larger than the images ({height} x {width}): "
                             f"use at most {side}")
        response = output_size(side, patch_size, self.stride)
        grid = min(DEFAULT_GRID, response) if self.grid is None else self.grid
        if grid > response:
            raise ValueError(f"grid {grid} is finer than the response map ({response} positions along "
                             "the shorter side)")
        available = n_images * (height - patch_size + 1) * (width - patch_size + 1)
        if available < 2:
            raise ValueError(f"filters need at least 2 patch positions, but n_samples={n_images} image(s) of "
                             f"{height} x {width} have {available} for {patch_size} x {patch_size} patches; "
                             "pass more images")
        return patch_size, grid, self._patch_count(available)

    def _patch_count(self, available):
        """``n_patches`` as a count of at most ``available`` distinct patch positions."""
        if self.n_patches is None:
            return min(DEFAULT_N_PATCHES, available)
        if isinstance(self.n_patches, numbers.Real) and not isinstance(self.n_patches, numbers.Integral):
            return max(2, int(round(self.n_patches * available)))
        if self.n_patches > available:
            raise ValueError(f"n_patches {self.n_patches} exceeds the {available} distinct patch positions in "
                             "the training images")
        return int(self.n_patches)
