"""The runtime runs a whole stream where torch (and ks_train, ks_export) cannot be imported, as on an embedded box."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "ks_train", "ks_export", "torchvision"):
                raise ImportError(f"{name} is not installed on this box")
            return None

    sys.meta_path.insert(0, Refuse())
    import numpy as np
    from ks_runtime.cli import main as cli_main
    from ks_runtime.detector import Detector

    bundle, out = sys.argv[1], sys.argv[2]
    detector = Detector(bundle, policy="ensemble", batch_size=4)
    table = detector.detect("synthau:tiny:S02:T1", csv=out + "/run.csv", plot=out + "/run.png")
    frames = [r.index for r in detector.stream("synthau:tiny:S03:T1")]
    live = [r.index for _ in range(5) for r in detector.infer_frame(np.zeros((32, 32, 3), np.uint8), colour="RGB")]
    code = cli_main([bundle, "--input", "synthau:tiny:S01:T1", "--csv", out + "/cli.csv", "--no-progress", "-q"])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ks_train", "ks_export"))
    print(json.dumps({"rows": len(table), "f1": detector.summary.f1 is not None, "frames": len(frames),
                      "live": live, "cli": code, "loaded": loaded}))
""")


def test_a_whole_stream_runs_without_torch(bundle, tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(bundle), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"rows": 120, "f1": True, "frames": 120, "live": [0, 1, 2], "cli": 0, "loaded": []}
    assert (tmp_path / "run.csv").is_file() and (tmp_path / "run.png").is_file() and (tmp_path / "cli.csv").is_file()
