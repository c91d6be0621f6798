"""A Triton Inference Server model repository serving clip.onnx: whole clips, dynamically batched.

triton/ks_clip/config.pbtxt and triton/ks_clip/1/model.onnx (a copy of clip.onnx). The config is parsed
into Triton's own ModelConfig message after writing, so a typo fails here rather than on a server.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ks_export import ExportError
from ks_runtime.bundle import CLIPS, KEY_SLOT, PROBS

REPOSITORY = "triton"
MODEL_NAME = "ks_clip"
CONFIG = "config.pbtxt"


def config_text(clip_len: int, n_aus: int, size: int, max_batch_size: int = 64, instances: int = 1,
                kind: str = "KIND_AUTO", max_queue_delay_us: int = 500) -> str:
    """config.pbtxt for clip.onnx. Dims exclude the batch axis; key_slot is [B], hence dims [1] reshaped to []."""
    return f"""\
# Knowledge-Spreader, fused clip graph: {CLIPS} [B, {clip_len}, 3, {size}, {size}] float32 (preprocessed as the
# bundle's manifest.json says) and {KEY_SLOT} [B] int64 -> {PROBS} [B, {n_aus}], the key frame's AU probabilities.
name: "{MODEL_NAME}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{CLIPS}"
    data_type: TYPE_FP32
    dims: [ {clip_len}, 3, {size}, {size} ]
  }},
  {{
    name: "{KEY_SLOT}"
    data_type: TYPE_INT64
    dims: [ 1 ]
    reshape: {{ shape: [ ] }}
  }}
]
output [
  {{
    name: "{PROBS}"
    data_type: TYPE_FP32
    dims: [ {n_aus} ]
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {max_queue_delay_us}
}}
instance_group [
  {{
    count: {instances}
    kind: {kind}
  }}
]
"""


def parse_config(path: Path):
    """Parse a config.pbtxt into tritonclient's ModelConfig message; a bad field names the file and line."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as error:
        raise ExportError(f"{path}: not a valid Triton model config: {error}") from None


def write_repository(bundle: Path, clip_onnx: Path, clip_len: int, n_aus: int, size: int,
                     max_batch_size: int = 64, instances: int = 1, kind: str = "KIND_AUTO") -> dict:
    """Write triton/ks_clip/ under `bundle`; returns the manifest's `serving.triton` entry."""
    model_dir = bundle / REPOSITORY / MODEL_NAME
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clip_onnx, model_dir / "1" / "model.onnx")
    config = model_dir / CONFIG
    config.write_text(config_text(clip_len, n_aus, size, max_batch_size, instances, kind))
    parsed = parse_config(config)
    if parsed.name != MODEL_NAME or parsed.max_batch_size != max_batch_size:
        raise ExportError(f"{config}: parsed back as {parsed.name!r} / max_batch_size {parsed.max_batch_size}")
    root = bundle / REPOSITORY
    return {"repository": REPOSITORY, "model": MODEL_NAME, "config": (config.relative_to(bundle)).as_posix(),
            "file": (model_dir / "1" / "model.onnx").relative_to(bundle).as_posix(), "copy_of": clip_onnx.name,
            "max_batch_size": max_batch_size, "instance_group": {"count": instances, "kind": kind},
            "command": f"tritonserver --model-repository=<bundle>/{root.name}"}
