"""ks_train/data/labelfile.py: the label CSV shared by BP4D and the generic layout, and its errors."""

import numpy as np
import pytest

from ks_runtime.core.errors import DataError
from ks_train.data.labelfile import read_label_csv


def write(tmp_path, text, name="F001_T1.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("frame_header", ["frame", "Frame", "", "0"])
@pytest.mark.parametrize("au_headers", [("1", "2", "4"), ("AU01", "AU02", "AU04"), ("au1", "AU2", "4")])
def test_header_forms(tmp_path, frame_header, au_headers):
    path = write(tmp_path, f"{frame_header},{','.join(au_headers)}\n3,1,0,1\n4,0,1,0\n")
    table = read_label_csv(path)
    assert table.au_numbers == (1, 2, 4)
    assert table.frame_numbers.tolist() == [3, 4]
    assert table.values.tolist() == [[1, 0, 1], [0, 1, 0]]
    assert table.lines.tolist() == [2, 3]


def test_unknown_values_are_masked_not_dropped(tmp_path):
    path = write(tmp_path, "frame,AU01,AU02,AU04\n0,9,1,0\n1,-1,,1\n2,1.0,0, 9 \n")
    table = read_label_csv(path)
    assert table.values.dtype == np.int8
    assert table.values.tolist() == [[-1, 1, 0], [-1, -1, 1], [1, 0, -1]]


def test_select_reorders_and_names_missing_columns(tmp_path):
    path = write(tmp_path, "frame,AU04,AU01,AU02\n0,1,0,9\n")
    table = read_label_csv(path)
    assert table.select([1, 2, 4]).tolist() == [[0, -1, 1]]
    with pytest.raises(DataError, match=r"F001_T1.csv: line 1: no column for AU12, AU24"):
        table.select([1, 12, 24])
    with pytest.raises(DataError, match=r"F001_T1.csv: line 1: no column for AU06"):
        read_label_csv(path, required=[1, 6])


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(tmp_path):
    path = write(tmp_path, "frame,1\n\n5,1\n\n6,x\n")
    with pytest.raises(DataError, match=r"F001_T1.csv: line 5: column '1': 'x' is not a number"):
        read_label_csv(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"line 1: empty file"),
        ("AU01,AU02\n0,1\n", r"line 1: the first column must be the frame number"),
        ("frame,AU01,time\n0,1,0\n", r"line 1: column 3 'time' is not an AU column"),
        ("frame,AU01,1\n0,1,0\n", r"line 1: AU 1 has two columns"),
        ("frame\n0\n", r"line 1: no AU columns"),
        ("frame,AU01,AU02\n0,1,0\n1,x,0\n", r"line 3: column 'AU01': 'x' is not a number"),
        ("frame,AU01,AU02\n0,1,0\n1,0,2\n", r"line 3: column 'AU02': value '2' is not 0, 1 or unknown"),
        ("frame,AU01,AU02\n0,1,0\n1,0,0.5\n", r"line 3: column 'AU02': value '0.5'"),
        ("frame,AU01,AU02\n0,1,0\n1,0,0\n0,1,1\n", r"line 4: frame 0 listed twice \(first on line 2\)"),
        ("frame,AU01,AU02\n0,1,0\n1,0\n", r"line 3: 2 values, but the header has 3 columns"),
        ("frame,AU01,AU02\n0,1,0\n1,0,1,1\n", r"line 3: 4 values"),
        ("frame,AU01\nten,1\n", r"line 2: frame number 'ten' is not a number"),
        ("frame,AU01\n1.5,1\n", r"line 2: frame number '1.5' is not a non-negative integer"),
        ("frame,AU01\n", r"no label rows"),
    ],
)
def test_errors_name_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=r"F001_T1.csv: " + message):
        read_label_csv(path)
