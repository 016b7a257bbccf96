"""Features: patches and their normalisation, ZCA whitening, extreme-point (and comparison) filters, conv/ReLU/pool."""

from .extreme_points import ExtremePointFilters, extreme_point_filters
from .feature_map import ConvReLUPool, conv_relu_pool
from .filter_banks import GaussianFilters, KMeansFilters, RandomPatchFilters
from .patches import normalize_patches, sample_patches
from .simplex_qp import min_norm_point
from .whitening import PatchWhitener, ZCAWhitener

__all__ = ["ConvReLUPool", "ExtremePointFilters", "GaussianFilters", "KMeansFilters", "PatchWhitener",
           "RandomPatchFilters", "ZCAWhitener", "conv_relu_pool", "extreme_point_filters", "min_norm_point",
           "normalize_patches", "sample_patches"]
