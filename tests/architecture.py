"""The repository's own modules and their imports, read with `ast` (nothing is imported): what the architecture
tests check the layering, the cycles, the deferred imports and the function sizes on."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ks_runtime", "ks_train", "ks_export", "cpp_ext", "benchmarks")
PRODUCT = ("ks_runtime", "ks_train", "ks_export", "cpp_ext")


@dataclass(frozen=True)
class Import:
    """One import of one of our modules: who imports what, where, and whether it runs at import time."""

    importer: str
    target: str
    path: Path
    line: int
    in_function: bool
    type_checking: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_files(packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    return {module_name(p): p for package in packages for p in sorted((ROOT / package).rglob("*.py"))}


def _resolve(node: ast.ImportFrom | ast.Import, importer: str, is_package: bool, known: set[str]) -> list[str]:
    """The modules of ours an import statement loads: `from a.b import c` loads a.b.c when that is a module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] in PACKAGES]
    base = node.module or ""
    if node.level:  # relative: from the importer's package
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] not in PACKAGES:
        return []
    if base == importer:  # a package importing its own submodules (compiled ones included)
        return [f"{base}.{alias.name}" for alias in node.names]
    submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
    return submodules if len(submodules) == len(node.names) else [base, *submodules]


def _walk(
    node: ast.AST, in_function: bool = False, type_checking: bool = False
) -> Iterator[tuple[ast.AST, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        yield child, in_function, type_checking
        nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        guarded = type_checking or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
        yield from _walk(child, nested, guarded)


def imports(packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    files = module_files(packages)
    known = set(module_files())
    found = []
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, in_function, type_checking in _walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _resolve(node, name, path.name == "__init__.py", known):
                    found.append(Import(name, target, path, node.lineno, in_function, type_checking))
    return found


def cycles(edges: list[Import]) -> list[list[str]]:
    """The import cycles (strongly connected components of two or more modules, or a module importing itself)
    among imports that run when a module is imported."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if not (edge.in_function or edge.type_checking):
            graph.setdefault(edge.importer, set()).add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def function_lengths(packages: tuple[str, ...] = PRODUCT) -> Iterator[tuple[str, int]]:
    """(`path:line name`, lines from the first decorator or `def` to the last line) of every function."""
    for path in module_files(packages).values():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", node.end_lineno - first + 1


# Inside ks_runtime: which sub-packages each layer may import (besides itself). Modules at the package top
# (stream, detector, inputs, cli, ...) and tools/ sit above every layer and may import any.
RUNTIME_LAYERS = {
    "core": set(),
    "engine": {"core"},
    "faces": {"core"},
    "io": {"core"},
    "synth": {"core"},
}


# cpp_ext's kernels sit below ks_runtime: core/kernels.py wraps the CPU ones, engine/ the CUDA ones.
CPP_EXT_USERS = ("ks_runtime.core.kernels", "ks_runtime.engine")


def runtime_layer(module: str) -> str | None:
    """The layer a ks_runtime module belongs to (the layer's own package included), None above the layers."""
    parts = module.split(".")
    return parts[1] if parts[0] == "ks_runtime" and len(parts) > 1 and parts[1] in RUNTIME_LAYERS else None


def layer_violations(edges: list[Import]) -> list[str]:
    """Each import from a runtime layer into a module of ours its layer may not see: another layer it does not
    sit on, the modules above the layers, any other package of ours, or cpp_ext outside its two users."""
    bad = []
    for edge in edges:
        layer = runtime_layer(edge.importer)
        if layer is None:
            continue
        if edge.target.split(".")[0] == "cpp_ext":
            allowed = edge.importer.startswith(CPP_EXT_USERS)
        elif edge.target.startswith("ks_runtime"):
            allowed = runtime_layer(edge.target) in {layer, *RUNTIME_LAYERS[layer]}
        else:
            allowed = False
        if not allowed:
            bad.append(f"{edge.path.relative_to(ROOT)}:{edge.line}: {layer}/ imports {edge.target}")
    return bad


# What a `deferred:` comment may name: the optional dependencies (extras and compiled parts) that a function-level
# import keeps from being loaded before it is needed.
OPTIONAL_DEPENDENCIES = (
    "onnxruntime",
    "tensorrt",
    "cuda",
    "cpp_ext",
    "torch",
    "onnx",
    "onnxslim",
    "tritonclient",
    "dlib",
    "openvino",
    "protobuf",
)


def undeclared_deferred_imports(edges: list[Import]) -> list[str]:
    """Function-level imports of our modules without a `deferred:` comment (on the line, or above the group of
    imports it heads) naming the optional dependency they defer."""
    bad = []
    for edge in edges:
        if not edge.in_function:
            continue
        lines = edge.path.read_text().splitlines()
        first = edge.line - 1
        while first > 0 and lines[first - 1].lstrip().startswith(("from ", "import ")):
            first -= 1  # a group of imports under one comment
        context = " ".join(lines[max(first - 1, 0) : edge.line])
        reason = context.partition("deferred:")[2]
        if not any(dependency in reason for dependency in OPTIONAL_DEPENDENCIES):
            where = f"{edge.path.relative_to(ROOT) if edge.path.is_relative_to(ROOT) else edge.path}:{edge.line}"
            bad.append(f"{where}: {edge.importer} imports {edge.target} in a function")
    return bad
