"""The AU sets: which Action Units a dataset labels, in which order. Defined once, used everywhere."""

from __future__ import annotations

from dataclasses import dataclass

# FACS names of every AU either set uses.
AU_NAMES: dict[int, str] = {
    1: "inner brow raiser",
    2: "outer brow raiser",
    4: "brow lowerer",
    6: "cheek raiser",
    7: "lid tightener",
    9: "nose wrinkler",
    10: "upper lip raiser",
    12: "lip corner puller",
    14: "dimpler",
    15: "lip corner depressor",
    17: "chin raiser",
    23: "lip tightener",
    24: "lip pressor",
    25: "lips part",
    26: "jaw drop",
}


@dataclass(frozen=True)
class AUSet:
    """An ordered list of AU numbers; the order is the column order of every label and output."""

    name: str
    numbers: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def columns(self) -> list[str]:
        """Column names as OpenFace writes them: AU01, AU02, ..."""
        return [au_column(n) for n in self.numbers]

    @property
    def names(self) -> list[str]:
        return [AU_NAMES[n] for n in self.numbers]

    def index(self, au_number: int) -> int:
        return self.numbers.index(au_number)


BP4D = AUSet("bp4d", (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24))
DISFA = AUSet("disfa", (1, 2, 4, 6, 9, 12, 25, 26))
AU_SETS: dict[str, AUSet] = {s.name: s for s in (BP4D, DISFA)}

# BP4D+ labels the same 12 AUs as BP4D in this project.
AU_SETS["bp4dplus"] = AUSet("bp4dplus", BP4D.numbers)


def au_column(au_number: int) -> str:
    return f"AU{au_number:02d}"


def parse_au_column(column: str) -> int:
    """'AU01', 'au1', '1' -> 1. Raises ValueError on anything else."""
    text = column.strip().upper()
    if text.startswith("AU"):
        text = text[2:]
    if not text.isdigit():
        raise ValueError(f"not an AU column: {column!r}")
    return int(text)


def get_au_set(name: str) -> AUSet:
    try:
        return AU_SETS[name]
    except KeyError:
        raise ValueError(f"unknown AU set {name!r}; known: {sorted(AU_SETS)}") from None


def au_set_from_numbers(numbers: tuple[int, ...] | list[int], name: str = "custom") -> AUSet:
    """The named set with exactly these numbers if there is one, else a custom set."""
    numbers = tuple(int(n) for n in numbers)
    for known in AU_SETS.values():
        if known.numbers == numbers:
            return known
    unknown = [n for n in numbers if n not in AU_NAMES]
    if unknown:
        raise ValueError(f"unknown AU numbers {unknown}")
    return AUSet(name, numbers)
