"""Image arrays as the estimators accept them, and their pixel scale.

Estimators take images as ``(N, H, W, C)`` or ``(N, H, W)`` arrays, or flattened as ``(N, H * W * C)``
rows together with an ``image_shape``. A 2-D array without ``image_shape`` is read as ``N`` images of
one pixel with ``D`` channels (plain feature vectors, which need ``patch_size=1``).

Pixel scale (torchvision's ``ToTensor`` convention): ``uint8`` images are divided by 255, so
intensities lie in ``[0, 1]``; images of any other numeric dtype are taken as they are.
"""

import numpy as np
from sklearn.utils import check_array


def check_images(X, image_shape=None, expected_shape=None, estimator_name="the estimator"):
    """Validate ``X`` and return it as an image array of shape (N, H, W, C).

    Parameters
    ----------
    X : array-like, (N, H, W, C), (N, H, W) or (N, D)
    image_shape : None, (H, W) or (H, W, C), the shape of one image when ``X`` is flattened
    expected_shape : None or (H, W, C), the shape seen in ``fit`` (checked when given)

    Returns
    -------
    uint8 array (N, H, W, C) if ``X`` is uint8, else float array; never copied when already valid.
    Raises ValueError naming the first sample with a NaN or infinite value.
    """
    _check_same_shapes(X)
    X = check_array(X, dtype="numeric", allow_nd=True, ensure_all_finite=False, ensure_min_features=1)
    if X.dtype.kind not in "uif":
        X = X.astype(np.float64)
    images = _as_4d(X, image_shape)
    _check_finite(images)
    if expected_shape is not None and images.shape[1:] != tuple(expected_shape):
        if X.ndim == 2 and X.shape[1] != int(np.prod(expected_shape)):
            raise ValueError(f"X has {X.shape[1]} features, but {estimator_name} is expecting "
                             f"{int(np.prod(expected_shape))} features as input.")
        raise ValueError(f"images have shape {describe(images.shape[1:])} but {estimator_name} was fitted "
                         f"on {describe(expected_shape)} images; pass images of that shape")
    return images


def _as_4d(X, image_shape):
    """Reshape a validated numeric array to (N, H, W, C)."""
    if X.ndim == 4:
        return X
    if X.ndim == 3:
        return X[..., None]
    if X.ndim != 2:
        raise ValueError(f"X must be (N, H, W, C), (N, H, W) or flattened (N, D) images; got shape {X.shape}")
    if image_shape is None:
        return X[:, None, None, :]
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape += (1,)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (H, W) or (H, W, C) with positive sizes, got {image_shape!r}")
    if np.prod(shape) != X.shape[1]:
        raise ValueError(f"X has {X.shape[1]} features, but image_shape {image_shape!r} needs "
                         f"{int(np.prod(shape))}; fix image_shape or the array")
    return X.reshape(len(X), *shape)


def _check_same_shapes(X):
    """For a list of images: name the first image whose shape differs from the first one's."""
    if hasattr(X, "shape") or not isinstance(X, (list, tuple)) or not X:
        return
    first = np.shape(X[0])
    for index, image in enumerate(X):
        if np.shape(image) != first:
            raise ValueError(f"image {index} has shape {np.shape(image)} but image 0 has {first}; all images "
                             "must share one size and channel count")


def _check_finite(images):
    if images.dtype.kind != "f":
        return
    bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
    if bad.any():
        index = int(np.argmax(bad))
        kind = "NaN" if np.isnan(images[index]).any() else "infinite (inf)"
        raise ValueError(f"X contains {kind} values in sample {index} ({int(bad.sum())} samples are not "
                         "finite); remove or repair them")


def describe(image_shape):
    """'HxWxC' text for an (H, W, C) shape."""
    return "x".join(str(int(s)) for s in image_shape)


def pixel_scale(dtype):
    """Factor that maps stored pixels to intensities: 1/255 for uint8, else 1."""
    return 1.0 / 255.0 if np.dtype(dtype) == np.uint8 else 1.0
