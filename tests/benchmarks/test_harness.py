"""benchmarks/harness.py's cache key: it must change with the code it names, and refuse a pattern gone stale."""

import pytest

from benchmarks import harness
from benchmarks.models import EXPORT_SOURCES


def test_the_code_key_follows_the_files_and_refuses_a_pattern_that_matches_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "ROOT", tmp_path)
    (tmp_path / "a.py").write_text("x = 1\n")
    before = harness.code_key(["*.py"], packages=())
    (tmp_path / "a.py").write_text("x = 2\n")
    assert harness.code_key(["*.py"], packages=()) != before
    with pytest.raises(FileNotFoundError, match="moved.py"):
        harness.code_key(["*.py", "moved.py"], packages=())


def test_every_export_source_of_the_bundle_cache_exists():
    key = harness.code_key(EXPORT_SOURCES)
    assert len(key) == 12
