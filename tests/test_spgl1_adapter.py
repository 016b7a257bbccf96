"""Tests of the spgl1 adapter's workarounds (pipeline/readout/spgl1_adapter.py)."""

import importlib

from pipeline.readout.spgl1_adapter import history_size


def test_history_size_workaround_restores_spgl1_state():
    module = importlib.import_module("spgl1.spgl1")
    before = module._allocSize
    with history_size(3 * before):
        assert module._allocSize > 3 * before
    assert module._allocSize == before
    with history_size(10):
        assert module._allocSize == before
