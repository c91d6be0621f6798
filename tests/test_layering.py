"""DESIGN.md's dependency direction: ks_runtime imports no torch and none of our other packages."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "ks_train", "ks_export")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_imports_no_torch_and_no_training_code():
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & set(FORBIDDEN))
        for path in (ROOT / "ks_runtime").rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"ks_runtime must stay torch-free: {offenders}"


def test_train_does_not_import_export():
    offenders = [str(p) for p in (ROOT / "ks_train").rglob("*.py") if "ks_export" in imported_modules(p)]
    assert not offenders, f"imports flow ks_export -> ks_train, never back: {offenders}"
