"""This machine's single-precision matrix-multiply peak, run in its own process by bench_peak.py.

    python -m benchmarks.sgemm_peak --sizes 2048,4096 --seconds 2 [--torch]

Best GFLOP/s (2 n^3 per n x n product) of numpy's float32 matmul (OpenBLAS) at each size, on one thread at the
largest, and of torch.matmul (its own BLAS) with --torch; prints JSON with the BLAS kernel threadpoolctl reports.
bench_peak.py starts it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from the environment, so OpenBLAS
picks its own fastest kernel for this CPU instead of the older one those variables pin.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable


def best_gflops(matmul: Callable[[], object], n: int, seconds: float, min_reps: int = 3) -> float:
    """Best GFLOP/s over repeated calls for `seconds` (at least `min_reps`), after one warm-up call."""
    matmul()
    best, reps, deadline = float("inf"), 0, time.perf_counter() + seconds
    while reps < min_reps or time.perf_counter() < deadline:
        started = time.perf_counter()
        matmul()
        best = min(best, time.perf_counter() - started)
        reps += 1
    return 2 * n**3 / best / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,4096")
    parser.add_argument("--seconds", type=float, default=2.0, help="per size and library")
    parser.add_argument("--torch", action="store_true", help="also time torch.matmul")
    args = parser.parse_args(argv)

    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    result: dict = {"numpy": {}, "torch": {}}
    for n in sizes:
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        c = np.empty_like(a)
        result["numpy"][n] = best_gflops(lambda a=a, b=b, c=c: np.matmul(a, b, out=c), n, args.seconds)
    with threadpool_limits(1):  # one core's worth: the per-core figure, less exposed to other processes' load
        n = sizes[-1]
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        c = np.empty_like(a)
        result["numpy_1_thread"] = {n: best_gflops(lambda: np.matmul(a, b, out=c), n, args.seconds)}
    keep = ("internal_api", "version", "architecture", "num_threads", "threading_layer", "prefix")
    result["blas"] = [{k: i.get(k) for k in keep} for i in threadpool_info() if i.get("user_api") == "blas"]
    if args.torch:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            c = torch.empty(n, n)
            result["torch"][n] = best_gflops(lambda a=a, b=b, c=c: torch.matmul(a, b, out=c), n, args.seconds)
        result["torch_blas"] = [
            line.strip()
            for line in torch.__config__.show().splitlines()
            if "Math Kernel" in line or "CPU capability" in line
        ]
        result["torch_threads"] = torch.get_num_threads()
    result["environment"] = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
