"""The stages and the whole model as scikit-learn estimators."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import check_estimator

from features.extreme_points import ExtremePointFilters
from features.feature_map import ConvReLUPool
from features.filter_banks import GaussianFilters, KMeansFilters, RandomPatchFilters
from features.stage_protocol import Uncached
from features.whitening import PatchWhitener
from pipeline import ConvexRFClassifier
from pipeline import ModelFileError, load_model, save_model
from pipeline import L1OutputLayer

# scikit-learn's checks feed 2-D feature tables: read them as 1 x 1 images with D channels (patch_size=1),
# keep every sample as a patch and do not normalise (a 1-pixel patch normalises to zero).
VECTOR_FEATURES = dict(patch_size=1, n_patches=1.0, grid=1, whitener=PatchWhitener(normalize=False))


def failed_checks(estimator):
    results = check_estimator(estimator, on_fail=None)
    return [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]


@pytest.mark.parametrize("estimator", [PatchWhitener(), ExtremePointFilters(), L1OutputLayer()],
                         ids=lambda e: type(e).__name__)
def test_stage_estimators_pass_scikit_learns_checks(estimator):
    assert failed_checks(estimator) == []


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("make", [
    lambda dtype: ConvReLUPool(**VECTOR_FEATURES, compute_dtype=dtype),
    lambda dtype: ConvexRFClassifier(features=ConvReLUPool(compute_dtype=dtype))],
    ids=["ConvReLUPool", "ConvexRFClassifier-defaults"])
def test_image_estimators_pass_scikit_learns_checks(make, compute_dtype):
    """Also subset invariance: the feature GEMM runs on padded rows (GEMM_ROW_MULTIPLE), so an image's
    features do not depend on how many images share its chunk, even for 1 x 1 images."""
    assert failed_checks(make(compute_dtype)) == []


def test_features_of_a_subset_are_bit_identical():
    images = np.random.default_rng(0).integers(0, 256, size=(40, 12, 12, 3), dtype=np.uint8)
    features = ConvReLUPool(patch_size=4, n_patches=100, random_state=0).fit(images)
    everything = features.transform(images)
    for subset in (slice(0, 1), slice(3, 10), slice(5, 38)):
        np.testing.assert_array_equal(features.transform(images[subset]), everything[subset])


def digits(n=300):
    data = load_digits()
    images = np.round(data.images[:n] * (255 / 16)).astype(np.uint8)
    return images, data.target_names.astype(str)[data.target[:n]]


def small_model(**output):
    features = ConvReLUPool(patch_size=3, n_patches=80, grid=2, random_state=0)
    return ConvexRFClassifier(features=features, output_layer=L1OutputLayer(beta=0.05, tol=1e-3, **output))


def test_learns_digits_and_accepts_4d_3d_and_flattened_images():
    images, labels = digits()
    model = small_model().fit(images[:200], labels[:200])
    assert model.score(images[200:], labels[200:]) > 0.8
    np.testing.assert_array_equal(model.classes_, [str(d) for d in range(10)])
    assert model.n_features_in_ == 64
    predicted = model.predict(images[200:])
    np.testing.assert_array_equal(model.predict(images[200:, :, :, None]), predicted)
    flat = clone(model).set_params(features__image_shape=(8, 8)).fit(images[:200].reshape(200, -1), labels[:200])
    np.testing.assert_array_equal(flat.predict(images[200:].reshape(100, -1)), predicted)
    assert model.decision_function(images[:3]).shape == (3, 10)


def test_works_in_pipeline_grid_search_and_cross_validation():
    images, labels = digits(240)
    flat = images.reshape(len(images), -1)
    model = small_model().set_params(features__image_shape=(8, 8))
    pipe = Pipeline([("scale", FunctionTransformer(lambda x: x / 255.0)), ("convex_rf", model)])
    search = GridSearchCV(pipe, {"convex_rf__output_layer__beta": [0.5, 0.05]}, cv=2).fit(flat, labels)
    assert search.best_params_ == {"convex_rf__output_layer__beta": 0.05}
    scores = cross_val_score(model, flat, labels, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.6


def test_two_classes_give_a_signed_decision_function():
    images, labels = digits()
    keep = np.isin(labels, ["3", "8"])
    model = small_model().fit(images[keep], labels[keep])
    decision = model.decision_function(images[keep])
    assert decision.shape == (keep.sum(),)
    np.testing.assert_array_equal(model.predict(images[keep]), np.where(decision > 0, "8", "3"))


@pytest.mark.parametrize("value, message", [(np.nan, "NaN values in sample 7"),
                                            (np.inf, "infinite .inf. values in sample 7")])
def test_non_finite_images_are_rejected_naming_the_sample(value, message):
    images, labels = digits(60)
    bad = images.astype(np.float64) / 255
    bad[7, 3, 4] = value
    with pytest.raises(ValueError, match=message):
        small_model().fit(bad, labels)
    model = small_model().fit(images, labels)
    with pytest.raises(ValueError, match=message):
        model.predict(bad)


def test_bad_shapes_and_labels_give_clear_errors():
    images, labels = digits(60)
    model = small_model().fit(images, labels)
    with pytest.raises(ValueError, match="images have shape 9x8x1 but ConvReLUPool was fitted on 8x8x1"):
        model.predict(np.zeros((2, 9, 8), np.uint8))
    with pytest.raises(ValueError, match="X has 63 features, but image_shape .8, 8. needs 64"):
        clone(model).set_params(features__image_shape=(8, 8)).fit(np.zeros((60, 63)), labels)
    with pytest.raises(ValueError, match="at least 2 classes; got 1 class"):
        small_model().fit(images, np.full(60, "7"))
    with pytest.raises(ValueError, match="60 samples but y has 59"):
        small_model().fit(images, labels[:59])
    with pytest.raises(ValueError, match=r"patch_size 9 is larger than the images \(8 x 8\): use at most 8"):
        ConvexRFClassifier(features=ConvReLUPool(patch_size=9)).fit(images, labels)
    with pytest.raises(ValueError, match="n_patches 3601 exceeds the 3600 distinct patch positions"):
        ConvexRFClassifier(features=ConvReLUPool(patch_size=8, n_patches=3601, grid=1)).fit(
            np.zeros((3600, 8, 8), np.uint8), np.arange(3600) % 2)
    with pytest.raises(ValueError, match=r"image 1 has shape \(9, 8\) but image 0 has \(8, 8\)"):
        small_model().fit([images[0], np.zeros((9, 8), np.uint8)], labels[:2])
    with pytest.raises(ValueError, match="the filter bank is empty: all 80 patches lie inside"):
        small_model().fit(np.zeros((60, 8, 8), np.uint8), labels)
    with pytest.raises(NotFittedError):
        small_model().predict(images)


class RecordingStages(Uncached):
    """Runs every stage directly and keeps the arguments of the output layer's fit."""

    def fit(self, name, estimator, X, y=None, **fit_params):
        if name == "output":
            self.output_inputs = X, y, fit_params
        return super().fit(name, estimator, X, y, **fit_params)


def test_horizontal_flips_fit_the_output_layer_on_the_images_and_their_mirrors(tmp_path):
    images, labels = digits(120)
    stages = RecordingStages()
    model = small_model().set_params(horizontal_flips=True).fit(images, labels, stages=stages)
    plain = small_model().fit(images, labels)
    # the patches and filters come from the images alone
    np.testing.assert_array_equal(model.features_.filter_bank_.filters_, plain.features_.filter_bank_.filters_)
    features, y, fit_params = stages.output_inputs
    np.testing.assert_array_equal(features[:120], model.pooled_features(images))
    np.testing.assert_array_equal(features[120:], model.pooled_features(images[:, :, ::-1]))
    np.testing.assert_array_equal(y, np.concatenate([labels, labels]))
    np.testing.assert_array_equal(fit_params["groups"], np.tile(np.arange(120), 2))
    assert model.output_layer_.n_features_in_ == features.shape[1]
    save_model(model, tmp_path)
    assert load_model(tmp_path).get_params()["horizontal_flips"] is True


def test_same_seed_gives_identical_predictions_with_one_or_two_jobs():
    images, labels = digits()
    one = small_model().set_params(features__filter_bank=ExtremePointFilters(n_jobs=1)).fit(images, labels)
    two = small_model().set_params(features__filter_bank=ExtremePointFilters(n_jobs=2, batch_size=16))
    two.fit(images, labels)
    np.testing.assert_array_equal(one.features_.filter_bank_.filters_, two.features_.filter_bank_.filters_)
    np.testing.assert_array_equal(one.decision_function(images), two.decision_function(images))


def test_model_file_round_trip_and_a_hand_edited_manifest(tmp_path):
    images, labels = digits()
    model = small_model().fit(images, labels)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, ConvexRFClassifier)
    np.testing.assert_array_equal(loaded.decision_function(images), model.decision_function(images))
    assert loaded.get_params()["output_layer__beta"] == 0.05
    manifest = tmp_path / "model.json"
    manifest.write_text(manifest.read_text().replace('"value": 0.05', '"value": 0.5', 1))
    with pytest.raises(ModelFileError, match="model.json was modified after the model was saved"):
        load_model(tmp_path)


@pytest.mark.parametrize("bank", [RandomPatchFilters(n_filters=30, random_state=0),
                                  KMeansFilters(n_filters=12, random_state=0), GaussianFilters(random_state=0)],
                         ids=lambda b: type(b).__name__)
def test_other_filter_banks_pass_the_checks_and_give_unit_filters(bank):
    assert failed_checks(clone(bank).set_params(n_filters=None)) == []
    patches = np.random.default_rng(0).normal(size=(60, 9))
    fitted = clone(bank).fit(patches)
    expected = {"RandomPatchFilters": 30, "KMeansFilters": 12, "GaussianFilters": 60}[type(bank).__name__]
    assert fitted.filters_.shape == (expected, 9)
    np.testing.assert_allclose(np.linalg.norm(fitted.filters_, axis=1), 1.0)
    np.testing.assert_array_equal(fitted.transform(patches), np.maximum(patches @ fitted.filters_.T, 0))
    if isinstance(bank, RandomPatchFilters):  # the filters are patches, scaled
        unit = patches / np.linalg.norm(patches, axis=1, keepdims=True)
        assert all(np.isclose(unit @ f, 1.0).any() for f in fitted.filters_)
