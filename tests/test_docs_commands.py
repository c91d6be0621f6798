"""Every `ks-*` command written in a fenced block of README.md and docs/*.md runs, in the order a reader meets them,
on a tiny SynthAU model: the docs cannot drift from the code.

Each command runs as written, in one shared working folder (so `ks-export` finds what `ks-train fit` wrote), with
only the sizes shrunk: training gets `--set` overrides for a tiny model and two steps, `synthau:` inputs and scene
videos are tiny, the policy report scores one sequence. Commands that need hardware this machine lacks (TensorRT)
are skipped with the reason.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
TOOLS = ("ks-train", "ks-export", "ks-run")
TINY_TRAINING = [
    "data.synth_size=tiny",
    "data.image_size=32",
    "model.backbone=tiny",
    "train.epochs=2",
    "train.batches_per_epoch=2",
    "train.batch_size=4",
    "train.workers=0",
]
SHRINK = [  # (pattern, replacement) applied to a command's text
    (r"synthau:(small|medium|full):", "synthau:tiny:"),
    (r"--seconds \d+", "--seconds 2"),
    (r"--(report-)?sequences \d+", r"--\1sequences 1"),
    (r"--size (small|medium|full)\b", "--size tiny"),
]
NEEDS = {"--trt": "TensorRT is not installed here (ks-export --trt builds engines with it)"}


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def doc_commands(paths: list[Path] = DOCS) -> list[DocCommand]:
    """The `ks-*` command lines of every fenced block (continuation lines joined, comments and prompts dropped)."""
    found = []
    for path in paths:
        text = path.read_text()
        for match in FENCE.finditer(text):
            first_line = text.count("\n", 0, match.start(2)) + 1
            block = match.group(2).replace("\\\n", " ")
            for offset, line in enumerate(block.splitlines()):
                command = " ".join(line.strip().removeprefix("$ ").split(" #")[0].split())
                if command.split(" ", 1)[0] in TOOLS:
                    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                    where = f"{name}:{first_line + offset}"
                    found.append(DocCommand(where, command))
    return found


def shrunk(command: str) -> list[str]:
    for pattern, replacement in SHRINK:
        command = re.sub(pattern, replacement, command)
    argv = shlex.split(command)
    if argv[:2] == ["ks-train", "fit"]:
        argv += [arg for setting in TINY_TRAINING for arg in ("--set", setting)]
    return argv


def scripts_dir() -> Path:
    return Path(sys.executable).parent


COMMANDS = doc_commands()
FIRST_SEEN = {}  # command text -> where it first appears: a command written twice runs once
for _command in COMMANDS:
    FIRST_SEEN.setdefault(_command.text, _command.where)


def test_the_docs_hold_commands_of_every_tool():
    tools = {c.text.split(" ", 1)[0] for c in COMMANDS}
    assert tools == set(TOOLS), f"fenced commands found for {sorted(tools)} only"


def test_the_extractor_joins_continuations_and_drops_comments(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("text\n```bash\n$ ks-run b \\\n  --input x  # note\nmake demo\n```\n")
    assert [c.text for c in doc_commands([doc])] == ["ks-run b --input x"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("docs")


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command_runs(command: DocCommand, workdir: Path):
    if FIRST_SEEN[command.text] != command.where:
        pytest.skip(f"the same command as {FIRST_SEEN[command.text]}, run there")
    for flag, reason in NEEDS.items():
        if flag in command.text.split():
            pytest.skip(reason)
    argv = shrunk(command.text)
    argv[0] = str(scripts_dir() / argv[0])
    done = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
