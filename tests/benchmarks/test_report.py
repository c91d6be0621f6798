"""benchmarks/harness.py and report.py: targets, row status, the machine's name, the cpp_ext rows taken from
pytest-benchmark's JSON, the markdown table and the README splice (no benchmark is run)."""

import numpy as np
import pytest

from benchmarks.harness import R50_MODEL, Row, Samples, Target, jsonable, machine_info, machine_slug, rounds_for
from benchmarks.report import README_END, README_START, cpp_ext_rows, markdown, model_label, update_readme


def test_targets_and_status():
    assert Target(">=", 4.5, "x").met(4.5) and not Target(">=", 4.5).met(4.49)
    assert Target("<", 1.0).met(0.99) and not Target("<", 1.0).met(1.0)
    assert Target("<=", 0.5, " points").text() == "<= 0.5 points"
    assert Row("1a", 1, "r", 4.6, "x", "m", "b", Target(">=", 4.5)).status == "met"
    assert Row("1a", 1, "r", 4.4, "x", "m", "b", Target(">=", 4.5)).status == "missed"
    assert Row("2a", 2, "r", 2.0, "x", "m", "b").status == "no target"
    assert Row("3c", 3, "r", None, "", "m", "b", Target("<=", 0.5)).status.startswith("skipped")
    with pytest.raises(ValueError):
        Target("~", 1.0).met(1.0)


def test_row_round_trips_through_json():
    row = Row("4a", 4, "peak", np.float64(93.2), "%", R50_MODEL, "b", Target(">=", 85, "%"),
              details={"x": np.arange(3), "nan": float("nan")})
    data = row.to_dict()
    assert data["details"] == {"x": [0, 1, 2], "nan": None} and data["target"]["text"] == ">= 85%"
    back = Row.from_dict(data)
    assert back.target == row.target and back.status == "met" and back.figure == pytest.approx(93.2)


def test_machine_name_and_rounds():
    assert machine_slug("AMD EPYC", 2) == "amd-epyc-2c"
    assert machine_slug("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", 8) == "intel-xeon-platinum-8375c-8c"
    info = machine_info()
    assert info["cores"] >= 1 and info["versions"]["numpy"] == np.__version__
    assert rounds_for(1.0, 10.0, 3, 100) in (3, 10)  # 3 in quick mode
    assert Samples(np.array([0.5, 1.0, 2.0]), 8).fps == pytest.approx(8.0)
    assert jsonable({"a": (np.int64(1), np.float32(2.5))}) == {"a": [1, 2.5]}


def fake_pytest_json(numpy_s: float, ours_s: float) -> dict:
    benchmarks = []
    for op in ("pack_frames", "gather_clips"):
        for impl, median in (("numpy", numpy_s), ("cpp_ext+out", ours_s), ("cpp_ext+out/1t", 2 * ours_s)):
            benchmarks.append({"name": f"test_{op}[{impl}-8]", "params": {"impl": impl, "batch": 8},
                               "stats": {"median": median, "min": median, "rounds": 5}})
    return {"benchmarks": benchmarks}


def test_cpp_ext_rows_from_pytest_benchmark_json():
    rows = cpp_ext_rows(fake_pytest_json(numpy_s=0.004, ours_s=0.001))
    assert [r.key for r in rows] == ["9a", "9b"]
    assert rows[0].figure == pytest.approx(4.0) and rows[0].status == "no target"
    assert cpp_ext_rows({}) == []


def test_markdown_marks_missed_and_skipped(tmp_path):
    rows = [Row("5a", 5, "Real time", 12.0, " fps", R50_MODEL, "frames in memory", Target(">=", 40, " fps"),
                note="12 fps"),
            Row("3c", 3, "F1 cost", None, " points", "m", "b", Target("<=", 0.5), status="skipped: run make demo")]
    meta = {"started": 0.0, "quick": False, "minutes": 14.0, "load_at_start": [1.0],
            "contention": {"wall_s": 840.0, "others_cores": 1.0, "load_at_end": [1.5]}}
    text = markdown(rows, machine_info(), meta)
    assert "| 5a | Real time | 12.0 fps | >= 40 fps | **missed** | 12 fps | paper-r50 |" in text
    assert "Missed: 5a" in text and "Skipped: 3c" in text and "pessimistic" in text
    assert model_label(f"{R50_MODEL}; other model") == "paper-r50 / other model"

    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n{README_START}\nold table\n{README_END}\nrest\n")
    assert update_readme(readme, "new table\n")
    assert readme.read_text() == f"# title\n{README_START}\nnew table\n{README_END}\nrest\n"
    readme.write_text("# no markers\n")
    assert not update_readme(readme, "new table\n") and readme.read_text() == "# no markers\n"
