"""The architecture, enforced: the dependency direction between packages, the layers inside ks_runtime, no import
cycles, function-level imports only to defer an optional dependency, and short functions."""

import ast
from pathlib import Path

from tests.architecture import (
    ROOT,
    Import,
    cycles,
    function_lengths,
    imports,
    layer_violations,
    undeclared_deferred_imports,
)

FORBIDDEN = ("torch", "ks_train", "ks_export")
MAX_FUNCTION_LINES = 60


def imported_roots(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_imports_no_torch_and_no_training_code():
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & set(FORBIDDEN))
        for path in (ROOT / "ks_runtime").rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"ks_runtime must stay torch-free: {offenders}"


def test_train_does_not_import_export():
    offenders = [str(p) for p in (ROOT / "ks_train").rglob("*.py") if "ks_export" in imported_roots(p)]
    assert not offenders, f"imports flow ks_export -> ks_train, never back: {offenders}"


def test_runtime_layers_import_only_what_they_may():
    bad = layer_violations(imports(("ks_runtime",)))
    assert not bad, "core imports no other layer; engine, faces, io and synth import core only:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(imports())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_function_level_imports_say_what_they_defer():
    bad = undeclared_deferred_imports(imports())
    assert not bad, "import at module level, or say `# deferred: <optional dependency>`:\n" + "\n".join(bad)


def test_no_product_function_is_over_60_lines():
    long = [f"{where} ({n} lines)" for where, n in function_lengths() if n > MAX_FUNCTION_LINES]
    assert not long, "break these up:\n" + "\n".join(long)


# The checks themselves, on made-up imports: each must catch what it is there to catch.


def fake(importer: str, target: str, in_function: bool = False) -> Import:
    return Import(importer, target, ROOT / "tests" / "test_layering.py", 1, in_function, False)


def test_the_layer_check_catches_io_reaching_into_synth_and_core_into_engine():
    edges = [
        fake("ks_runtime.io.table", "ks_runtime.synth.face"),
        fake("ks_runtime.core.au", "ks_runtime.engine"),
        fake("ks_runtime.faces.base", "ks_runtime.core.results"),
        fake("ks_runtime.detector", "ks_runtime.synth"),
    ]
    bad = layer_violations(edges)
    assert len(bad) == 2 and "io/ imports ks_runtime.synth.face" in bad[0] and "core/ imports" in bad[1]


def test_the_layer_check_covers_layer_packages_the_top_modules_and_cpp_ext():
    allowed = [
        fake("ks_runtime.engine.ort", "ks_runtime.core"),
        fake("ks_runtime.core.kernels", "cpp_ext"),
        fake("ks_runtime.engine.trt", "cpp_ext.cuda"),
    ]
    refused = [
        fake("ks_runtime.core", "ks_runtime.engine.ort"),
        fake("ks_runtime.io", "ks_runtime.synth"),
        fake("ks_runtime.faces.align", "ks_runtime.stream"),
        fake("ks_runtime.faces.align", "cpp_ext"),
        fake("ks_runtime.core.au", "ks_train.config"),
    ]
    assert layer_violations(allowed) == []
    assert len(layer_violations(refused)) == len(refused)


def test_the_cycle_check_finds_a_three_module_cycle_and_ignores_deferred_edges():
    edges = [fake("a", "b"), fake("b", "c"), fake("c", "a"), fake("c", "d"), fake("d", "c", in_function=True)]
    assert cycles(edges) == [["a", "b", "c"]]


def test_the_deferred_check_wants_an_optional_dependency_named(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "def a():\n    from ks_runtime import x  # deferred: onnxruntime (the cpu extra)\n"
        "def b():\n    from ks_runtime import y  # deferred: it is faster\n"
        "def c():\n    # deferred: tensorrt\n    from ks_runtime import z\n    from ks_runtime import w\n"
        "def d():\n    from ks_runtime import v\n"
    )
    edges = [
        Import("m", f"ks_runtime.{n}", source, line, True, False)
        for n, line in zip("xyzwv", (2, 4, 7, 8, 10), strict=True)
    ]
    flagged = undeclared_deferred_imports(edges)
    assert [f.split(": ")[1].split()[2] for f in flagged] == ["ks_runtime.y", "ks_runtime.v"]
    assert not undeclared_deferred_imports([fake("x", "y")])  # module-level imports need no reason
