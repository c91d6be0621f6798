"""ks_runtime/inputs.py: what a user names -> a Source, and SynthAU sequences as sources."""

import pytest

from ks_runtime.inputs import SynthAUSource, SynthSpec, open_source
from ks_runtime.io.sources import SourceError


def test_synthau_specs_generate_the_named_sequence_with_labels():
    spec = SynthSpec.parse("synthau:tiny:s02:t1:seed=4")
    assert (spec.size, spec.subject, spec.task, spec.seed) == ("tiny", "S02", "T1", 4)
    source = open_source("synthau:tiny:S02:T1:seed=4")
    assert isinstance(source, SynthAUSource) and source.labels.shape == (120, 12) and source.fps == 25
    first = next(iter(source))
    assert first.index == 0 and first.image.shape == (64, 64, 3)
    for bad, message in (
        ("synthau:tiny:S02", "expected"),
        ("synthau:tiny:S99:T1", "S99"),
        ("synthau:tiny:S01:T5", "T5"),
        ("synthau:huge:S01:T1", "huge"),
        ("synthau:tiny:S01:T1:colour=red", "colour"),
    ):
        with pytest.raises(SourceError, match=message):
            open_source(bad)


def test_open_source_names_what_it_cannot_open(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "missing.mp4")
    with pytest.raises(SourceError, match="webcam"):
        open_source(0)
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match="junk.mp4"):
        open_source(tmp_path / "junk.mp4")
