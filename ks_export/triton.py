"""A Triton Inference Server model repository serving the fused clip graph: whole clips, dynamically batched.

triton/ks_clip/config.pbtxt and triton/ks_clip/1/model.onnx (a copy of clip.onnx); and, when a TensorRT clip
engine was built at export, triton/ks_clip_trt/config.pbtxt and 1/model.plan (platform tensorrt_plan; Triton
must run the TensorRT release that built it). Every config is parsed into Triton's own ModelConfig message
after writing, so a typo fails here rather than on a server.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ks_export import ExportError
from ks_runtime.core.bundle import CLIPS, KEY_SLOT, PROBS

REPOSITORY = "triton"
MODEL_NAME = "ks_clip"
PLAN_MODEL_NAME = "ks_clip_trt"
CONFIG = "config.pbtxt"
KEY_SLOT_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32"}  # TensorRT before 10 casts int64 inputs to int32


def config_text(
    clip_len: int,
    n_aus: int,
    size: int,
    max_batch_size: int = 64,
    instances: int = 1,
    kind: str = "KIND_AUTO",
    max_queue_delay_us: int = 500,
    platform: str = "onnxruntime_onnx",
    name: str = MODEL_NAME,
    key_slot_type: str = "TYPE_INT64",
    note: str = "",
    clip_stride: int = 1,
) -> str:
    """config.pbtxt for the clip graph (clip.onnx, or a TensorRT plan of it with platform "tensorrt_plan").
    Dims exclude the batch axis; key_slot is [B], hence dims [1] reshaped to []."""
    comment = "".join(f"# {line}\n" for line in note.splitlines())
    apart = "consecutive frames" if clip_stride == 1 else f"frames {clip_stride} apart (model.clip_stride)"
    return f"""\
# Knowledge-Spreader, fused clip graph: {CLIPS} [B, {clip_len}, 3, {size}, {size}] float32 (preprocessed as the
# bundle's manifest.json says) and {KEY_SLOT} [B] -> {PROBS} [B, {n_aus}], the key frame's AU probabilities.
# A clip's {clip_len} slots hold {apart}: the client builds clips that way.
{comment}name: "{name}"
platform: "{platform}"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{CLIPS}"
    data_type: TYPE_FP32
    dims: [ {clip_len}, 3, {size}, {size} ]
  }},
  {{
    name: "{KEY_SLOT}"
    data_type: {key_slot_type}
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
    from google.protobuf import text_format  # deferred: protobuf, tritonclient's (the export extra)
    from tritonclient.grpc import model_config_pb2  # deferred: tritonclient (the export extra)

    try:
        return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as error:
        raise ExportError(f"{path}: not a valid Triton model config: {error}") from None


def write_repository(
    bundle: Path,
    clip_onnx: Path,
    clip_len: int,
    n_aus: int,
    size: int,
    max_batch_size: int = 64,
    instances: int = 1,
    kind: str = "KIND_AUTO",
    clip_stride: int = 1,
) -> dict:
    """Write triton/ks_clip/ under `bundle`; returns the manifest's `serving.triton` entry."""
    model_dir = bundle / REPOSITORY / MODEL_NAME
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clip_onnx, model_dir / "1" / "model.onnx")
    config = model_dir / CONFIG
    config.write_text(config_text(clip_len, n_aus, size, max_batch_size, instances, kind, clip_stride=clip_stride))
    parsed = parse_config(config)
    if parsed.name != MODEL_NAME or parsed.max_batch_size != max_batch_size:
        raise ExportError(f"{config}: parsed back as {parsed.name!r} / max_batch_size {parsed.max_batch_size}")
    root = bundle / REPOSITORY
    return {
        "repository": REPOSITORY,
        "model": MODEL_NAME,
        "config": (config.relative_to(bundle)).as_posix(),
        "file": (model_dir / "1" / "model.onnx").relative_to(bundle).as_posix(),
        "copy_of": clip_onnx.name,
        "max_batch_size": max_batch_size,
        "instance_group": {"count": instances, "kind": kind},
        "clip_stride": clip_stride,
        "command": f"tritonserver --model-repository=<bundle>/{root.name}",
    }


def write_plan_repository(
    bundle: Path,
    plan: Path,
    clip_len: int,
    n_aus: int,
    size: int,
    max_batch_size: int,
    key_slot_dtype: str = "int64",
    instances: int = 1,
    built_by: str = "",
    clip_stride: int = 1,
) -> dict:
    """Write triton/ks_clip_trt/ (config.pbtxt and 1/model.plan, a copy of the TensorRT clip engine `plan`);
    returns the manifest's `serving.triton_trt` entry. `max_batch_size` must not exceed the plan's profile."""
    if key_slot_dtype not in KEY_SLOT_TYPES:
        raise ExportError(f"{plan}: key_slot is {key_slot_dtype}; Triton's config takes {', '.join(KEY_SLOT_TYPES)}")
    model_dir = bundle / REPOSITORY / PLAN_MODEL_NAME
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plan, model_dir / "1" / "model.plan")
    note = (
        f"model.plan is {plan.name}{': ' + built_by if built_by else ''}. A plan runs only on that GPU model\n"
        f"and under the TensorRT release that built it: Triton's container must ship that release."
    )
    config = model_dir / CONFIG
    config.write_text(
        config_text(
            clip_len,
            n_aus,
            size,
            max_batch_size,
            instances,
            "KIND_GPU",
            platform="tensorrt_plan",
            name=PLAN_MODEL_NAME,
            key_slot_type=KEY_SLOT_TYPES[key_slot_dtype],
            note=note,
            clip_stride=clip_stride,
        )
    )
    parsed = parse_config(config)
    if parsed.name != PLAN_MODEL_NAME or parsed.platform != "tensorrt_plan":
        raise ExportError(f"{config}: parsed back as {parsed.name!r} / {parsed.platform!r}")
    return {
        "repository": REPOSITORY,
        "model": PLAN_MODEL_NAME,
        "config": config.relative_to(bundle).as_posix(),
        "file": (model_dir / "1" / "model.plan").relative_to(bundle).as_posix(),
        "copy_of": f"trt/{plan.name}",
        "max_batch_size": max_batch_size,
        "instance_group": {"count": instances, "kind": "KIND_GPU"},
        "command": f"tritonserver --model-repository=<bundle>/{REPOSITORY}",
    }
