"""The compute dtype's calibration (features/compute_dtype.py)."""

import numpy as np
import pytest
import torch

from features import compute_dtype
from features.compute_dtype import calibrate, resolve_compute_dtype
from features.feature_map import ConvReLUPool


@pytest.fixture
def fake_speeds(monkeypatch):
    """Replace the calibration product by given speeds (GFLOP/s per dtype) on a fresh calibration cache."""
    calls = []

    def install(float32, bfloat16):
        monkeypatch.setattr(compute_dtype, "_calibrations", {})
        monkeypatch.setattr(compute_dtype, "product_gflops",
                            lambda device: calls.append(device) or {"float32": float32, "bfloat16": bfloat16})
        return calls

    return install


@pytest.mark.parametrize("bfloat16_gflops, expected", [(100.0, "float32"), (140.0, "float32"), (160.0, "bfloat16")])
def test_auto_computes_in_bfloat16_only_where_its_product_is_fast(fake_speeds, bfloat16_gflops, expected):
    calls = fake_speeds(float32=100.0, bfloat16=bfloat16_gflops)
    assert resolve_compute_dtype("auto") == expected
    assert calibrate("cpu") == (expected, bfloat16_gflops, 100.0)
    assert calls == ["cpu"]  # measured once per process and device
    assert compute_dtype.compute_dtype_report("auto")["used"] == expected
    assert resolve_compute_dtype("bfloat16") == "bfloat16" and resolve_compute_dtype("float32") == "float32"


def test_auto_falls_back_to_float32_features_where_bfloat16_is_slow(fake_speeds):
    fake_speeds(float32=100.0, bfloat16=20.0)
    images = np.random.default_rng(9).integers(0, 256, size=(4, 10, 10, 3), dtype=np.uint8)
    model = ConvReLUPool(patch_size=3, n_patches=60, random_state=0).fit(images)
    assert model.compute_dtype == "auto"
    np.testing.assert_array_equal(model.transform(images),
                                  model.set_params(compute_dtype="float32").transform(images))


def test_the_calibration_measures_both_products_on_this_machine():
    """No timing assertion: the speeds are positive and the choice is one of the two dtypes."""
    choice = calibrate("cpu")
    assert choice.compute_dtype in ("float32", "bfloat16")
    assert choice.float32_gflops > 0 and choice.bfloat16_gflops > 0


def test_a_dtype_that_the_device_cannot_multiply_calibrates_to_zero(monkeypatch):
    monkeypatch.setitem(compute_dtype.TORCH_DTYPES, "bfloat16", torch.bool)  # no GEMM kernel for bool
    speeds = compute_dtype.product_gflops("cpu", shape=(64, 8, 16), repeats=1)
    assert speeds["bfloat16"] == 0.0 and speeds["float32"] > 0


def test_a_dtype_ten_times_slower_is_timed_no_further(monkeypatch):
    """Where bfloat16 is emulated its calibration product takes seconds: after its first timed run, more
    repeats cannot change the choice, so only the warm-up and one timed run are spent on it."""
    runs = {torch.float32: 0, torch.bfloat16: 0}

    def fake_seconds(left, right, product):
        runs[left.dtype] += 1
        return 1.0 if left.dtype == torch.bfloat16 else 0.01

    monkeypatch.setattr(compute_dtype, "_product_seconds", fake_seconds)
    speeds = compute_dtype.product_gflops("cpu", shape=(64, 8, 16), repeats=5)
    assert runs == {torch.float32: 6, torch.bfloat16: 2}
    assert speeds["bfloat16"] == pytest.approx(speeds["float32"] / 100)
