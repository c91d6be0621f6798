"""The Triton model repository: every config.pbtxt parses into Triton's own ModelConfig message, so a typo
cannot reach a server, and the served model is the verified clip.onnx."""

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ks_export import ExportError
from ks_export.triton import config_text, parse_config
from ks_runtime.core import bundle as B


def parse(text):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_every_config_in_the_bundle_parses_into_model_config(bundle):
    configs = sorted(bundle.rglob("config.pbtxt"))
    assert [p.relative_to(bundle).as_posix() for p in configs] == ["triton/ks_clip/config.pbtxt"]
    m = B.read_manifest(bundle)
    clip = m.graphs["clip"]
    for path in configs:
        config = parse(path.read_text())
        assert config.name == path.parent.name == "ks_clip"
        assert config.platform == "onnxruntime_onnx"
        assert config.max_batch_size > 0
        assert config.HasField("dynamic_batching")
        assert len(config.instance_group) == 1 and config.instance_group[0].count >= 1
        inputs = {i.name: i for i in config.input}
        assert list(inputs) == [t.name for t in clip.inputs]
        assert list(inputs["clips"].dims) == list(clip.inputs[0].shape[1:])  # Triton's dims exclude the batch
        assert inputs["clips"].data_type == model_config_pb2.TYPE_FP32
        assert inputs["key_slot"].data_type == model_config_pb2.TYPE_INT64
        assert list(inputs["key_slot"].dims) == [1] and list(inputs["key_slot"].reshape.shape) == []  # [B] model
        (output,) = config.output
        assert output.name == "probs" and list(output.dims) == [m.n_aus]


def test_the_served_model_is_the_verified_clip_graph(bundle):
    m = B.read_manifest(bundle)
    served = "triton/ks_clip/1/model.onnx"
    assert m.files[served] == m.files["clip.onnx"] == B.sha256_file(bundle / served)
    assert m.raw["serving"]["triton"]["file"] == served


@pytest.mark.parametrize("clip_len, n_aus, size, kind", [(3, 8, 112, "KIND_GPU"), (5, 12, 224, "KIND_CPU")])
def test_config_text_parses_for_other_shapes(clip_len, n_aus, size, kind):
    config = parse(config_text(clip_len, n_aus, size, max_batch_size=16, instances=2, kind=kind))
    assert list(config.input[0].dims) == [clip_len, 3, size, size] and list(config.output[0].dims) == [n_aus]
    assert config.max_batch_size == 16 and config.instance_group[0].count == 2
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.Kind.Value(kind)


def test_a_typo_in_a_config_is_caught_naming_the_file(tmp_path):
    path = tmp_path / "config.pbtxt"
    path.write_text(config_text(5, 12, 64).replace("platform:", "platfrom:"))
    with pytest.raises(ExportError, match=r"config\.pbtxt: not a valid Triton model config.*platfrom"):
        parse_config(path)
