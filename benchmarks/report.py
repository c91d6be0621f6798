"""`python -m benchmarks.report`: the results table of `make bench`.

Reads the rows the benchmarks recorded (benchmarks/.cache/rows.json) and pytest-benchmark's JSON
(benchmarks/.cache/pytest-benchmark.json, from which the cpp_ext rows of item 9 come), and writes
benchmarks/results/<machine>.json (every row with its figure, target, model, boundary and the numbers behind it,
the machine and the pytest-benchmark statistics) and benchmarks/results/<machine>.md (the table).
With --doc docs/benchmarks.md that page's text between <!-- BENCH:START --> and <!-- BENCH:END --> is replaced by
the table and the rest of the page is kept; a quick run (KS_BENCH_QUICK=1) never touches the page. The README is
never edited.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    BENCH_COMMAND,
    MODEL_LABELS,
    PYTEST_JSON,
    RESULTS,
    ROWS_JSON,
    Row,
    jsonable,
    load_average,
    machine_info,
)

BENCH_START, BENCH_END = "<!-- BENCH:START -->", "<!-- BENCH:END -->"
CPP_BATCH = 8  # the batch of the cpp_ext rows' figure (every batch is in the details)
FLOP_NOTE = (
    "FLOPs are 2 x multiply-adds of the Conv, Gemm, MatMul and Einsum nodes, counted from the ONNX graph "
    "with shape inference (ks_export/flops.py); other ops (elementwise, pooling, normalisation, softmax) are "
    "not counted."
)
METHOD_NOTE = (
    "Each ratio row times both sides in one process, interleaved (A B B A ...), and divides medians; the "
    'cpp_ext rows (9) are pytest-benchmark\'s calibrated rounds run back to back. "Network" is the ONNX '
    'graphs only; "end to end" is from a decoded frame in memory to its result, with decoding reported on '
    "its own (rows 1d, 5d). Every row's full boundary, model and test are in the JSON beside this file."
)


# --- item 9: cpp_ext, from pytest-benchmark's JSON ------------------------------------------------------------------


def cpp_ext_rows(bench: dict) -> list[Row]:
    """Rows 9a/9b: cpp_ext's pack_frames and gather_clips against the numpy reference (bench_cpp_ext.py)."""
    medians: dict[tuple[str, int, str], float] = {}
    for b in bench.get("benchmarks", []):
        match = re.match(r"test_(pack_frames|gather_clips)\[", b.get("name", ""))
        params = b.get("params") or {}
        if match and "impl" in params and "batch" in params:
            medians[(match.group(1), int(params["batch"]), params["impl"])] = b["stats"]["median"]
    rows = []
    for key, op, what in (
        ("9a", "pack_frames", "uint8 BGR frames [B, 224, 224, 3] -> normalised float32 RGB [B, 3, 224, 224]"),
        ("9b", "gather_clips", "clips of n = 5 packed 224 px frames from a 64-frame ring -> [B, 5, 3, 224, 224]"),
    ):
        ref, ours = medians.get((op, CPP_BATCH, "numpy")), medians.get((op, CPP_BATCH, "cpp_ext+out"))
        if ref is None or ours is None:
            continue
        table = {
            f"B={b} {impl}": {"median_ms": 1e3 * m, "x_numpy": medians.get((op, b, "numpy"), np.nan) / m}
            for (o, b, impl), m in sorted(medians.items())
            if o == op
        }
        one_thread = medians.get((op, CPP_BATCH, "cpp_ext+out/1t"))
        rows.append(
            Row(
                key=key,
                item=9,
                name=f"cpp_ext {op} against its numpy reference, batch {CPP_BATCH}",
                figure=ref / ours,
                unit="x",
                model="none (data movement)",
                boundary=(
                    f"one call, {what}; cpp_ext writing into a preallocated buffer (as the runtime does) against "
                    f"the numpy a user would write; pytest-benchmark median, back to back (bench_cpp_ext.py)"
                ),
                command=f"{BENCH_COMMAND}  (test: benchmarks/bench_cpp_ext.py::test_{op})",
                details={"by_batch_and_impl": table},
                note=f"{1e3 * ours:.2f} ms against numpy {1e3 * ref:.2f} ms"
                + (f"; one thread {ref / one_thread:.1f}x" if one_thread else ""),
            )
        )
    return rows


# --- the table ------------------------------------------------------------------------------------------------------


def figure_text(row: Row) -> str:
    if row.figure is None or not np.isfinite(row.figure):
        return "-"
    v = abs(row.figure)
    digits = 0 if v >= 100 else 1 if v >= 10 else 2
    return f"{row.figure:.{digits}f}{row.unit}"


def model_label(model: str) -> str:
    """The table's short name of a row's model(s): "paper-r50 / VGG-16 AU"."""
    labels = []
    for part in (p.strip() for p in model.split(";")):
        for full, short in MODEL_LABELS.items():
            if part.startswith(full):
                part = short + part[len(full) :]
                break
        labels.append(part)
    return " / ".join(labels)


def status_text(row: Row) -> str:
    return "**missed**" if row.status == "missed" else row.status


def machine_text(info: dict) -> str:
    v = info["versions"]
    blas = info["blas"][0] if info["blas"] else {}
    flags = ", ".join(
        f for f in info["cpu_flags"] if f.startswith(("avx512f", "avx512_vnni", "avx512_bf16", "avx2", "fma", "amx"))
    )
    pins = {k: val for k, val in info["environment"].items() if k.startswith("OPENBLAS") and val}
    pinned = (
        (
            f"; this machine sets {', '.join(f'{k}={val}' for k, val in pins.items())} (unset for the peak "
            f"measurement only)"
        )
        if pins
        else "; OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE not set"
    )
    return (
        f"{info['cpu']}, {info['cores']} cores ({flags}), {info['memory_gib']:.0f} GiB; {info['os']}; "
        f"Python {info['python']}; numpy {v['numpy']} (OpenBLAS {blas.get('version', '?')}, kernel "
        f"{blas.get('architecture', '?')}){pinned}; onnxruntime {v['onnxruntime']}; onnx {v['onnx']}; "
        f"torch {v['torch']}; OpenCV {v['opencv-python-headless']}"
    )


def contention_text(meta: dict, info: dict, load: list[float]) -> str:
    """How much of the machine other processes took while the benchmarks ran: the figures' context."""
    c = meta.get("contention") or {}
    end = c.get("load_at_end") or meta.get("load_at_end") or ["?"]
    text = (
        f"Load average (1 min) {load[0]} at the start, {end[0]} at the end."
        if load
        else f"Load average (1 min) {end[0]} at the end."
    )
    if c.get("others_cores") is not None:
        text = (
            f"While the suite ran ({c['wall_s'] / 60:.0f} min), other processes kept {c['others_cores']:.2f} of "
            f"the {info['cores']} cores busy on average (/proc/stat less this run's own CPU time). " + text
        )
        if c["others_cores"] > 0.25:
            text += " The machine was shared: speed figures are pessimistic by about that share."
    return text


def markdown(rows: list[Row], info: dict, meta: dict) -> str:
    when = datetime.datetime.fromtimestamp(meta["started"]).strftime("%Y-%m-%d %H:%M")
    load = meta.get("load_at_start") or []
    lines = [
        f"### Benchmarks: {info['cpu']}, {info['cores']} cores (`benchmarks/results/{info['slug']}.md`)",
        "",
        f"Measured by `{BENCH_COMMAND}` on {when}, {meta['minutes']:.0f} min"
        + (" (**quick smoke run: KS_BENCH_QUICK=1, these are not results**)" if meta["quick"] else "")
        + ".",
        f"Machine: {machine_text(info)}.",
        contention_text(meta, info, load),
        "",
        "| row | what | figure | target | status | measured | model | other load |",
        "|---|---|---:|---|---|---|---|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r.item, r.key)):
        target = r.target.text() if r.target else ""
        others = r.details.get("others_cores")
        load = f"{others:.2f}" if isinstance(others, (int, float)) else ""
        lines.append(
            f"| {r.key} | {r.name} | {figure_text(r)} | {target} | {status_text(r)} | {r.note} | "
            f"{model_label(r.model)} | {load} |"
        )
    lines += ["", "<details><summary>Measurement boundaries (what each timer or count includes)</summary>", ""]
    lines += [f"- **{r.key}**: {r.boundary}." for r in sorted(rows, key=lambda r: (r.item, r.key))]
    lines += ["", "</details>"]
    lines += [
        "",
        "Other load: the cores that other processes kept busy while the row's test ran (/proc/stat less the "
        "suite's own CPU time; empty where not measured).",
    ]
    lines += [
        "",
        "Models: " + "; ".join(f"**{short}** = {full}" for full, short in MODEL_LABELS.items()) + ".",
        "",
        FLOP_NOTE,
        "",
        METHOD_NOTE,
    ]
    missed = [r for r in rows if r.status == "missed"]
    skipped = [r for r in rows if r.status.startswith("skipped")]
    if missed:
        lines += [
            "",
            "Missed: " + "; ".join(f"{r.key} ({figure_text(r)} against {r.target.text()})" for r in missed) + ".",
        ]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{r.key} ({r.status[len('skipped: ') :]})" for r in skipped) + "."]
    return "\n".join(lines) + "\n"


def update_doc(path: Path, table: str) -> bool:
    """Replace a page's text between the BENCH markers, keeping the rest; False (nothing written) when the page or
    its markers are missing."""
    if not path.is_file():
        return False
    text = path.read_text()
    start, end = text.find(BENCH_START), text.find(BENCH_END)
    if start < 0 or end < start:
        return False
    path.write_text(text[: start + len(BENCH_START)] + "\n" + table + text[end:])
    return True


def write_results(out: Path, info: dict, meta: dict, rows: list[Row], bench: dict, table: str) -> str:
    """benchmarks/results/<machine>.json (rows, machine, pytest-benchmark statistics) and .md (the table); returns
    the files' stem (the machine's name, with -quick for a smoke run)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = info["slug"] + ("-quick" if meta["quick"] else "")
    stats = [
        {
            "name": b["name"],
            "group": b.get("group"),
            "median_s": b["stats"]["median"],
            "min_s": b["stats"]["min"],
            "rounds": b["stats"]["rounds"],
            "extra_info": b.get("extra_info", {}),
        }
        for b in bench.get("benchmarks", [])
    ]
    result = {
        "command": BENCH_COMMAND,
        "machine": info,
        **meta,
        "commit": bench.get("commit_info", {}),
        "rows": [r.to_dict() for r in rows],
        "pytest_benchmark": {"version": bench.get("version"), "datetime": bench.get("datetime"), "benchmarks": stats},
    }
    (out / f"{stem}.json").write_text(json.dumps(jsonable(result), indent=1) + "\n")
    (out / f"{stem}.md").write_text(table)
    return stem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=Path, default=ROWS_JSON)
    parser.add_argument("--pytest-json", type=Path, default=PYTEST_JSON)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--doc",
        type=Path,
        default=None,
        metavar="PAGE",
        help="also put the table into this page between its BENCH markers (docs/benchmarks.md)",
    )
    args = parser.parse_args(argv)
    if not args.rows.is_file():
        print(f"{args.rows}: no recorded rows; run `{BENCH_COMMAND}` first", file=sys.stderr)
        return 1
    recorded = json.loads(args.rows.read_text())
    bench = json.loads(args.pytest_json.read_text()) if args.pytest_json.is_file() else {}
    if not bench:
        print(f"note: {args.pytest_json} missing: no cpp_ext rows, no pytest-benchmark statistics", file=sys.stderr)
    rows = [Row.from_dict(r) for r in recorded["rows"]] + cpp_ext_rows(bench)
    info = machine_info()
    meta = {
        "started": recorded["started"],
        "quick": recorded["quick"],
        "load_at_start": recorded.get("load_at_start"),
        "load_at_end": load_average(),
        "minutes": (time.time() - recorded["started"]) / 60,
        "contention": recorded.get("contention") or {},
    }
    if meta["contention"].get("wall_s"):  # the suite's own duration, whenever the report is written
        meta["minutes"] = meta["contention"]["wall_s"] / 60
    table = markdown(rows, info, meta)
    stem = write_results(args.out, info, meta, rows, bench, table)
    print(table)
    print(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}")
    if args.doc is not None:
        if meta["quick"]:
            print(f"quick run: {args.doc} left as it is")
        elif update_doc(args.doc, table):
            print(f"{args.doc}: table replaced between {BENCH_START} and {BENCH_END}")
        else:
            print(f"{args.doc}: missing, or no {BENCH_START} ... {BENCH_END} markers; not updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
