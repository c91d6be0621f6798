"""The 3 subject-exclusive parts of every dataset: standard BP4D/DISFA lists, contiguous splits, folds.json.

Fold f tests on part f and trains on the others (AUDataset.split). The standard lists are the JAA-Net /
ME-GraphAU ones (docs/training.md, Datasets) and are defined here only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from ks_runtime.core.errors import DataError
from ks_train.data.base import N_FOLDS

log = logging.getLogger(__name__)

BP4D_PARTS: tuple[tuple[str, ...], ...] = (
    ("F001", "F002", "F008", "F009", "F010", "F016", "F018", "F023", "M001", "M004", "M007", "M008", "M012", "M014"),
    ("F003", "F005", "F011", "F013", "F020", "F022", "M002", "M005", "M010", "M011", "M013", "M016", "M017", "M018"),
    ("F004", "F006", "F007", "F012", "F014", "F015", "F017", "F019", "F021", "M003", "M006", "M009", "M015"),
)
DISFA_PARTS: tuple[tuple[str, ...], ...] = (
    ("SN001", "SN002", "SN009", "SN010", "SN016", "SN026", "SN027", "SN030", "SN032"),
    ("SN006", "SN011", "SN012", "SN013", "SN018", "SN021", "SN024", "SN028", "SN031"),
    ("SN003", "SN004", "SN005", "SN007", "SN008", "SN017", "SN023", "SN025", "SN029"),
)
STANDARD_PARTS: dict[str, tuple[tuple[str, ...], ...]] = {"bp4d": BP4D_PARTS, "disfa": DISFA_PARTS}
FOLDS_FILE = "folds.json"


def restrict_parts(parts: Sequence[Sequence[str]], present: Iterable[str], source: str) -> list[list[str]]:
    """The parts cut down to the subjects present; every present subject must be in exactly one part and
    no part may end empty. `source` names the fold list in errors (e.g. "the standard BP4D folds")."""
    present = set(present)
    owner: dict[str, int] = {}
    for p, part in enumerate(parts):
        for subject in part:
            if subject in owner:
                raise DataError(
                    f"{source}: subject {subject} is listed in part {owner[subject] + 1} and again in part {p + 1}"
                )
            owner[subject] = p
    orphans = sorted(present - set(owner))
    if orphans:
        raise DataError(f"{source}: subject(s) {', '.join(orphans)} present in the data but in no part")
    restricted = [[s for s in part if s in present] for part in parts]
    for p, part in enumerate(restricted):
        if not part:
            raise DataError(f"{source}: part {p + 1} has none of its subjects present (it lists {', '.join(parts[p])})")
    return restricted


def standard_parts(dataset: str, present: Iterable[str]) -> list[list[str]]:
    """The standard parts of `dataset` ("bp4d" or "disfa") restricted to the subjects present."""
    return restrict_parts(STANDARD_PARTS[dataset], present, f"the standard {dataset.upper()} folds")


def contiguous_parts(subjects: Iterable[str], n_parts: int = N_FOLDS) -> list[list[str]]:
    """Sorted subjects cut into n contiguous parts, the first ones one longer when it does not divide
    (41 -> 14/14/13, as SynthAU's synth_parts)."""
    ordered = sorted(set(subjects))
    if len(ordered) < n_parts:
        raise DataError(f"{len(ordered)} subject(s) cannot make {n_parts} subject-exclusive parts")
    size, extra = divmod(len(ordered), n_parts)
    parts, start = [], 0
    for p in range(n_parts):
        stop = start + size + (1 if p < extra else 0)
        parts.append(ordered[start:stop])
        start = stop
    return parts


def read_folds_json(path: Path) -> list[list[str]]:
    """The parts listed in a folds.json: {"parts": [[subjects], [subjects], [subjects]]}."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    parts = data.get("parts") if isinstance(data, dict) else None
    if not isinstance(parts, list) or len(parts) != N_FOLDS:
        raise DataError(f'{path}: expected {{"parts": [[subjects], [subjects], [subjects]]}} with {N_FOLDS} lists')
    for p, part in enumerate(parts):
        if not isinstance(part, list) or not all(isinstance(s, str) for s in part):
            raise DataError(f"{path}: parts[{p}] must be a list of subject names (strings)")
    return parts


def default_parts(subjects: Iterable[str], source: str) -> list[list[str]]:
    """Contiguous parts for a dataset without standard folds; with fewer subjects than folds there is no
    cross-validation, so no parts (a warning), and the set can still be opened, e.g. to evaluate on it."""
    subjects = sorted(set(subjects))
    if len(subjects) < N_FOLDS:
        log.warning(
            "%s: only %d subject(s), so no %d-fold split (each fold needs its own test subject)",
            source,
            len(subjects),
            N_FOLDS,
        )
        return []
    return contiguous_parts(subjects)


def layout_parts(root: Path, subjects: Iterable[str]) -> list[list[str]]:
    """Parts of a generic-layout root: its folds.json restricted to the subjects present, else contiguous."""
    path = Path(root) / FOLDS_FILE
    if path.is_file():
        return restrict_parts(read_folds_json(path), subjects, str(path))
    return default_parts(subjects, str(root))
