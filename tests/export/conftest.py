"""One tiny KS checkpoint and one exported bundle per test session, shared by every export test.

Training runs two batches of SynthAU `tiny` at 64 px (seconds); the export is the real one (dynamo exporter,
verification on random and SynthAU frames, INT8, Triton, test-fold F1). Tests that tamper copy the bundle.
"""

import logging
import shutil
from contextlib import contextmanager

import pytest

from ks_export.export import export_bundle
from ks_train.config import load_config
from ks_train.trainer import Trainer

OVERRIDES = [
    "data.synth_size=tiny",
    "data.image_size=64",
    "train.epochs=1",
    "train.batches_per_epoch=2",
    "train.workers=0",
    "model.backbone=tiny",
]


@contextmanager
def one_torch_thread():
    """Tiny tensors: torch's intra-op threads only wait on each other (and on the other jobs of a shared box)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with one_torch_thread():
        Trainer(load_config("synth-cpu", OVERRIDES), out, device="cpu", progress=False).fit()
    return out / "last.pt"


@pytest.fixture(scope="session")
def exported(checkpoint, tmp_path_factory):
    """(bundle path, ExportReport) of the session's one export."""
    logging.getLogger("ks_export").setLevel(logging.INFO)
    out = tmp_path_factory.mktemp("export") / "bundle"
    with one_torch_thread():
        report = export_bundle(checkpoint, out, int8=True, triton=True, calib=64)
    return out, report


@pytest.fixture(scope="session")
def bundle(exported):
    return exported[0]


@pytest.fixture()
def bundle_copy(bundle, tmp_path):
    """A private copy of the bundle, for tests that tamper with it."""
    return shutil.copytree(bundle, tmp_path / "bundle")
