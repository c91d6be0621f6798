"""ks_runtime: the torch-free half of Knowledge-Spreader.

core/     what training and deployment agree on (AU sets, preprocessing, key-slot policy, F1, bundle manifest)
engine/   inference engines (onnxruntime, TensorRT) behind one interface
faces/    face stages: a raw frame in, the aligned crop out
io/       sources in, CSV / plots / overlays / summaries out
synth/    the SynthAU generator
tools/    the policy report and the face-stage evaluation
stream.py (the scheduler), detector.py (the Python API) and cli.py (ks-run) sit on top.
Imports no torch and none of our other packages except cpp_ext.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("knowledge-spreader")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from ks_runtime.detector import Detector  # noqa: E402  (after __version__, which the CLIs read)

__all__ = ["Detector", "__version__"]
