"""The dtype of the feature GEMM: float32, or bfloat16 where the device multiplies it fast.

``"auto"`` decides per device by a short calibration product (:func:`calibrate`), timed once per process,
not by the processor's name.
"""

import time
from typing import NamedTuple

import torch

COMPUTE_DTYPES = ("float32", "bfloat16", "auto")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# The calibration product: (rows x patch values) @ (patch values x filters), the shape of a feature GEMM
# (CIFAR-10's 6 x 6 x 3 patches) at about 0.5 GFLOP: a few ms in either dtype where bfloat16 is fast.
CALIBRATION_SHAPE = (4096, 108, 512)
# "auto" computes in bfloat16 where its product runs at least this many times as fast as float32's.
BFLOAT16_MIN_SPEEDUP = 1.5
# A dtype whose fastest timed product is this many times slower than another's is timed no further: more
# repeats change no decision. Where bfloat16 is emulated (AVX2 without AVX512-BF16 or AMX) its calibration
# product takes 0.4 s against float32's 6 ms (1 against 70 GFLOP/s), and five repeats cost the digits job 2.4 s.
_HOPELESSLY_SLOWER = 10.0


class Calibration(NamedTuple):
    """What ``compute_dtype="auto"`` chose on one device, and the product speeds (GFLOP/s) it chose by."""

    compute_dtype: str
    bfloat16_gflops: float
    float32_gflops: float


_calibrations = {}  # torch device string -> Calibration, measured once per process


def product_gflops(device, shape=CALIBRATION_SHAPE, repeats=5):
    """{"float32": GFLOP/s, "bfloat16": GFLOP/s} of one ``(m, d) @ (d, F)`` product (``shape = (m, d, F)``)
    on ``device``: the fastest of ``repeats`` timed runs after a warm-up one, the two dtypes in turn (so that
    other load on the machine slows both alike), a dtype left out of further runs once its fastest is
    ``_HOPELESSLY_SLOWER`` times the other's; 0.0 for a dtype the device cannot multiply."""
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
        for name in _hopelessly_slow({name: seconds[name][1:] for name in operands}):
            del operands[name]
    return {name: 2.0 * rows * depth * columns / min(times[1:]) / 1e9 if len(times) > 1 else 0.0
            for name, times in seconds.items()}


def _hopelessly_slow(timed):
    """The dtypes whose fastest timed run (``timed``: name -> seconds of the runs after the warm-up) is at
    least ``_HOPELESSLY_SLOWER`` times another dtype's fastest."""
    fastest = {name: min(times) for name, times in timed.items() if times}
    return [name for name, seconds in fastest.items()
            if any(seconds >= _HOPELESSLY_SLOWER * other for other in fastest.values())]


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
