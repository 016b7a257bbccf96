"""Pictures of a trained model's filters (``python run.py visualize --run OUT``).

Filters live in the whitened patch space; for display each one is mapped back to pixel space with the
ZCA colouring matrix (``V (D + eps)^(1/2) V^T``, the inverse of the whitening) and shown as a ``k x k``
patch (colour for RGB images, like the paper's Figure 13), scaled to the full grey/colour range.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import skimage.util  # noqa: E402

from ..model_files import load_model  # noqa: E402
from ..storage.atomic import atomic_path  # noqa: E402


def filter_images(model):
    """The filters as images (F, k, k, C) in [0, 1]; for the two-layer networks of the other Table-1
    models, their hidden neurons as (m, H, W, C) images."""
    if not hasattr(model, "features_"):
        return _scaled(model.hidden_weights_.T.reshape(-1, *model.image_shape_))
    features = model.features_
    filters = features.filter_bank_.filters_
    zca = features.whitener_.zca_
    if zca is not None:
        filters = filters @ zca.colouring_
    k, channels = features.patch_size_, features.image_shape_[2]
    return _scaled(filters.reshape(len(filters), channels, k, k).transpose(0, 2, 3, 1))


def _scaled(patches):
    """Each of the images (n, h, w, C) mapped to [0, 1]."""
    low = patches.min(axis=(1, 2, 3), keepdims=True)
    span = patches.max(axis=(1, 2, 3), keepdims=True) - low
    return (patches - low) / np.where(span > 0, span, 1.0)


def filter_importance(model):
    """(F, K): the sum over pooling regions (and both signs of a two-sided encoding) of ``|coef|`` of each
    filter for each class (for a two-layer
    network: ``|W|`` of each neuron)."""
    if not hasattr(model, "features_"):
        return np.abs(model.output_weights_)
    coef = model.output_layer_.coef_
    n_filters = len(model.features_.filter_bank_.filters_)
    sides = model.features_.weights_.shape[1] // n_filters  # 2 for a two-sided encoding
    return np.abs(coef).reshape(sides, n_filters, -1, coef.shape[1]).sum(axis=(0, 2))


def montage(images, columns):
    """Tile (n, h, w, C) images into one picture, ``columns`` per row, 1-pixel white gaps and border
    (scikit-image's ``montage``)."""
    rows = -(-len(images) // columns)
    return skimage.util.montage(images, grid_shape=(rows, columns), padding_width=1,
                                     fill=(1.0,) * images.shape[-1], channel_axis=-1)


def save_figure(figure, path, dpi):
    """Save ``figure`` as a PNG at ``path``, atomically (a failed write leaves no half picture)."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi, bbox_inches="tight")


def _show(axis, picture):
    axis.imshow(picture[..., 0] if picture.shape[2] == 1 else picture, cmap="gray", interpolation="nearest",
                vmin=0, vmax=1)
    axis.set_xticks([])
    axis.set_yticks([])


def save_filter_pictures(run, max_filters=400, per_class=10):
    """Write ``run/filters.png`` (the first ``max_filters`` filters) and ``run/filters_by_class.png`` (per
    class, the ``per_class`` filters with the largest output weights). Returns the two paths."""
    run = Path(run)
    model = load_model(run)
    images = filter_images(model)
    shown = images[:max_filters]
    columns = int(np.ceil(np.sqrt(len(shown))))
    figure, axis = plt.subplots(figsize=(8, 8 * np.ceil(len(shown) / columns) / columns + 0.5))
    _show(axis, montage(shown, columns))
    what = "filters (un-whitened)" if hasattr(model, "features_") else "hidden neurons"
    axis.set_title(f"{len(shown)} of {len(images)} {what}")
    save_figure(figure, run / "filters.png", dpi=150)
    plt.close(figure)

    importance = filter_importance(model)
    classes = [str(c) for c in model.classes_]
    top = np.argsort(-importance, axis=0, kind="stable")[:per_class].T  # (K, per_class)
    figure, axes = plt.subplots(len(classes), 1, figsize=(per_class * 0.6, len(classes) * 0.75))
    for axis, name, chosen in zip(np.atleast_1d(axes), classes, top):
        _show(axis, montage(images[chosen], per_class))
        axis.set_ylabel(name, rotation=0, ha="right", va="center")
    figure.suptitle(f"largest output weights per class (top {per_class})")
    save_figure(figure, run / "filters_by_class.png", dpi=150)
    plt.close(figure)
    return run / "filters.png", run / "filters_by_class.png"
