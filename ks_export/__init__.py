"""ks_export: a trained KS checkpoint -> the verified ONNX model bundle the torch-free runtime reads.

graphs.py (the encoder / head / clip modules), onnx_export.py (export, checker, simplifier), verify.py
(onnxruntime beside PyTorch), quantize.py (INT8 encoder), manifest.py (manifest.json), triton.py (model
repository), export.py (the whole export: `export_bundle`, `verify_bundle`), cli.py (`ks-export`).
"""

from ks_runtime.core.errors import KSError


class ExportError(KSError):
    """A checkpoint cannot be exported, or an exported graph fails its checks; the message names which."""
