"""The generic layout: SynthAU writes it, and users put their own labelled video in it.

    <root>/frames/<subject>/<sequence>/<frame>.<png|jpg|jpeg|bmp>   frame = integer, zero padding optional
    <root>/labels/<subject>/<sequence>.csv    frame,AU01,AU02,...  values 0/1; 9, -1 or empty = unknown
    <root>/folds.json                         optional {"parts": [[subjects], [subjects], [subjects]]}

The AU set comes from the CSV headers, which must all name the same AUs (their order may differ: the first
file's order is used). Without folds.json the sorted subjects are cut into 3 contiguous parts.
"""

from __future__ import annotations

from pathlib import Path

from ks_runtime.core.au import au_set_from_numbers
from ks_runtime.core.errors import DataError
from ks_train.data.base import AUDataset, VideoSequence
from ks_train.data.folds import layout_parts
from ks_train.data.labelfile import LabelTable, read_label_csv
from ks_train.data.layout import attach_frames, check_missing_frames, natural_key

FRAMES_DIR = "frames"
LABELS_DIR = "labels"
LAYOUT = (
    "<root>/labels/<subject>/<sequence>.csv and frames <root>/frames/<subject>/<sequence>/<frame>.png "
    "(optional <root>/folds.json)"
)


def read_generic(root: Path | str, name: str = "generic", missing_frames: str = "error") -> AUDataset:
    """Open a dataset in the generic layout; `name` becomes the dataset's name."""
    root = Path(root)
    tables = read_layout_labels(root)
    au_numbers = tables[0].au_numbers
    try:
        au_set = au_set_from_numbers(au_numbers, name=name)
    except ValueError as exc:
        raise DataError(f"{tables[0].path}: line 1: {exc}") from None
    check_missing_frames(missing_frames)
    sequences = []
    for table in tables:
        subject, sequence = table.path.parent.name, table.path.stem
        frame_dir = root / FRAMES_DIR / subject / sequence
        keep, paths = attach_frames(
            table.path, table.lines, table.frame_numbers, frame_dir, missing_frames, default_ext=".png"
        )
        if keep.any():
            sequences.append(
                VideoSequence(
                    subject, sequence, table.select(au_set.numbers)[keep], table.frame_numbers[keep], frame_paths=paths
                )
            )
    if not sequences:
        raise DataError(f"{root}: no sequence has any frame image: expected the generic layout {LAYOUT}")
    parts = layout_parts(root, [s.subject for s in sequences])
    return AUDataset(name, au_set, sequences, parts)


def read_layout_labels(root: Path) -> list[LabelTable]:
    """Every label CSV of a generic root, sorted by subject then sequence, all naming the same AUs."""
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist")
    label_root = root / LABELS_DIR
    if not label_root.is_dir():
        raise DataError(f"no {LABELS_DIR} folder under {root}: expected the generic layout {LAYOUT}")
    if not (root / FRAMES_DIR).is_dir():
        raise DataError(f"no {FRAMES_DIR} folder under {root}: expected the generic layout {LAYOUT}")
    stray = sorted(label_root.glob("*.csv"))
    if stray:
        raise DataError(f"{stray[0]}: label file outside a subject folder: expected the generic layout {LAYOUT}")
    paths = sorted(label_root.glob("*/*.csv"), key=lambda p: (natural_key(p.parent.name), natural_key(p.stem)))
    if not paths:
        raise DataError(f"{label_root}: no <subject>/<sequence>.csv label files: expected the generic layout {LAYOUT}")
    tables = [read_label_csv(paths[0])]
    reference = set(tables[0].au_numbers)
    for path in paths[1:]:
        table = read_label_csv(path)
        if set(table.au_numbers) != reference:
            raise DataError(
                f"{path}: line 1: AU columns {_columns(table)} differ from {tables[0].path}'s "
                f"{_columns(tables[0])} (all label files of a dataset must label the same AUs)"
            )
        tables.append(table)
    return tables


def _columns(table: LabelTable) -> str:
    return ",".join(f"AU{n:02d}" for n in table.au_numbers)
