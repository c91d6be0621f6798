"""Issue 19: encoder -> head = clip.onnx is re-checked whenever an engine opens a bundle (engine/consistency.py), so
a manifest re-hashed over changed weights is refused before the first frame instead of served."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ks_runtime.cli import main
from ks_runtime.core import bundle as B
from ks_runtime.core.errors import BundleError
from ks_runtime.engine import create_engine
from ks_runtime.engine.consistency import CONSISTENCY_ATOL, NOISE_SEED, check_consistency, key_slots
from ks_runtime.engine.ort import OrtEngine
from ks_runtime.engine.ort_graphs import BundleGraphs
from tests.runtime.core.test_bundle import copy, rehash, toy, with_check  # noqa: F401 (fixtures)
from tests.runtime.core.test_bundle_integrity import negated_encoder

REFUSED = r"encoder -> head = clip\.onnx on .* BEYOND 1e-04 .*encoder\.onnx, head\.onnx, clip\.onnx \(fields 'graphs"


def test_a_sound_bundle_passes_on_noise_or_its_check_frames(copy):  # noqa: F811
    engine = OrtEngine(copy)
    assert engine.consistency.max_abs <= 1e-6 and f"seed {NOISE_SEED}" in engine.consistency.inputs
    assert engine.consistency.key_slots == key_slots(B.read_manifest(copy).clip_len) == (0, 1, 2)
    with_check(copy)
    assert OrtEngine(copy).consistency.inputs == B.CHECK_FRAMES


def test_a_rehashed_changed_encoder_is_refused_by_every_cpu_path(copy):  # noqa: F811
    """Before: every sha256 held, so the negated encoder was served."""
    onnx.save(negated_encoder(copy / "encoder.onnx"), str(copy / "encoder.onnx"))
    rehash(copy, "encoder.onnx")
    manifest = B.read_manifest(copy)  # the hashes cannot tell
    for precision in ("auto", "fp32", "int8"):
        with pytest.raises(BundleError, match=REFUSED) as error:
            create_engine(manifest, precision=precision)
        assert str(copy) in str(error.value)
    with pytest.raises(BundleError, match=REFUSED):
        check_consistency(manifest, BundleGraphs(manifest, roles=("encoder", "head")))  # reused sessions: the same


def test_the_check_reuses_the_engines_cpu_sessions(copy, monkeypatch):  # noqa: F811
    opened = []
    init = BundleGraphs.__init__

    def counting(self, bundle, roles=B.GRAPH_ROLES, *args, **kwargs):
        opened.append(tuple(roles))
        init(self, bundle, roles, *args, **kwargs)

    monkeypatch.setattr(BundleGraphs, "__init__", counting)
    OrtEngine(copy)
    assert opened == [("encoder", "head"), ("clip",)]  # the engine's own, then only the clip graph for the check


def _negate_largest_weight(path):
    model = onnx.load(str(path))
    target = max(model.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)
    target.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(target), target.name))
    onnx.save(model, str(path))


def test_ks_run_refuses_a_rehashed_corrupted_bundle(bundle, tmp_path, capsys):
    """The exported bundle, its encoder's largest weight negated and re-hashed: ks-run exits 1 naming why."""
    corrupted = shutil.copytree(bundle, tmp_path / "bundle")
    _negate_largest_weight(corrupted / "encoder.onnx")
    rehash(corrupted, "encoder.onnx")
    args = ["--input", "synthau:tiny:S01:T1", "--csv", str(tmp_path / "a.csv"), "--no-progress"]
    assert main([str(corrupted), *args]) == 1
    err = capsys.readouterr().err
    assert "encoder -> head = clip.onnx" in err and "BEYOND" in err and "re-export the bundle" in err
    assert main([str(bundle), *args]) == 0  # the bundle as exported streams
    consistency = create_engine(bundle).consistency
    assert consistency.max_abs <= CONSISTENCY_ATOL and consistency.seconds < 5
    assert np.isfinite(consistency.max_abs)
