"""Shared runtime fixtures: one small real bundle per test session, a fake numpy engine, short SynthAU clips.

The checkpoint is a KS model (tiny backbone, n = 3, 32 px) after two training batches on a toy set (seconds);
its bundle is exported with the legacy ONNX exporter and no INT8/Triton (seconds, not the export suite's
minute): these tests are about the runtime, the export suite tests the exporter.
"""

from __future__ import annotations

import numpy as np
import pytest

from ks_runtime.core.preprocess import Preprocess
from ks_runtime.engine.base import Engine

# clip_stride 1: the base bundle streams adjacent frames; strided_bundle below covers a stride.
OVERRIDES = [
    "data.synth_size=tiny",
    "data.image_size=32",
    "model.clip_len=3",
    "model.clip_stride=1",
    "model.backbone=tiny",
    "train.epochs=1",
    "train.batches_per_epoch=2",
    "train.workers=0",
]
CLIP_LEN, SIZE = 3, 32


def toy_dataset():
    from ks_runtime.core.au import BP4D
    from ks_train.data.base import AUDataset, VideoSequence

    rng = np.random.default_rng(0)
    sequences = [
        VideoSequence(
            f"S{s}",
            "T1",
            rng.integers(0, 2, (16, 12)).astype(np.int8),
            np.arange(16),
            frames=rng.integers(0, 256, (16, SIZE, SIZE, 3), dtype=np.uint8),
        )
        for s in range(3)
    ]
    return AUDataset("toy", BP4D, sequences, [["S0"], ["S1"], ["S2"]])


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    from ks_train.config import load_config
    from ks_train.trainer import Trainer

    out = tmp_path_factory.mktemp("runtime_run")
    Trainer(load_config("synth-cpu", OVERRIDES), out, device="cpu", dataset=toy_dataset(), progress=False).fit()
    return out / "last.pt"


@pytest.fixture(scope="session")
def bundle(checkpoint, tmp_path_factory):
    from ks_export.export import export_bundle

    out = tmp_path_factory.mktemp("runtime_export") / "bundle"
    export_bundle(checkpoint, out, int8=False, triton=False, evaluate=False, exporter="legacy")
    return out


@pytest.fixture(scope="session")
def strided_bundle(checkpoint, tmp_path_factory):
    """The same model declared as trained on clips of slots 2 frames apart (model.clip_stride = 2; the weights
    do not depend on it), exported: the runtime must gather its clips that way."""
    from ks_export.export import export_bundle
    from tests.checkpoint_edit import with_config

    work = tmp_path_factory.mktemp("runtime_strided")
    export_bundle(
        with_config(checkpoint, work / "strided.pt", clip_stride=2),
        work / "bundle",
        int8=False,
        triton=False,
        evaluate=False,
        exporter="legacy",
    )
    return work / "bundle"


def synth_frames(frames: int = 23, size: int = SIZE, subject: int = 0, seed: int = 3):
    """A short SynthAU sequence (RGB uint8 [T, size, size, 3]) and its labels [T, 12]."""
    from ks_runtime.synth.generate import SynthConfig, generate_sequence

    sequence = generate_sequence(SynthConfig(size="tiny", frames=frames, image_size=size, seed=seed), subject, 0)
    return sequence.frames, sequence.labels


class FakeEngine(Engine):
    """A numpy stand-in for a bundle: the encoder mixes each frame's channel means, the head mixes the clip's
    frames by key slot, so any wrong frame, slot or edge shows up in the output."""

    name = "fake"

    def __init__(self, n: int = 3, u: int = 4, delay: float = 0.0, stride: int = 1) -> None:
        rng = np.random.default_rng(0)
        self._n, self._u, self.delay, self._stride = n, u, delay, stride
        self.w_sa = rng.normal(size=(3, u)).astype(np.float32)
        self.w_st = rng.normal(size=(3, n * u)).astype(np.float32)
        self.mix = rng.normal(size=(n, n)).astype(np.float32)
        self.batches: list[int] = []

    @property
    def clip_len(self) -> int:
        return self._n

    @property
    def clip_stride(self) -> int:
        return self._stride

    @property
    def n_aus(self) -> int:
        return self._u

    def encode(self, frames):
        import time

        if self.delay:
            time.sleep(self.delay)
        self.batches.append(len(frames))
        m = frames.mean(axis=(2, 3))  # (B, 3)
        return m @ self.w_sa, (m @ self.w_st).reshape(-1, self._n, self._u)

    def head(self, sa, students, key_slot):
        b = np.arange(len(key_slot))
        z = sa[b, key_slot] + np.einsum("bj,bjju->bu", self.mix[key_slot], students) + 0.1 * sa.sum(1)
        return (1 / (1 + np.exp(-z))).astype(np.float32)


def fake_dense(engine: FakeEngine, frames: np.ndarray, preprocess: Preprocess, policy: str) -> np.ndarray:
    """Dense testing with the fake engine, as ks_train/evaluate.py does it: [T, U]."""
    from ks_runtime.core.policy import dense_clip_indices
    from ks_runtime.core.preprocess import to_network_input

    sa, students = engine.encode(to_network_input(frames, preprocess))
    index, slots = dense_clip_indices(len(frames), engine.clip_len, policy, engine.clip_stride)  # (T,k,n), (T,k)
    flat = index.reshape(-1, engine.clip_len)
    return engine.head(sa[flat], students[flat], slots.reshape(-1)).reshape(len(frames), slots.shape[1], -1).mean(1)


@pytest.fixture()
def fake_engine():
    return FakeEngine()


@pytest.fixture()
def small_preprocess():
    return Preprocess(size=16)
