"""ks_export: a trained KS checkpoint -> the verified ONNX model bundle the torch-free runtime reads.

graphs.py (the encoder / head / clip modules), onnx_export.py (export, checker, simplifier), parity.py (the one
output comparison every check uses), verify.py (onnxruntime beside PyTorch), quantize.py (INT8 encoder), fp16.py
(FP16 variants), tensorrt.py (trtexec recipe from templates/build_engines.sh, engines), manifest.py
(manifest.json), triton.py (model repository), flops.py (FLOPs of a graph), export.py (the whole export:
`export_bundle`, `verify_bundle`), cli.py (`ks-export`). docs/bundle-format.md describes the bundle.
"""

from ks_runtime.core.errors import KSError


class ExportError(KSError):
    """A checkpoint cannot be exported, or an exported graph fails its checks; the message names which."""
