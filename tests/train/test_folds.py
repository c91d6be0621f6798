"""ks_train/data/folds.py: the standard parts, their restriction to present subjects, contiguous parts, folds.json."""

import json

import pytest

from ks_runtime.core.errors import DataError
from ks_train.data.folds import (
    BP4D_PARTS,
    DISFA_PARTS,
    contiguous_parts,
    default_parts,
    layout_parts,
    read_folds_json,
    restrict_parts,
    standard_parts,
)


@pytest.mark.parametrize(
    "parts, sizes, prefix", [(BP4D_PARTS, [14, 14, 13], ("F", "M")), (DISFA_PARTS, [9, 9, 9], ("SN",))]
)
def test_standard_parts_are_disjoint_and_complete(parts, sizes, prefix):
    assert [len(p) for p in parts] == sizes
    everyone = [s for p in parts for s in p]
    assert len(set(everyone)) == sum(sizes)
    assert all(s.startswith(prefix) for s in everyone)


def test_bp4d_parts_hold_the_published_subjects():
    assert BP4D_PARTS[0][:3] == ("F001", "F002", "F008") and "M014" in BP4D_PARTS[0]
    assert "F003" in BP4D_PARTS[1] and "M018" in BP4D_PARTS[1]
    assert set(BP4D_PARTS[2]) == {
        "F004",
        "F006",
        "F007",
        "F012",
        "F014",
        "F015",
        "F017",
        "F019",
        "F021",
        "M003",
        "M006",
        "M009",
        "M015",
    }
    assert {
        f"SN{i:03d}"
        for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 18, 21, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32)
    } == {s for p in DISFA_PARTS for s in p}


def test_standard_parts_restricted_to_present_subjects_keep_list_order():
    parts = standard_parts("bp4d", ["M014", "F001", "F003", "F004", "M003"])
    assert parts == [["F001", "M014"], ["F003"], ["F004", "M003"]]


def test_present_subject_in_no_part_is_named():
    with pytest.raises(DataError, match=r"standard DISFA folds.*SN099.*in no part"):
        standard_parts("disfa", ["SN001", "SN006", "SN003", "SN099"])


def test_part_left_empty_is_an_error():
    with pytest.raises(DataError, match=r"part 3 has none of its subjects"):
        standard_parts("bp4d", ["F001", "F003"])


def test_subject_listed_twice_is_an_error():
    with pytest.raises(DataError, match=r"subject b is listed in part 1 and again in part 2"):
        restrict_parts([["a", "b"], ["b"], ["c"]], ["a", "b", "c"], "mine")


@pytest.mark.parametrize("n, sizes", [(41, [14, 14, 13]), (4, [2, 1, 1]), (3, [1, 1, 1]), (9, [3, 3, 3])])
def test_contiguous_parts_cover_sorted_subjects(n, sizes):
    subjects = [f"S{i:02d}" for i in range(n)][::-1]
    parts = contiguous_parts(subjects)
    assert [len(p) for p in parts] == sizes
    assert [s for p in parts for s in p] == sorted(subjects)


def test_contiguous_parts_need_three_subjects_and_default_parts_warns(caplog):
    with pytest.raises(DataError, match="2 subject"):
        contiguous_parts(["a", "b"])
    assert default_parts(["a", "b"], "tiny set") == []
    assert "tiny set: only 2 subject" in caplog.text


def test_folds_json_is_read_and_restricted(tmp_path):
    (tmp_path / "folds.json").write_text(json.dumps({"parts": [["a", "x"], ["b"], ["c", "d"]]}))
    assert layout_parts(tmp_path, ["d", "c", "b", "a"]) == [["a"], ["b"], ["c", "d"]]
    with pytest.raises(DataError, match=r"folds.json: subject\(s\) e present in the data but in no part"):
        layout_parts(tmp_path, ["a", "b", "c", "e"])


def test_without_folds_json_parts_are_contiguous(tmp_path):
    assert layout_parts(tmp_path, ["c", "a", "b", "d"]) == [["a", "b"], ["c"], ["d"]]


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"parts": [["a"], ["b"]', r"folds.json: line 1: not valid JSON"),
        ('{"parts": [["a"], ["b"]]}', r"folds.json: expected .* with 3 lists"),
        ('[["a"], ["b"], ["c"]]', r"folds.json: expected"),
        ('{"parts": [["a"], ["b"], [3]]}', r"folds.json: parts\[2\] must be a list of subject names"),
    ],
)
def test_malformed_folds_json_names_the_file(tmp_path, text, message):
    path = tmp_path / "folds.json"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_folds_json(path)
