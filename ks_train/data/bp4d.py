"""BP4D and BP4D+ (one layout): frame folders per subject and task, one AU occurrence CSV per sequence.

    <root>/<subject>/<task>/<frame>.jpg             e.g. F001/T1/2440.jpg (zero padding optional; .jpg/.png)
    <root>/AUCoding/AU_OCC/<subject>_<task>.csv     frame column, then every coded AU ("1", "AU01", ...)

The label rows define the frames; 9 (unknown) is read as -1 and masked, never dropped. The 12 AUs of
ks_runtime.core.au.BP4D are selected in order. BP4D uses the standard folds; BP4D+ has none, so its sorted
subjects are cut into 3 contiguous parts.
"""

from __future__ import annotations

from pathlib import Path

from ks_runtime.core.au import AU_SETS, BP4D, AUSet
from ks_runtime.core.errors import DataError
from ks_train.data.base import AUDataset, VideoSequence
from ks_train.data.folds import default_parts, standard_parts
from ks_train.data.labelfile import read_label_csv
from ks_train.data.layout import attach_frames, check_missing_frames, natural_key

LABEL_DIR = Path("AUCoding") / "AU_OCC"
LAYOUT = "<root>/AUCoding/AU_OCC/<subject>_<task>.csv and frames <root>/<subject>/<task>/<frame>.jpg"


def read_bp4d(root: Path | str, missing_frames: str = "error") -> AUDataset:
    """Open BP4D at `root` (12 AUs, standard 3 folds)."""
    return _read(Path(root), "bp4d", BP4D, missing_frames)


def read_bp4dplus(root: Path | str, missing_frames: str = "error") -> AUDataset:
    """Open BP4D+ at `root` (the same 12 AUs and layout as BP4D; 3 contiguous subject parts)."""
    return _read(Path(root), "bp4dplus", AU_SETS["bp4dplus"], missing_frames)


def _read(root: Path, name: str, au_set: AUSet, missing_frames: str) -> AUDataset:
    check_missing_frames(missing_frames)
    label_dir = root / LABEL_DIR
    title = "BP4D+" if name == "bp4dplus" else "BP4D"
    if not root.is_dir():
        raise DataError(f"{title} root {root} does not exist")
    if not label_dir.is_dir():
        raise DataError(f"no {LABEL_DIR.as_posix()} folder under {root}: expected {title} layout {LAYOUT}")
    label_files = sorted(label_dir.glob("*.csv"))
    if not label_files:
        raise DataError(f"{label_dir}: no <subject>_<task>.csv label files: expected {title} layout {LAYOUT}")
    keyed = []
    for path in label_files:
        subject, sep, task = path.stem.partition("_")
        if not sep or not subject or not task:
            raise DataError(f"{path}: label file name is not <subject>_<task>.csv")
        keyed.append(((natural_key(subject), natural_key(task)), subject, task, path))
    sequences = []
    for _, subject, task, path in sorted(keyed):
        table = read_label_csv(path, required=au_set.numbers)
        keep, frame_paths = attach_frames(
            path, table.lines, table.frame_numbers, root / subject / task, missing_frames, default_ext=".jpg"
        )
        if not keep.any():
            continue  # skip mode and not one image: attach_frames has logged it
        sequences.append(
            VideoSequence(
                subject, task, table.select(au_set.numbers)[keep], table.frame_numbers[keep], frame_paths=frame_paths
            )
        )
    if not sequences:
        raise DataError(f"{root}: no {title} sequence has any frame image: expected {LAYOUT}")
    subjects = sorted({s.subject for s in sequences})
    parts = standard_parts("bp4d", subjects) if name == "bp4d" else default_parts(subjects, f"{title} {root}")
    return AUDataset(name, au_set, sequences, parts)
