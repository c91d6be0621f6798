#!/usr/bin/env bash
# Build this Knowledge-Spreader bundle's TensorRT engines on the GPU that will run them (a Jetson too).
# Written by @@{producer}; the same rules as `ks-export --trt` (ks_export/tensorrt.py: build_step).
#   bash trt/build_engines.sh [--int8] [--clip]     from anywhere; needs trtexec and an NVIDIA GPU
# --int8: also the INT8 encoder (explicit quantization from encoder.int8.trt.onnx, symmetric Q/DQ);
# --clip: also the fused clip engine (Triton's tensorrt_plan model). Engines are tied to the GPU model
# and the TensorRT release, so their names carry both: trt/<graph>.<gpu>.trt<x.y.z>.<precision>.plan,
# which `ks-run --engine trt` finds by itself. Each engine's sha256 is appended to trt/engines.sha256: the runtime
# and `ks-export verify` check the engine against it (an engine in neither it nor the manifest is refused).
# Environment: TRTEXEC (path to trtexec), KS_GPU_INDEX (default 0), KS_GPU_NAME and KS_TRT_VERSION (override the
# probes), KS_TRT_WORKSPACE_MIB.
set -euo pipefail
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$BUNDLE"
INT8=0; CLIP=0
for arg in "$@"; do case "$arg" in --int8) INT8=1 ;; --clip) CLIP=1 ;; *) echo "usage: $0 [--int8] [--clip]" >&2; exit 2 ;; esac; done
TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"
[ -x "$TRTEXEC" ] || { echo "trtexec not found: put TensorRT's bin/ on PATH or set TRTEXEC" >&2; exit 2; }
GPU_INDEX="${KS_GPU_INDEX:-0}"
WORKSPACE="${KS_TRT_WORKSPACE_MIB:-@@{workspace_mib}}"

# The GPU's name as the driver gives it (what the runtime reads), then nvidia-smi's.
GPU_NAME="${KS_GPU_NAME:-}"
if [ -z "$GPU_NAME" ]; then GPU_NAME="$(python3 - "$GPU_INDEX" 2>/dev/null <<'PY' || true
import ctypes, sys
cuda = ctypes.CDLL("libcuda.so.1")
name, dev = ctypes.create_string_buffer(256), ctypes.c_int(0)
ok = cuda.cuInit(0) == 0 and cuda.cuDeviceGet(ctypes.byref(dev), int(sys.argv[1])) == 0
ok = ok and cuda.cuDeviceGetName(name, 256, dev) == 0
print(name.value.decode() if ok else "")
PY
)"; fi
if [ -z "$GPU_NAME" ] && command -v nvidia-smi >/dev/null; then
  GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader -i "$GPU_INDEX" | head -n 1 || true)"; fi
[ -n "$GPU_NAME" ] || { echo "cannot name GPU $GPU_INDEX (no libcuda.so.1, no nvidia-smi); set KS_GPU_NAME" >&2; exit 2; }
slug() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9][^a-z0-9]*/-/g' -e 's/^-//' -e 's/-$//'; }
GPU="$(slug "$GPU_NAME")"

# The TensorRT release: Python's tensorrt if present, else trtexec's banner ([TensorRT v100300] = 10.3.0).
TRT_VERSION="${KS_TRT_VERSION:-$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)}"
if [ -z "$TRT_VERSION" ]; then
  CODE="$({ "$TRTEXEC" --help 2>&1 || true; } | sed -n 's/.*TensorRT v\([0-9][0-9]*\).*/\1/p' | head -n 1)"
  [ -n "$CODE" ] || { echo "cannot read the TensorRT version from $TRTEXEC; set KS_TRT_VERSION" >&2; exit 2; }
  if [ "$CODE" -ge 100000 ]; then TRT_VERSION="$((CODE / 10000)).$((CODE / 100 % 100)).$((CODE % 100))"
  else TRT_VERSION="$((CODE / 1000)).$((CODE / 100 % 10)).$((CODE % 100))"; fi
fi
TRT_VERSION="$(printf '%s' "$TRT_VERSION" | cut -d. -f1-3)"
case "$TRT_VERSION" in *.*.*) ;; *) TRT_VERSION="$TRT_VERSION.0" ;; esac
TRT_MAJOR="${TRT_VERSION%%.*}"
CACHE="trt/timing.$GPU.trt$TRT_VERSION.cache"
echo "building for $GPU_NAME ($GPU), TensorRT $TRT_VERSION, workspace ${WORKSPACE} MiB"

record() {  # "<sha256>  trt/<engine>.plan", as sha256sum writes it; a rebuild appends and the last line wins
  if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi >> trt/engines.sha256
}
build() {  # engine file, then trtexec arguments
  local engine="$1"; shift
  echo "== $engine"
  "$TRTEXEC" "$@"
  [ -s "$engine" ] || { echo "trtexec wrote no $engine" >&2; exit 1; }
  record "$engine"
}
skip() { echo "== skipped $1: $2" >&2; }

@@{engine_builds}
echo "done: engines in $BUNDLE/trt (ks-run --engine trt --device cuda:$GPU_INDEX finds them)"
