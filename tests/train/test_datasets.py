"""The dataset adapters (BP4D, BP4D+, DISFA, generic, SynthAU, open_dataset) on tiny trees in each exact layout."""

import json
import logging

import cv2
import numpy as np
import pytest

from ks_runtime.core.au import BP4D, DISFA
from ks_runtime.core.errors import ConfigError, DataError
from ks_train.data.bp4d import read_bp4d, read_bp4dplus
from ks_train.data.disfa import read_disfa
from ks_train.data.generic import read_generic
from ks_train.data.registry import KINDS, open_dataset

# BP4D's AU_OCC files code more AUs than the 12 used; these extra ones must be skipped.
BP4D_FILE_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 23, 24, 25)


def write_image(path, frame):
    """An 8x8 image whose RGB colour encodes its frame number: (200, 100, frame)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.empty((8, 8, 3), np.uint8)
    image[:] = (frame % 256, 100, 200)  # BGR on disk
    assert cv2.imwrite(str(path), image)


def frame_value(images):
    return images[:, 0, 0, 2].astype(int).tolist()


# ---------------------------------------------------------------------------------------------------- BP4D


def make_bp4d(root, sequences, frames=range(10, 15), naming="{:04d}.jpg", header="", rng=None):
    """sequences: (subject, task) pairs. Returns {(subject, task): the file's full label array [T, 17]}."""
    rng = rng or np.random.default_rng(0)
    labels = {}
    for subject, task in sequences:
        values = rng.choice([0, 1, 9], size=(len(frames), len(BP4D_FILE_AUS)), p=[0.5, 0.4, 0.1])
        path = root / "AUCoding" / "AU_OCC" / f"{subject}_{task}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [",".join([header, *map(str, BP4D_FILE_AUS)])]
        rows += [",".join(map(str, [f, *row])) for f, row in zip(frames, values, strict=True)]
        path.write_text("\n".join(rows) + "\n")
        for f in frames:
            write_image(root / subject / task / naming.format(f), f)
        labels[subject, task] = values
    return labels


def expected_bp4d_labels(values):
    columns = [BP4D_FILE_AUS.index(n) for n in BP4D.numbers]
    return np.where(values[:, columns] == 9, -1, values[:, columns])


BP4D_SEQUENCES = [("F004", "T2"), ("F001", "T1"), ("F003", "T1"), ("F001", "T2")]


def test_bp4d_reads_12_aus_in_order_masks_unknown_and_uses_standard_folds(tmp_path):
    written = make_bp4d(tmp_path, BP4D_SEQUENCES)
    data = read_bp4d(tmp_path)
    assert data.name == "bp4d" and data.au_set == BP4D
    assert [s.key for s in data.sequences] == ["F001/T1", "F001/T2", "F003/T1", "F004/T2"]
    assert data.parts == [["F001"], ["F003"], ["F004"]]
    for seq in data.sequences:
        expected = expected_bp4d_labels(written[seq.subject, seq.name])
        assert seq.labels.dtype == np.int8 and seq.labels.shape == (5, 12)
        np.testing.assert_array_equal(seq.labels, expected)
        assert seq.frame_numbers.tolist() == [10, 11, 12, 13, 14]
    assert (data.sequences[0].labels == -1).any(), "the fixture should contain unknown (9) values"
    images = data.sequences[2].load([0, 4])
    assert images.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(images[:, 0, 0], [[200, 100, 10], [200, 100, 14]], atol=3)  # JPEG, RGB order
    train, test = data.split(2)
    assert {s.subject for s in test} == {"F003"} and {s.subject for s in train} == {"F001", "F004"}


@pytest.mark.parametrize("naming", ["{}.jpg", "{:04d}.jpg", "{:02d}.png", "{:05d}.png"])
def test_bp4d_frame_names_with_and_without_padding(tmp_path, naming):
    make_bp4d(tmp_path, [("F001", "T1"), ("F003", "T1"), ("F004", "T1")], frames=range(8, 12), naming=naming)
    data = read_bp4d(tmp_path)
    seq = data.sequences[0]
    assert seq.frame_paths[0].name == naming.format(8)
    np.testing.assert_allclose(frame_value(seq.load(range(4))), [8, 9, 10, 11], atol=3)


@pytest.mark.parametrize("header", ["", "Frame", "frame"])
def test_bp4d_frame_header_variants(tmp_path, header):
    make_bp4d(tmp_path, [("F001", "T1"), ("F003", "T1"), ("F004", "T1")], header=header)
    assert len(read_bp4d(tmp_path).sequences) == 3


def test_bp4d_missing_image_names_label_file_line_and_expected_path(tmp_path):
    make_bp4d(tmp_path, [("F001", "T1"), ("F003", "T1"), ("F004", "T1")])
    (tmp_path / "F003" / "T1" / "0012.jpg").unlink()  # the third label row: line 4
    with pytest.raises(DataError, match=r"F003_T1.csv: line 4: frame 12 has no image \(expected .*F003/T1/0012.jpg"):
        read_bp4d(tmp_path)


def test_bp4d_missing_frames_skip_drops_rows_and_warns_with_count(tmp_path, caplog):
    written = make_bp4d(tmp_path, [("F001", "T1"), ("F003", "T1"), ("F004", "T1")])
    for f in (11, 13):
        (tmp_path / "F003" / "T1" / f"{f:04d}.jpg").unlink()
    with caplog.at_level(logging.WARNING):
        data = read_bp4d(tmp_path, missing_frames="skip")
    seq = data.sequences[1]
    assert seq.frame_numbers.tolist() == [10, 12, 14]
    np.testing.assert_array_equal(seq.labels, expected_bp4d_labels(written["F003", "T1"])[[0, 2, 4]])
    assert "F003_T1.csv: skipping 2 labelled frame(s)" in caplog.text
    with pytest.raises(ConfigError, match="missing_frames"):
        read_bp4d(tmp_path, missing_frames="ignore")


def test_bp4d_missing_au_column_names_the_file(tmp_path):
    make_bp4d(tmp_path, [("F001", "T1"), ("F003", "T1"), ("F004", "T1")])
    path = tmp_path / "AUCoding" / "AU_OCC" / "F003_T1.csv"
    lines = path.read_text().splitlines()
    drop = BP4D_FILE_AUS.index(24) + 1
    path.write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != drop) for line in lines))
    with pytest.raises(DataError, match=r"F003_T1.csv: line 1: no column for AU24"):
        read_bp4d(tmp_path)


def test_bp4d_label_value_error_names_file_and_line(tmp_path):
    make_bp4d(tmp_path, [("F001", "T1"), ("F003", "T1"), ("F004", "T1")])
    path = tmp_path / "AUCoding" / "AU_OCC" / "F001_T1.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",3"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"F001_T1.csv: line 4: column '25': value '3'"):
        read_bp4d(tmp_path)


def test_bp4d_root_without_layout_says_what_it_expected(tmp_path):
    (tmp_path / "F001" / "T1").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no AUCoding/AU_OCC folder under .*: expected BP4D layout"):
        read_bp4d(tmp_path)
    (tmp_path / "AUCoding" / "AU_OCC").mkdir(parents=True)
    with pytest.raises(DataError, match=r"AU_OCC: no <subject>_<task>.csv label files"):
        read_bp4d(tmp_path)


def test_bp4d_missing_frame_folder_and_unknown_subject(tmp_path):
    make_bp4d(tmp_path, [("F001", "T1"), ("F003", "T1"), ("F004", "T1")])
    (tmp_path / "AUCoding" / "AU_OCC" / "F001_T1.csv").rename(tmp_path / "AUCoding" / "AU_OCC" / "F001_T9.csv")
    with pytest.raises(DataError, match=r"F001_T9.csv: no frame folder .*F001/T9"):
        read_bp4d(tmp_path)
    make_bp4d(tmp_path, [("F001", "T9"), ("X999", "T1")])
    with pytest.raises(DataError, match=r"X999.*in no part"):
        read_bp4d(tmp_path)


def test_bp4d_two_images_for_one_frame_is_an_error(tmp_path):
    make_bp4d(tmp_path, [("F001", "T1"), ("F003", "T1"), ("F004", "T1")])
    write_image(tmp_path / "F004" / "T1" / "10.jpg", 10)
    with pytest.raises(DataError, match=r"F004/T1: frame 10 has two images, 0010.jpg and 10.jpg"):
        read_bp4d(tmp_path)


def test_bp4dplus_contiguous_parts_and_natural_task_order(tmp_path):
    make_bp4d(
        tmp_path, [("M001", "T1"), ("F002", "T10"), ("F002", "T2"), ("F001", "T1"), ("M002", "T1")], frames=range(3)
    )
    data = read_bp4dplus(tmp_path)
    assert data.name == "bp4dplus" and data.au_set.numbers == BP4D.numbers
    assert [s.key for s in data.sequences] == ["F001/T1", "F002/T2", "F002/T10", "M001/T1", "M002/T1"]
    assert data.parts == [["F001", "F002"], ["M001"], ["M002"]]


# ---------------------------------------------------------------------------------------------------- DISFA


def make_disfa(root, subjects, n_frames=6, first_frame=1, naming="{}.jpg", frames_dir="Images", seed=0):
    """Returns {subject: intensities [T, 8]} written to ActionUnit_Labels, and 0-based frame images."""
    rng = np.random.default_rng(seed)
    written = {}
    for subject in subjects:
        intensity = rng.integers(0, 6, size=(n_frames, len(DISFA.numbers)))
        intensity[:2, 0] = [1, 2]  # the threshold: 1 is absent, 2 present
        folder = root / "ActionUnit_Labels" / subject
        folder.mkdir(parents=True, exist_ok=True)
        for k, au in enumerate(DISFA.numbers):
            lines = [f"{first_frame + t},{intensity[t, k]}" for t in range(n_frames)]
            (folder / f"{subject}_au{au}.txt").write_text("\n".join(lines) + "\n")
        for t in range(n_frames):
            write_image(root / frames_dir / subject / naming.format(t), t)
        written[subject] = intensity
    return written


DISFA_SUBJECTS = ["SN003", "SN001", "SN006"]


def test_disfa_reads_occurrence_at_intensity_two_with_standard_folds(tmp_path):
    written = make_disfa(tmp_path, DISFA_SUBJECTS)
    data = read_disfa(tmp_path)
    assert data.name == "disfa" and data.au_set == DISFA
    assert [s.key for s in data.sequences] == ["SN001/video", "SN003/video", "SN006/video"]
    assert data.parts == [["SN001"], ["SN006"], ["SN003"]]
    for seq in data.sequences:
        np.testing.assert_array_equal(seq.labels, (written[seq.subject] >= 2).astype(np.int8))
        assert seq.labels[:2, 0].tolist() == [0, 1]
        assert seq.frame_numbers.tolist() == list(range(6))
    np.testing.assert_allclose(frame_value(data.sequences[1].load([0, 5])), [0, 5], atol=3)


@pytest.mark.parametrize("naming, first_frame", [("{}.jpg", 0), ("{:04d}.png", 1), ("{:03d}.jpg", 1)])
def test_disfa_padding_and_label_numbering_from_zero_or_one(tmp_path, naming, first_frame):
    make_disfa(tmp_path, DISFA_SUBJECTS, naming=naming, first_frame=first_frame, frames_dir="frames")
    data = read_disfa(tmp_path, frames_dir="frames")
    np.testing.assert_allclose(frame_value(data.sequences[0].load(range(6))), range(6), atol=3)


def test_disfa_missing_au_file_reads_as_zeros_with_a_warning(tmp_path, caplog):
    written = make_disfa(tmp_path, DISFA_SUBJECTS)
    (tmp_path / "ActionUnit_Labels" / "SN006" / "SN006_au9.txt").unlink()
    with caplog.at_level(logging.WARNING):
        data = read_disfa(tmp_path)
    seq = data.sequences[2]
    k = DISFA.index(9)
    assert (seq.labels[:, k] == 0).all()
    assert (written["SN006"][:, k] >= 2).any(), "the fixture should have had positives there"
    others = [i for i in range(len(DISFA)) if i != k]
    np.testing.assert_array_equal(seq.labels[:, others], (written["SN006"][:, others] >= 2))
    assert "SN006_au9.txt: missing" in caplog.text


@pytest.mark.parametrize(
    "lines, message",
    [
        (["1,0", "2,0", "2,1"], r"line 3: frame 2 listed twice"),
        (["1,0", "3,0", "2,1"], r"line 2: frame 3 skips the frames before it"),
        (["5,0", "6,0", "4,1"], r"line 3: frame 4 out of order"),
        (["1,0", "2,7"], r"line 2: intensity 7 outside 0..5"),
        (["1,0", "2;1"], r"line 2: expected 'frame,intensity'"),
        (["1,0", "2,a"], r"line 2: expected two integers"),
    ],
)
def test_disfa_label_errors_name_file_and_line(tmp_path, lines, message):
    make_disfa(tmp_path, DISFA_SUBJECTS)
    (tmp_path / "ActionUnit_Labels" / "SN001" / "SN001_au4.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"SN001_au4.txt: " + message):
        read_disfa(tmp_path)


def test_disfa_au_files_of_different_length_and_missing_image(tmp_path):
    make_disfa(tmp_path, DISFA_SUBJECTS)
    (tmp_path / "Images" / "SN003" / "4.jpg").unlink()
    with pytest.raises(DataError, match=r"SN003_au1.txt: line 5: frame 4 has no image \(expected .*SN003/4.jpg"):
        read_disfa(tmp_path)
    (tmp_path / "ActionUnit_Labels" / "SN001" / "SN001_au12.txt").write_text("1,0\n2,0\n")
    with pytest.raises(DataError, match=r"SN001_au12.txt: 2 frames, but SN001_au1.txt has 6"):
        read_disfa(tmp_path)


def test_disfa_root_without_layout_says_what_it_expected(tmp_path):
    with pytest.raises(DataError, match=r"no ActionUnit_Labels folder under .*: expected DISFA layout"):
        read_disfa(tmp_path)
    (tmp_path / "ActionUnit_Labels" / "SN001").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no Images folder under .*extract their frames"):
        read_disfa(tmp_path)


# -------------------------------------------------------------------------------------------------- generic


def make_generic(root, layout, header="frame,AU01,AU02,AU04", frames=range(3), naming="{:05d}.png", seed=0):
    """layout: {subject: [sequence, ...]}. Values include 9, -1 and empty (unknown). Returns the labels."""
    rng = np.random.default_rng(seed)
    written = {}
    n_aus = len(header.split(",")) - 1
    for subject, sequences in layout.items():
        for name in sequences:
            values = rng.choice(["0", "1", "9", "-1", ""], size=(len(frames), n_aus))
            path = root / "labels" / subject / f"{name}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = [header] + [",".join([str(f), *row]) for f, row in zip(frames, values, strict=True)]
            path.write_text("\n".join(rows) + "\n")
            for f in frames:
                write_image(root / "frames" / subject / name / naming.format(f), f)
            written[subject, name] = np.vectorize(lambda v: {"0": 0, "1": 1}.get(v, -1))(values)
    return written


GENERIC = {"b": ["s1"], "a": ["s2", "s1"], "c": ["x"], "d": ["x"]}


def test_generic_reads_any_au_set_and_masks_unknown_values(tmp_path):
    written = make_generic(tmp_path, GENERIC, header="frame,AU01,au2,26", frames=range(5, 9))
    data = read_generic(tmp_path, name="mine")
    assert data.au_set.numbers == (1, 2, 26) and data.name == "mine"
    assert [s.key for s in data.sequences] == ["a/s1", "a/s2", "b/s1", "c/x", "d/x"]
    assert data.parts == [["a", "b"], ["c"], ["d"]]
    for seq in data.sequences:
        np.testing.assert_array_equal(seq.labels, written[seq.subject, seq.name])
        assert len(seq) == 4  # unknown rows are kept
    assert any((s.labels == -1).any() for s in data.sequences)
    assert frame_value(data.sequences[0].load(range(4))) == [5, 6, 7, 8]  # PNG is exact


def test_a_frame_of_another_size_names_the_sequence_frame_file_and_both_sizes(tmp_path):
    make_generic(tmp_path, GENERIC, frames=range(4))
    assert cv2.imwrite(str(tmp_path / "frames" / "a" / "s2" / "00002.png"), np.zeros((6, 10, 3), np.uint8))
    seq = read_generic(tmp_path).sequences[1]
    assert seq.key == "a/s2" and seq.load([0, 1, 3]).shape == (3, 8, 8, 3)
    expected = r"sequence a/s2: frame 2 \(.*00002.png\) is 10x6 pixels, but its first frame \(.*00000.png\) is 8x8"
    with pytest.raises(DataError, match=expected):
        seq.load([1, 2, 3])
    with pytest.raises(DataError, match=expected):
        seq.load([2])  # at its first use, not only where frames are stacked


def test_generic_bp4d_header_gives_the_bp4d_set_and_folds_json_is_used(tmp_path):
    make_generic(tmp_path, GENERIC, header="frame," + ",".join(BP4D.columns), naming="{}.jpg")
    (tmp_path / "folds.json").write_text(json.dumps({"parts": [["d"], ["c", "a"], ["b", "zz"]]}))
    data = read_generic(tmp_path)
    assert data.au_set == BP4D
    assert data.parts == [["d"], ["c", "a"], ["b"]]
    (tmp_path / "folds.json").write_text(json.dumps({"parts": [["d"], ["c"], ["b"]]}))
    with pytest.raises(DataError, match=r"folds.json: subject\(s\) a present in the data but in no part"):
        read_generic(tmp_path)


def test_generic_label_files_must_agree_on_the_au_set(tmp_path):
    make_generic(tmp_path, GENERIC)
    make_generic(tmp_path, {"c": ["x"]}, header="frame,AU02,AU01,AU04")  # same set, other order: fine
    data = read_generic(tmp_path)
    assert data.au_set.numbers == (1, 2, 4)
    make_generic(tmp_path, {"c": ["x"]}, header="frame,AU01,AU02,AU06")
    with pytest.raises(DataError, match=r"c/x.csv: line 1: AU columns AU01,AU02,AU06 differ from .*a/s1.csv"):
        read_generic(tmp_path)


def test_generic_reordered_columns_are_reordered_to_the_first_file(tmp_path):
    make_generic(tmp_path, GENERIC)
    (tmp_path / "labels" / "d" / "x.csv").write_text("frame,AU04,AU01,AU02\n0,1,0,0\n1,0,1,0\n2,0,0,1\n")
    seq = read_generic(tmp_path).sequences[-1]
    assert seq.labels.tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0]]


def test_generic_errors_name_file_line_and_expected_layout(tmp_path):
    with pytest.raises(DataError, match=r"no labels folder under .*: expected the generic layout"):
        read_generic(tmp_path)
    make_generic(tmp_path, GENERIC)
    (tmp_path / "frames" / "c" / "x" / "00001.png").unlink()
    with pytest.raises(DataError, match=r"c/x.csv: line 3: frame 1 has no image \(expected .*c/x/00001.png"):
        read_generic(tmp_path)
    (tmp_path / "labels" / "stray.csv").write_text("frame,AU01\n0,1\n")
    with pytest.raises(DataError, match=r"stray.csv: label file outside a subject folder"):
        read_generic(tmp_path)


def test_generic_with_fewer_than_three_subjects_has_no_parts(tmp_path, caplog):
    make_generic(tmp_path, {"a": ["s1"], "b": ["s1"]})
    data = read_generic(tmp_path)
    assert data.parts == [] and len(data.sequences) == 2
    assert "only 2 subject" in caplog.text


# -------------------------------------------------------------------------------------------- open_dataset


def test_open_dataset_dispatches_and_reports_bad_arguments(tmp_path):
    make_bp4d(tmp_path, [("F001", "T1"), ("F003", "T1"), ("F004", "T1")])
    assert open_dataset("bp4d", str(tmp_path), missing_frames="skip").name == "bp4d"
    assert open_dataset("bp4dplus", tmp_path).name == "bp4dplus"
    with pytest.raises(ValueError, match=r"unknown dataset kind 'bp5d'; known: " + ", ".join(KINDS)):
        open_dataset("bp5d", tmp_path)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) frames_dir; it takes missing_frames"):
        open_dataset("bp4d", tmp_path, frames_dir="x")
    with pytest.raises(ValueError, match="needs a root"):
        open_dataset("disfa", None)
    with pytest.raises(ConfigError, match=r"needs config=SynthConfig"):
        open_dataset("synth", None)
    assert set(KINDS) == {"synth", "bp4d", "bp4dplus", "disfa", "generic"}


def test_synth_on_disk_needs_synthau_json(tmp_path):
    make_generic(tmp_path, GENERIC)
    with pytest.raises(DataError, match=r"no synthau.json under .*not a SynthAU set"):
        open_dataset("synth", tmp_path)
