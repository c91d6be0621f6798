#!/usr/bin/env bash
# Everything one lent GPU machine runs, in one call of about 9 minutes (the device budget is 15 minutes a
# session): build cpp_ext for this GPU with the machine's own Python, then benchmarks/gpu_session.py (kernel
# parity and speed, a training step, encoder timings, engines), then KS against the frame-only model trained
# side by side on the GPU (benchmarks/train_sweep.py) until the budget runs out. Results land in $OUT.
#   OUT=gpu_out KS_LEASE_SECONDS=540 bash benchmarks/gpu_lease.sh
# Wheels the machine lacks (tritonclient, onnxslim, python-rapidjson for Python 3.12) travel in .whl/.
set -u
OUT=${OUT:-gpu_out}
BUDGET=${KS_LEASE_SECONDS:-540}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi -L
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
# cpp_ext in place (the CPU module and libks_cuda.so beside cpp_ext/__init__.py), for this GPU only.
KS_CUDA_ARCHS=${KS_CUDA_ARCHS:-$arch} cmake -S . -B /tmp/ks-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$($PY -m pybind11 --cmakedir)" >/tmp/ks-build.log \
  && cmake --build /tmp/ks-build >>/tmp/ks-build.log && cmake --install /tmp/ks-build --prefix "$PWD" >>/tmp/ks-build.log \
  || { tail -30 /tmp/ks-build.log; exit 1; }
$PY -m ks_runtime.engine.gpu_probe
timeout 300 $PY benchmarks/gpu_session.py --out "$OUT/gpu_session.md" 2>&1 | tee "$OUT/gpu_session.log"
left=$((BUDGET - SECONDS - 30))
echo "sweep: $left s left"
$PY benchmarks/train_sweep.py --config demo --methods ks frame --labels 0.1 --seeds 0 1 2 3 4 5 6 7 \
  --device cuda --jobs 8 --threads 1 --deadline "$left" --out /tmp/sweep 2>&1 | tee "$OUT/sweep.log"
cp /tmp/sweep/summary.md /tmp/sweep/summary.json "$OUT/" 2>/dev/null
tar czf "$OUT/sweep_runs.tar.gz" -C /tmp/sweep --exclude '*.pt' . 2>/dev/null
echo "lease script: $SECONDS s"
