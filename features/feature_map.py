"""Convolution, ReLU and spatial pooling (Algorithm 2, step 7).

Every ``k x k`` patch of an image (valid positions, a configurable stride) is normalised exactly as the
sampled patches were (:func:`features.patches.normalize_patches`), whitened with the same ZCA transform,
multiplied by the filters, passed through ``max(., 0)`` and pooled over a ``grid x grid`` partition of
the response map. The whitening and the filters fold into one ``d x F`` matrix
(:meth:`features.whitening.PatchWhitener.fold`), so each chunk of images costs one GEMM. Computed with
torch, chunk by chunk, into a caller-provided output array (which may be a memory map).

The patch normalisation is computed in float32; the filter product, the offsets (thresholds) and the
two-sided encoding in the *compute dtype*: float32, or bfloat16 (float32 accumulation in the GEMM and in
the pooling) where the device multiplies bfloat16 matrices fast. ``"auto"`` decides per device by a short
calibration product (:func:`calibrate`), not by the processor's name.
"""

import numbers
import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as functional
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from .extreme_points import ExtremePointFilters
from .images import check_images, pixel_scale
from .patches import sample_patches
from .stages import Uncached
from .whitening import PatchWhitener

POOLINGS = ("max", "sum", "mean")
COMPUTE_DTYPES = ("float32", "bfloat16", "auto")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# The calibration product: (rows x patch values) @ (patch values x filters), the shape of a feature GEMM
# (CIFAR-10's 6 x 6 x 3 patches) at about 0.5 GFLOP: a few ms in either dtype where bfloat16 is fast.
CALIBRATION_SHAPE = (4096, 108, 512)
# "auto" computes in bfloat16 where its product runs at least this many times as fast as float32's.
BFLOAT16_MIN_SPEEDUP = 1.5


class Calibration(NamedTuple):
    """What ``compute_dtype="auto"`` chose on one device, and the product speeds (GFLOP/s) it chose by."""

    compute_dtype: str
    bfloat16_gflops: float
    float32_gflops: float


_calibrations = {}  # torch device string -> Calibration, measured once per process


def product_gflops(device, shape=CALIBRATION_SHAPE, repeats=5):
    """{"float32": GFLOP/s, "bfloat16": GFLOP/s} of one ``(m, d) @ (d, F)`` product (``shape = (m, d, F)``)
    on ``device``: the fastest of ``repeats`` timed runs after a warm-up one, the two dtypes in turn (so that
    other load on the machine slows both alike); 0.0 for a dtype the device cannot multiply."""
    rows, depth, columns = shape
    generator = torch.Generator().manual_seed(0)
    left, right = (torch.randn(size, generator=generator).to(device) for size in ((rows, depth), (depth, columns)))
    operands = {}
    for name, dtype in TORCH_DTYPES.items():
        operands[name] = (left.to(dtype), right.to(dtype), torch.empty((rows, columns), dtype=dtype, device=device))
    seconds = {name: [] for name in operands}
    for _ in range(repeats + 1):
        for name in list(operands):
            try:
                seconds[name].append(_product_seconds(*operands[name]))
            except RuntimeError:  # e.g. no GEMM kernel for this dtype on this device
                del operands[name]
    return {name: 2.0 * rows * depth * columns / min(times[1:]) / 1e9 if len(times) > 1 else 0.0
            for name, times in seconds.items()}


def _product_seconds(left, right, product):
    """Wall-clock seconds of ``torch.matmul(left, right, out=product)``, the device synchronised."""
    _synchronize(left.device)
    start = time.perf_counter()
    torch.matmul(left, right, out=product)
    _synchronize(left.device)
    return time.perf_counter() - start


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def calibrate(device="cpu"):
    """The :class:`Calibration` of ``device``: bfloat16 where its product is at least
    :data:`BFLOAT16_MIN_SPEEDUP` times as fast as float32's, measured once per process and device."""
    key = str(torch.device(device))
    if key not in _calibrations:
        with torch.inference_mode():
            speeds = product_gflops(device)
        fast = speeds["bfloat16"] > 0 and speeds["bfloat16"] >= BFLOAT16_MIN_SPEEDUP * speeds["float32"]
        _calibrations[key] = Calibration("bfloat16" if fast else "float32", speeds["bfloat16"], speeds["float32"])
    return _calibrations[key]


def compute_dtype_report(compute_dtype, device="cpu"):
    """What ``compute_dtype`` resolves to on ``device``, for logs and metrics: a dict of ``requested``,
    ``used`` and ``reason`` (a phrase), and for ``"auto"`` the calibration's ``bfloat16_gflops`` and
    ``float32_gflops``."""
    used = resolve_compute_dtype(compute_dtype, device)
    report = {"requested": compute_dtype, "used": used, "reason": "set explicitly"}
    if compute_dtype == "auto":
        speeds = calibrate(device)
        report.update(bfloat16_gflops=round(speeds.bfloat16_gflops, 1), float32_gflops=round(speeds.float32_gflops, 1),
                      reason=f"calibration: bf16 {speeds.bfloat16_gflops:.0f} GFLOP/s vs fp32 "
                             f"{speeds.float32_gflops:.0f} GFLOP/s")
    return report


def resolve_compute_dtype(compute_dtype, device="cpu"):
    """``"float32"`` or ``"bfloat16"``: ``compute_dtype`` itself, or the calibration's choice for ``"auto"``."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
    return calibrate(device).compute_dtype if compute_dtype == "auto" else compute_dtype


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
    both_offsets = (_as_tensor(np.asarray(offset) + np.asarray(negated_offset), dtype, device)
                    if n_sides == 2 else None)
    scale = pixel_scale(images.dtype)
    n_pooled = n_filters * grid * grid
    if out is None:
        out = np.empty((n_images, n_pooled * n_sides), dtype=np.float32)
    n_positions = rows[-1] * cols[-1]
    chunk = chunk_size(n_positions, patch_dim, n_filters * n_sides, memory_mb, affine.element_size())
    # buffers reused by all chunks: the patches (and the constant 1) and the responses of each side, in
    # (response row, image, response column) order, so that a row of all the chunk's images is one slab;
    # the negated side is read from the first before that is overwritten in place
    buffer_rows = min(chunk, n_images) * n_positions
    inputs = torch.ones((buffer_rows, patch_dim + 1), dtype=dtype, device=device)
    buffers = [torch.empty((buffer_rows, n_filters), dtype=dtype, device=device) for _ in range(n_sides)]
    with torch.inference_mode():
        for start in range(0, n_images, chunk):
            # a private copy: the input may be a read-only memory map, and is never written to
            batch = torch.from_numpy(np.array(images[start:start + chunk])).to(device)
            pixels = batch.permute(0, 3, 1, 2).to(torch.float32) * scale
            n_rows = len(batch) * n_positions
            patches = inputs[:n_rows, :patch_dim].view(rows[-1], len(batch), cols[-1], patch_dim)
            _patches(pixels, patch_size, stride, eps if normalize else None, out=patches.permute(1, 0, 2, 3))
            responses = [buffer[:n_rows] for buffer in buffers]
            torch.matmul(inputs[:n_rows], affine, out=responses[0])
            if both_offsets is not None:
                torch.sub(both_offsets, responses[0], out=responses[1])
            for side, response in enumerate(responses):
                pooled = _relu_pool(response.view(rows[-1], len(batch), cols[-1], n_filters), rows, cols, pooling)
                out[start:start + len(batch), side * n_pooled:(side + 1) * n_pooled] = pooled.cpu().numpy()
            if progress is not None:
                progress(len(batch))
    return out


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
    patches = functional.unfold(pixels, patch_size, stride=stride).transpose(1, 2)  # (n, h w, d)
    patches = patches.unflatten(1, out.shape[1:3])
    if eps is None:
        out.copy_(patches)
        return
    patches = patches - patches.mean(dim=3, keepdim=True)
    variance = patches.square().mean(dim=3, keepdim=True)
    torch.mul(patches, torch.rsqrt(variance + eps), out=out)


def _relu_pool(responses, rows, cols, pooling):
    """ReLU (in place) and pool (h, n, w, F) responses over the grid regions -> float32 (n, F * regions),
    filter-major.

    Separable: each row band is reduced row by row into a float32 (n, w, F) accumulator (float32
    accumulation for bfloat16 responses; each row a contiguous slab, rectified while in cache), then the
    column bands of the (n, grid, w, F) row bands.
    """
    height, n_images, width, n_filters = responses.shape
    bands = torch.empty((n_images, len(rows) - 1, width, n_filters), dtype=torch.float32, device=responses.device)
    for band, (r0, r1) in enumerate(zip(rows[:-1], rows[1:])):
        _relu_reduce_rows(responses, r0, r1, pooling, out=bands[:, band])
    reduce = (lambda r, dim: r.amax(dim=dim)) if pooling == "max" else (lambda r, dim: r.sum(dim=dim))
    pooled = torch.stack([reduce(bands[:, :, c0:c1], 2) for c0, c1 in zip(cols[:-1], cols[1:])], dim=2)
    if pooling == "mean":
        counts = np.outer(np.diff(rows), np.diff(cols))[None, :, :, None]
        pooled /= torch.as_tensor(counts, dtype=pooled.dtype, device=pooled.device)
    return pooled.permute(0, 3, 1, 2).flatten(1)  # (n, F, grid, grid) -> filter-major


def _relu_reduce_rows(responses, first, stop, pooling, out):
    """Write into float32 ``out`` (n, w, F) the max or the sum of the rectified rows ``first:stop`` of
    (h, n, w, F) responses."""
    combine = torch.maximum if pooling == "max" else torch.add
    out.copy_(responses[first].relu_())
    for row in range(first + 1, stop):
        combine(out, responses[row].relu_(), out=out)


class ConvReLUPool(TransformerMixin, BaseEstimator):
    """Images -> pooled ReLU responses to a filter bank learned from their patches (steps 2-7).

    ``fit`` samples ``n_patches`` patches at distinct positions, fits the patch normalisation and
    whitening (``whitener``) and the filter bank (``filter_bank``, extreme points by default) on them;
    ``transform`` computes :func:`conv_relu_pool` with the whitening folded into the filters.

    Parameters
    ----------
    patch_size : int, side ``k`` of the square patches
    n_patches : int (a count) or float in (0, 1] (a fraction of all patch positions)
    whitener : :class:`features.whitening.PatchWhitener` or None (the default one)
    filter_bank : a transformer whose ``fit(patches)`` sets ``filters_`` (F, d) and ``bias_`` (F,),
        :class:`features.extreme_points.ExtremePointFilters` if None
    stride, pooling, grid, memory_mb, device, compute_dtype : see :func:`conv_relu_pool`; ``compute_dtype``
        ``"auto"`` (the default) is resolved by each process where ``transform`` runs
        (:func:`resolve_compute_dtype`): pass the resolved dtype when blocks of images are transformed by
        other processes or machines that must agree (the training job does)
    two_sided : bool, also the responses to the negated filters, ``max(-(z u + b) - t, 0)`` (2F filters)
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
        the negated filters second, when ``two_sided``), thresholds included
    image_shape_ : (H, W, C) seen in fit; n_features_in_ : ``H * W * C``
    """

    # Checked in fit, after the checks with messages of their own (patch_size, pooling, threshold, stride,
    # grid, n_patches); also a source for the job config's choices and ranges.
    _parameter_constraints = {
        "patch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_patches": [Interval(numbers.Integral, 2, None, closed="left"),
                      Interval(numbers.Real, 0, 1, closed="right")],
        "whitener": [HasMethods(["fit", "transform"]), None],
        "filter_bank": [HasMethods(["fit"]), None],
        "stride": [Interval(numbers.Integral, 1, None, closed="left")],
        "pooling": [StrOptions(set(POOLINGS))],
        "grid": [Interval(numbers.Integral, 1, None, closed="left")],
        "memory_mb": [Interval(numbers.Real, 0, None, closed="neither")],
        "device": [str, torch.device],
        "compute_dtype": [StrOptions(set(COMPUTE_DTYPES))],
        "two_sided": ["boolean"],
        "threshold": [Interval(numbers.Real, 0, None, closed="left")],
        "image_shape": [tuple, list, None],
        "random_state": ["random_state", np.random.Generator],
        "verbose": ["verbose"],
    }

    def __init__(self, patch_size=5, n_patches=1000, whitener=None, filter_bank=None, stride=1,
                 pooling="sum", grid=2, memory_mb=32, device="cpu", compute_dtype="auto", two_sided=False,
                 threshold=0.0, image_shape=None, random_state=None, verbose=0):
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
        self.threshold = threshold
        self.image_shape = image_shape
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None, stages=None):
        """Learn the whitening and the filters from patches of images ``X`` (see :mod:`features.images`).

        ``stages``: a stage runner (:mod:`features.stages`) that may cache the whitening and filters.
        """
        stages = Uncached() if stages is None else stages
        images = check_images(X, self.image_shape)
        self._check_params(images.shape[1:])
        count = self._patch_count(images.shape)
        self._validate_params()  # the parameters without a message of their own above
        patches = sample_patches(images, self.patch_size, count, np.random.default_rng(self.random_state))
        sampling = {"patch_size": self.patch_size, "n_patches": count, "random_state": self.random_state}
        whitener = clone(self.whitener) if self.whitener is not None else PatchWhitener()
        self.whitener_ = stages.fit("whitening", whitener, patches, settings=sampling)
        filter_bank = clone(self.filter_bank) if self.filter_bank is not None else ExtremePointFilters()
        whitened = self.whitener_.transform(patches)
        self.filter_bank_ = stages.fit("filters", filter_bank, whitened)
        filters, bias = self.filter_bank_.filters_, self.filter_bank_.bias_
        if len(filters) == 0:
            raise ValueError(f"the filter bank is empty: all {count} patches lie inside the convex hull of "
                             "the others (constant or repeated patches); use more varied images")
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
                images, self.weights_[:, :n_filters], self.offset_[:n_filters], patch_size=self.patch_size,
                eps=self.whitener_.eps, normalize=self.whitener_.normalize, stride=self.stride,
                pooling=self.pooling, grid=self.grid, memory_mb=self.memory_mb, device=self.device,
                negated_offset=negated_offset, compute_dtype=self.compute_dtype, progress=bar.update)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # features are float32 for any input
        return tags

    def _check_params(self, image_shape):
        height, width, _ = image_shape
        if not (isinstance(self.patch_size, numbers.Integral) and 1 <= self.patch_size <= min(height, width)):
            raise ValueError(f"patch_size must be an integer from 1 to {min(height, width)} for "
                             f"{height} x {width} images, got {self.patch_size!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not (isinstance(self.threshold, numbers.Real) and self.threshold >= 0):
            raise ValueError(f"threshold must be a number >= 0 (response standard deviations), got {self.threshold!r}")
        for name in ("stride", "grid"):
            if not (isinstance(getattr(self, name), numbers.Integral) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        region_edges(output_size(min(height, width), self.patch_size, self.stride), self.grid)

    def _patch_count(self, images_shape):
        """``n_patches`` as a count, checked against the available positions."""
        n_images, height, width, _ = images_shape
        available = n_images * (height - self.patch_size + 1) * (width - self.patch_size + 1)
        if available < 2:
            raise ValueError(f"filters need at least 2 patch positions, but n_samples={n_images} image(s) of "
                             f"{height} x {width} have {available} for {self.patch_size} x {self.patch_size} "
                             "patches; pass more images")
        if isinstance(self.n_patches, numbers.Integral) and 2 <= self.n_patches:
            return int(self.n_patches)
        if isinstance(self.n_patches, numbers.Real) and 0 < self.n_patches <= 1:
            return max(2, int(round(self.n_patches * available)))
        raise ValueError(f"n_patches must be an integer >= 2 or a fraction in (0, 1], got {self.n_patches!r}")
