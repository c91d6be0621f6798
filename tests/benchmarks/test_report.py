"""benchmarks/harness.py and report.py: targets, row status, the machine's name, the cpp_ext rows taken from
pytest-benchmark's JSON, the markdown table and its splice into docs/benchmarks.md (no benchmark is run)."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.harness import R50_MODEL, Row, Samples, Target, jsonable, machine_info, machine_slug, rounds_for
from benchmarks.report import BENCH_END, BENCH_START, cpp_ext_rows, main, markdown, model_label, update_doc

REPO = Path(__file__).resolve().parents[2]


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
    row = Row(
        "4a",
        4,
        "peak",
        np.float64(93.2),
        "%",
        R50_MODEL,
        "b",
        Target(">=", 85, "%"),
        details={"x": np.arange(3), "nan": float("nan")},
    )
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
            benchmarks.append(
                {
                    "name": f"test_{op}[{impl}-8]",
                    "params": {"impl": impl, "batch": 8},
                    "stats": {"median": median, "min": median, "rounds": 5},
                }
            )
    return {"benchmarks": benchmarks}


def test_cpp_ext_rows_from_pytest_benchmark_json():
    rows = cpp_ext_rows(fake_pytest_json(numpy_s=0.004, ours_s=0.001))
    assert [r.key for r in rows] == ["9a", "9b"]
    assert rows[0].figure == pytest.approx(4.0) and rows[0].status == "no target"
    assert cpp_ext_rows({}) == []


def test_markdown_marks_missed_and_skipped():
    rows = [
        Row("5a", 5, "Real time", 12.0, " fps", R50_MODEL, "frames in memory", Target(">=", 40, " fps"), note="12 fps"),
        Row("3c", 3, "F1 cost", None, " points", "m", "b", Target("<=", 0.5), status="skipped: run make demo"),
    ]
    meta = {
        "started": 0.0,
        "quick": False,
        "minutes": 14.0,
        "load_at_start": [1.0],
        "contention": {"wall_s": 840.0, "others_cores": 1.0, "load_at_end": [1.5]},
    }
    text = markdown(rows, machine_info(), meta)
    assert "| 5a | Real time | 12.0 fps | >= 40 fps | **missed** | 12 fps | paper-r50 |" in text
    assert "Missed: 5a" in text and "Skipped: 3c" in text and "pessimistic" in text
    assert model_label(f"{R50_MODEL}; other model") == "paper-r50 / other model"


def test_update_doc_replaces_only_the_marked_table(tmp_path):
    doc = tmp_path / "benchmarks.md"
    before, after = "# Benchmarks\n\nConventions: kept.\n\n", "\nNotes after the table: kept.\n"
    doc.write_text(f"{before}{BENCH_START}\n| old | table |\n{BENCH_END}{after}")
    assert update_doc(doc, "| new | table |\n")
    assert doc.read_text() == f"{before}{BENCH_START}\n| new | table |\n{BENCH_END}{after}"
    assert update_doc(doc, "| newer |\n")  # again: the markers survive the first splice
    assert doc.read_text() == f"{before}{BENCH_START}\n| newer |\n{BENCH_END}{after}"
    for text in ("# no markers\n", f"{BENCH_END}\nend before start\n{BENCH_START}\n"):
        doc.write_text(text)
        assert not update_doc(doc, "new table\n") and doc.read_text() == text
    assert not update_doc(tmp_path / "missing.md", "new table\n") and not (tmp_path / "missing.md").exists()


def recorded_rows(path: Path, quick: bool) -> Path:
    row = Row("2a", 2, "onnxruntime against PyTorch eager", 2.0, "x", R50_MODEL, "encoder only", note="2.0x here")
    path.write_text(json.dumps({"started": 0.0, "quick": quick, "rows": [row.to_dict()]}))
    return path


@pytest.mark.parametrize("quick", [False, True])
def test_main_writes_results_and_the_doc_never_the_readme(tmp_path, quick):
    doc = tmp_path / "benchmarks.md"
    page = f"# Benchmarks\n{BENCH_START}\nold table\n{BENCH_END}\nrest\n"
    doc.write_text(page)
    readme = (REPO / "README.md").read_bytes()
    out = tmp_path / "results"
    argv = [
        "--rows",
        str(recorded_rows(tmp_path / "rows.json", quick)),
        "--pytest-json",
        str(tmp_path / "none.json"),
        "--out",
        str(out),
        "--doc",
        str(doc),
    ]
    assert main(argv) == 0
    stem = machine_info()["slug"] + ("-quick" if quick else "")
    table = (out / f"{stem}.md").read_text()
    assert "| 2a | onnxruntime against PyTorch eager | 2.00x |" in table
    assert json.loads((out / f"{stem}.json").read_text())["rows"][0]["key"] == "2a"
    if quick:
        assert doc.read_text() == page
    else:
        assert doc.read_text() == f"# Benchmarks\n{BENCH_START}\n{table}{BENCH_END}\nrest\n"
    assert (REPO / "README.md").read_bytes() == readme


def test_the_repository_page_has_the_markers_and_make_bench_targets_it():
    text = (REPO / "docs" / "benchmarks.md").read_text()
    assert text.count(BENCH_START) == 1 and text.count(BENCH_END) == 1
    assert text.index(BENCH_START) < text.index(BENCH_END)
    assert BENCH_START not in (REPO / "README.md").read_text()
    assert "benchmarks.report --doc docs/benchmarks.md" in (REPO / "Makefile").read_text()
