"""A bundle's graphs in onnxruntime: open, check against the manifest, and run (torch-free).

Runs the encoder once per frame and the tiny head once per clip, the clips chosen by the shared key-slot
policy, exactly as ks_train/evaluate.py does in PyTorch; so the F1 of a bundle and of its checkpoint agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ks_runtime.core.bundle import (
    CLIPS,
    FRAMES,
    GRAPH_ROLES,
    KEY_SLOT,
    SA_LOGITS,
    STUDENT_LOGITS,
    Manifest,
    check_io,
    read_manifest,
)
from ks_runtime.core.errors import BundleError
from ks_runtime.core.policy import dense_clip_indices
from ks_runtime.core.preprocess import to_network_input

log = logging.getLogger(__name__)

ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(int64)": "int64",
    "tensor(float16)": "float16",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}


def open_session(
    model: Path | bytes,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int = 0,
    opset: int | None = None,
    where: Path | None = None,
) -> ort.InferenceSession:
    """One onnxruntime session of a graph file, or of a graph's bytes (a bundle's, read and hash-checked once:
    `Manifest.read`); a corrupt graph or an opset this onnxruntime cannot run names the file (`where` for bytes)."""
    path = where if where is not None else model
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Spinning worker threads starve the decoder and face threads on small CPUs (docs/runtime.md, Engines and
    # devices); a parked thread costs a few microseconds to wake instead.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only; warnings about unused initialisers are noise here
    try:
        source = model if isinstance(model, bytes) else str(model)
        return ort.InferenceSession(source, sess_options=options, providers=list(providers))
    except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "opset" in text.lower():
            raise BundleError(
                f"{path}: field 'opset' is {opset}: onnxruntime {ort.__version__} cannot run this graph ({text[-300:]})"
            ) from None
        raise BundleError(
            f"{path}: onnxruntime {ort.__version__} cannot load this graph (truncated or not ONNX?): {text[-300:]}"
        ) from None


def session_io(session: ort.InferenceSession) -> tuple[list[tuple], list[tuple]]:
    """(name, shape, dtype) of a session's inputs and outputs, in the form `check_io` takes."""

    def describe(args) -> list[tuple]:
        return [(a.name, list(a.shape), ORT_DTYPES.get(a.type, a.type)) for a in args]

    return describe(session.get_inputs()), describe(session.get_outputs())


class BundleGraphs:
    """A bundle's graphs as onnxruntime sessions, each checked against the manifest when opened.

    `roles` picks which graphs to open (the streaming runtime needs only encoder and head);
    `encoder_variant` runs a variant in the encoder's place, e.g. bundle.ENCODER_INT8.
    """

    def __init__(
        self,
        bundle: Manifest | Path | str,
        roles: Sequence[str] = GRAPH_ROLES,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int = 0,
        encoder_variant: str | None = None,
    ) -> None:
        self.manifest = bundle if isinstance(bundle, Manifest) else read_manifest(bundle)
        unknown = [r for r in roles if r not in GRAPH_ROLES]
        if unknown:
            raise ValueError(f"unknown graph role(s) {unknown}; known: {', '.join(GRAPH_ROLES)}")
        self.files: dict[str, Path] = {}
        self.sessions: dict[str, ort.InferenceSession] = {}
        for role in roles:
            name = encoder_variant if role == "encoder" and encoder_variant else role
            if self.manifest.graph_of(name) != role:
                raise BundleError(f"{self.manifest.root}: variant {name!r} is not a build of the {role} graph")
            path = self.manifest.path(name)
            # The bytes whose sha256 was just checked go to onnxruntime: no second open of the path to race with.
            model = self.manifest.read(self.manifest.file_name(name))
            session = open_session(model, providers, threads, self.manifest.opset, where=path)
            inputs, outputs = session_io(session)
            check_io(self.manifest, role, inputs, outputs, where=path)
            self.files[role], self.sessions[role] = path, session

    @property
    def clip_len(self) -> int:
        return self.manifest.clip_len

    def _session(self, role: str) -> ort.InferenceSession:
        if role not in self.sessions:
            raise BundleError(f"{self.manifest.root}: the {role} graph was not opened (roles={list(self.sessions)})")
        return self.sessions[role]

    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed frames [B, 3, S, S] float32 -> S_a logits [B, U], student logits [B, n, U]."""
        sa, students = self._session("encoder").run(None, {FRAMES: np.ascontiguousarray(frames, np.float32)})
        return sa, students

    def head(self, sa_logits: np.ndarray, student_logits: np.ndarray, key_slot: np.ndarray) -> np.ndarray:
        """Per-frame outputs of each clip's n frames, [B, n, U] and [B, n, n, U], plus key slots [B] -> [B, U]."""
        feeds = {
            SA_LOGITS: np.ascontiguousarray(sa_logits, np.float32),
            STUDENT_LOGITS: np.ascontiguousarray(student_logits, np.float32),
            KEY_SLOT: np.ascontiguousarray(key_slot, np.int64),
        }
        return self._session("head").run(None, feeds)[0]

    def clip(self, clips: np.ndarray, key_slot: np.ndarray) -> np.ndarray:
        """Preprocessed clips [B, n, 3, S, S] float32 and key slots [B] -> key frames' probabilities [B, U]."""
        feeds = {CLIPS: np.ascontiguousarray(clips, np.float32), KEY_SLOT: np.ascontiguousarray(key_slot, np.int64)}
        return self._session("clip").run(None, feeds)[0]

    def encode_frames(self, frames: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB frames [T, H, W, 3] -> per-frame outputs [T, U] and [T, n, U], in encoder batches."""
        parts = [
            self.encode(to_network_input(frames[start : start + batch_size], self.manifest.preprocess))
            for start in range(0, len(frames), batch_size)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def dense_probabilities(
        self, frames: np.ndarray, policy: str | None = None, batch_size: int = 64, head_batch: int = 256
    ) -> np.ndarray:
        """uint8 RGB frames [T, H, W, 3] of one video -> probabilities [T, U] under a key-slot policy.

        The encoder runs once per frame; each frame's clip(s) come from `dense_clip_indices` and are scored
        by the head; under `ensemble` a frame's n results are averaged. Default policy: the manifest's.
        """
        sa, students = self.encode_frames(frames, batch_size)
        length, n = len(sa), self.clip_len
        clip_frames, slots = dense_clip_indices(
            length, n, policy or self.manifest.policy, self.manifest.clip_stride
        )  # (T, k, n), (T, k)
        k = slots.shape[1]
        flat_frames, flat_slots = clip_frames.reshape(-1, n), slots.reshape(-1)
        probs = [
            self.head(
                sa[flat_frames[s : s + head_batch]],
                students[flat_frames[s : s + head_batch]],
                flat_slots[s : s + head_batch],
            )  # gathered (b, n, U) and (b, n, n, U)
            for s in range(0, len(flat_slots), head_batch)
        ]
        return np.concatenate(probs).reshape(length, k, -1).mean(1)  # (T, U)
