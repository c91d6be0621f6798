"""A CSV under a failing disk (issue 19): the error names the file, and the file ends on its last whole row."""

import builtins
import errno

import numpy as np
import pytest

from ks_runtime.core.errors import OutputError
from ks_runtime.core.results import FrameResult
from ks_runtime.io.table import CsvSink, TextSink, read_results_csv

AUS = ("AU01", "AU02")


class FullDisk:
    """A file whose disk fills after `room` bytes: the write that crosses it stores what fits, then fails."""

    def __init__(self, real, room: int) -> None:
        self.real, self.room = real, room

    def write(self, data) -> int:
        data = bytes(data) if not isinstance(data, str) else data
        if len(data) > self.room:
            self.real.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.real.write(data)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self.real, name)


def full_disk_after(room: int):
    """A stand-in for `open` that gives files on a disk with `room` bytes left."""

    def opener(*args, **kwargs):
        return FullDisk(builtins.open(*args, **kwargs), room)

    return opener


def results(count: int, start: int = 0) -> list[FrameResult]:
    return [
        FrameResult("0", i, i / 30, True, 0.9, np.array([0.2, 0.7], np.float32), 0.0)
        for i in range(start, start + count)
    ]


def test_a_failed_write_names_the_file_and_truncates_to_the_last_whole_row(tmp_path):
    path = tmp_path / "a.csv"
    sink = CsvSink(path, AUS, [0.5, 0.5])
    sink.write(results(2))
    sink._file = FullDisk(sink._file, 30)  # the next batch fits partly
    with pytest.raises(OutputError) as failed:
        sink.write(results(3, start=2))
    sink.close()
    message = str(failed.value)
    assert str(path) in message and "No space left" in message and "2 rows" in message
    text = path.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 3
    assert list(read_results_csv(path)["frame"]) == [1, 2]


def test_each_row_is_one_write(tmp_path):
    """A kill between two writes leaves whole rows: a batch goes to the file as one string."""
    sink = TextSink(tmp_path / "a.txt", header="h")
    writes: list = []
    real = sink._file

    class Counting:
        def write(self, data):
            writes.append(bytes(data))
            return real.write(data)

        def __getattr__(self, name):
            return getattr(real, name)

    sink._file = Counting()
    sink.write_lines(["a", "b", "c"])
    sink.close()
    assert writes == [b"a\nb\nc\n"] and (tmp_path / "a.txt").read_text() == "h\na\nb\nc\n"


def test_an_interrupt_mid_write_leaves_whole_rows(tmp_path):
    path = tmp_path / "a.csv"
    sink = CsvSink(path, AUS, [0.5, 0.5])
    sink.write(results(1))
    real = sink._file

    class Interrupted:
        def write(self, data):
            real.write(bytes(data)[:10])
            raise KeyboardInterrupt

        def __getattr__(self, name):
            return getattr(real, name)

    sink._file = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        sink.write(results(2, start=1))
    sink.close()
    assert path.read_text().endswith("\n") and len(read_results_csv(path)) == 1


def test_the_path_check_knows_the_overlays_extensions():
    from ks_runtime.io.outputs import OVERLAY_SUFFIXES
    from ks_runtime.io.overlay import OVERLAY_CODECS

    assert tuple(OVERLAY_CODECS) == OVERLAY_SUFFIXES
