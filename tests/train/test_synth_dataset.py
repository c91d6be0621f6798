"""ks_train/data/synth.py: SynthAU written by write_dataset and read back equals the in-memory set."""

import json
import logging

import numpy as np
import pytest

from ks_runtime.core.errors import ConfigError, DataError
from ks_runtime.synth.generate import GENERATOR_VERSION, SynthConfig, generate_sequence, synth_parts, write_dataset
from ks_train.data.registry import open_dataset
from ks_train.data.synth import SynthAUDataset, read_synth, synth_dataset

CFG = SynthConfig(size="tiny", frames=10, subjects=3, tasks=2)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_dataset(CFG, tmp_path_factory.mktemp("synthau"))


@pytest.fixture(scope="module")
def in_memory():
    return synth_dataset(CFG)


def test_round_trip_labels_and_frames_equal_the_generator(written, in_memory):
    disk = read_synth(written)
    assert isinstance(disk, SynthAUDataset) and disk.version == GENERATOR_VERSION
    assert disk.config["seed"] == CFG.seed and disk.au_set == CFG.aus == in_memory.au_set
    assert disk.parts == in_memory.parts == synth_parts(CFG)
    assert (
        [s.key for s in disk.sequences]
        == [s.key for s in in_memory.sequences]
        == ["S01/T1", "S01/T8", "S02/T1", "S02/T8", "S03/T1", "S03/T8"]
    )
    for s, (on_disk, memory) in enumerate(zip(disk.sequences, in_memory.sequences, strict=True)):
        reference = generate_sequence(CFG, s // CFG.tasks, s % CFG.tasks)
        np.testing.assert_array_equal(on_disk.labels, reference.labels)
        np.testing.assert_array_equal(memory.labels, reference.labels)
        assert on_disk.frame_numbers.tolist() == memory.frame_numbers.tolist() == list(range(CFG.frames))
        assert on_disk.frame_paths is not None and memory.frames is not None
        frames = on_disk.load(range(len(on_disk)))
        assert frames.shape == (CFG.frames, 64, 64, 3) and frames.dtype == np.uint8
        np.testing.assert_array_equal(frames, memory.load(np.arange(len(memory))))  # PNG is lossless
        np.testing.assert_array_equal(frames, reference.frames)


def test_subjects_filter_renders_only_those(in_memory):
    part = synth_dataset(CFG, subjects=["S03"])
    assert [s.key for s in part.sequences] == ["S03/T1", "S03/T8"]
    assert part.parts == synth_parts(CFG)
    np.testing.assert_array_equal(part.sequences[1].frames, in_memory.sequences[5].frames)
    with pytest.raises(ConfigError, match=r"subjects: S09 not in this SynthAU set \(S01..S03\)"):
        synth_dataset(CFG, subjects=["S09"])


def test_open_dataset_synth_in_memory_and_on_disk(written):
    data = open_dataset("synth", None, config=CFG.to_dict(), subjects=["S01"])
    assert data.name == "synthau" and {s.subject for s in data.sequences} == {"S01"}
    assert open_dataset("synth", written).version == GENERATOR_VERSION


def test_synthau_json_checked(written, tmp_path, caplog):
    import shutil

    root = shutil.copytree(written, tmp_path / "copy")
    meta = json.loads((root / "synthau.json").read_text())
    (root / "synthau.json").write_text(json.dumps({**meta, "version": "0.9"}))
    with caplog.at_level(logging.WARNING):
        assert read_synth(root).version == "0.9"
    assert "written by SynthAU generator 0.9" in caplog.text
    (root / "synthau.json").write_text(json.dumps({**meta, "au_set": "disfa"}))
    with pytest.raises(DataError, match=r"synthau.json: field au_set is 'disfa'"):
        read_synth(root)
    (root / "synthau.json").write_text(json.dumps({**meta, "bogus": 1}))
    with pytest.raises(DataError, match=r"synthau.json: not a SynthAU config"):
        read_synth(root)
    (root / "synthau.json").write_text("{")
    with pytest.raises(DataError, match=r"synthau.json: line 1: not valid JSON"):
        read_synth(root)
