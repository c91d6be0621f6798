"""The CPU an engine runs on: its model name and the instruction sets that decide how int8 products are summed.

x86 CPUs without VNNI multiply uint8 by int8 with `vpmaddubsw`, which saturates a pair of products at int16;
AVX512-VNNI, AVX-VNNI and AMX-INT8 sum them in int32. Recorded in the manifest where a variant was verified
(ks-export) and named in the runtime's INT8 check (int8_check.py), so a difference can be traced to the CPU.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

# The flags (as /proc/cpuinfo spells them) that change which int8 kernels onnxruntime picks.
X86_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
ARM_FLAGS = ("asimddp", "i8mm")  # aarch64: int8 dot products, int8 matrix multiply (both sum in int32)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuInfo:
    """A CPU's model name, architecture and the int8 flags it has (`flags` None where they cannot be read)."""

    model: str
    machine: str
    flags: tuple[str, ...] | None

    @property
    def vnni(self) -> bool | None:
        """Whether u8 x s8 products are summed without int16 saturation (None: unknown)."""
        if self.flags is None or not self.machine.lower().startswith(("x86", "amd64", "i686")):
            return None
        return any(f in self.flags for f in VNNI_FLAGS)

    def text(self) -> str:
        """'Intel(R) Xeon(R) Processor (x86_64: avx2 avx512f avx512_vnni ...)'."""
        flags = "flags unknown" if self.flags is None else " ".join(self.flags) or "none of " + "/".join(self.known)
        return f"{self.model} ({self.machine}: {flags})"

    @property
    def known(self) -> tuple[str, ...]:
        """The flags that matter on this architecture."""
        return ARM_FLAGS if self.machine.lower().startswith(("aarch64", "arm")) else X86_FLAGS

    def to_dict(self) -> dict:
        """The manifest's record: model, machine and each flag that matters as true/false (null: not readable)."""
        isa = None if self.flags is None else {f: f in self.flags for f in self.known}
        return {"cpu": self.model, "machine": self.machine, "isa": isa}

    @classmethod
    def from_dict(cls, data: dict) -> CpuInfo:
        """The inverse of to_dict (a manifest's verified_on)."""
        isa = data.get("isa")
        flags = None if not isinstance(isa, dict) else tuple(f for f, present in isa.items() if present)
        return cls(str(data.get("cpu", "unknown CPU")), str(data.get("machine", "unknown")), flags)


def cpu_info(cpuinfo: Path = CPUINFO) -> CpuInfo:
    """This machine's CPU, from /proc/cpuinfo where there is one (Linux), else what `platform` knows."""
    model, flags = "", None
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if not model and key in ("model name", "cpu model", "hardware"):
            model = value.strip()
        elif flags is None and key in ("flags", "features"):  # x86 says flags, aarch64 features
            present = set(value.split())
            flags = tuple(f for f in X86_FLAGS + ARM_FLAGS if f in present)
    return CpuInfo(model or platform.processor() or "unknown CPU", platform.machine() or "unknown", flags)
