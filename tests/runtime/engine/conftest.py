"""The runtime's small bundle exported again with its INT8 encoder (and check frames), for the INT8 load check."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def int8_bundle(checkpoint, tmp_path_factory):
    """tests/runtime/conftest.py's checkpoint, exported with --int8 (a few seconds more than without)."""
    from ks_export.export import export_bundle

    out = tmp_path_factory.mktemp("runtime_int8") / "bundle"
    export_bundle(checkpoint, out, int8=True, triton=False, evaluate=False, exporter="legacy", calib=32)
    return out
