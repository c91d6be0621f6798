"""The CPU an engine runs on, as the INT8 check names it and the manifest records it (ks_runtime/engine/cpu.py)."""

from __future__ import annotations

import platform

import pytest

from ks_runtime.engine import cpu
from ks_runtime.engine.cpu import CpuInfo, cpu_info

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu sse4_2 avx f16c avx2 fma bmi2 sha_ni vaes
"""
SAPPHIRE_RAPIDS = """model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: avx2 avx512f avx512bw avx512_vnni avx_vnni amx_tile amx_int8 avx512_bf16
"""
GRAVITON = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp i8mm
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize(
    "text, machine, flags, vnni",
    [
        (ZEN3, "x86_64", ("avx2",), False),
        (SAPPHIRE_RAPIDS, "x86_64", ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"), True),
        (GRAVITON, "aarch64", ("asimddp", "i8mm"), None),
    ],
)
def test_the_int8_flags_are_read_from_cpuinfo(tmp_path, monkeypatch, text, machine, flags, vnni):
    (tmp_path / "cpuinfo").write_text(text)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    found = cpu_info(tmp_path / "cpuinfo")
    assert found.flags == flags and found.machine == machine and found.vnni is vnni
    assert CpuInfo.from_dict(found.to_dict()) == found  # the manifest's record reads back
    assert all(f in found.text() for f in flags)


def test_the_zen3_record_says_it_has_no_vnni(tmp_path, monkeypatch):
    (tmp_path / "cpuinfo").write_text(ZEN3)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    record = cpu_info(tmp_path / "cpuinfo").to_dict()
    assert record["cpu"] == "AMD EPYC 7763 64-Core Processor"
    assert record["isa"] == {f: f == "avx2" for f in cpu.X86_FLAGS}


def test_without_cpuinfo_the_flags_are_unknown_not_absent(tmp_path):
    found = cpu_info(tmp_path / "missing")
    assert found.flags is None and found.vnni is None and "flags unknown" in found.text()
    assert found.to_dict()["isa"] is None and found.model
