"""The `make demo` plan from a CPU's flags: AMX CPUs train the demo profile in bf16, the others the same model in
fp32 on a shorter schedule that fits 15 minutes on 2 cores."""

import pytest

from ks_runtime.core.errors import ConfigError
from ks_train.config import load_config
from ks_train.machine import BUDGET_S, FULL, SHORT, CpuInfo, machine_lines, parse_cpuinfo, plan_demo, read_cpu

# /proc/cpuinfo of an AMD EPYC Zen 3 (AVX2, no AVX-512) and of a Sapphire Rapids Xeon (AVX-512, bf16, AMX).
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand \
bmi1 avx2 bmi2 rdseed adx sha_ni clflushopt vaes vpclmulqdq
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2
"""
SAPPHIRE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse sse2 ssse3 fma avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni \
avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8
"""
CASCADE = "model name : Intel(R) Xeon(R) CPU @ 2.80GHz\nflags : sse2 avx avx2 fma avx512f avx512bw avx512_vnni\n"
ZEN4 = "model name : AMD EPYC 9B14\nflags : sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16\n"


def test_parse_reads_the_first_processor():
    cpu = parse_cpuinfo(ZEN3, cpus=2)
    assert cpu.model == "AMD EPYC 7B13" and cpu.cpus == 2
    assert {"avx2", "fma", "sha_ni"} <= cpu.flags and "avx512f" not in cpu.flags
    assert cpu.isa == "AVX2" and not cpu.torch_bf16 and not cpu.amx


def test_parse_without_cpuinfo_is_a_plain_cpu():
    cpu = parse_cpuinfo("")
    assert cpu.model == "unknown CPU" and cpu.isa == "SSE" and not cpu.torch_bf16


def test_bf16_is_what_the_trainer_asks_torch():
    assert parse_cpuinfo(SAPPHIRE).torch_bf16 and parse_cpuinfo(SAPPHIRE).amx and parse_cpuinfo(SAPPHIRE).isa == "AMX"
    assert parse_cpuinfo(ZEN4).torch_bf16 and not parse_cpuinfo(ZEN4).amx and parse_cpuinfo(ZEN4).isa == "AVX-512"
    assert not parse_cpuinfo(CASCADE).torch_bf16  # AVX-512 and VNNI, but no bf16


def test_avx2_only_two_cores_trains_the_fp32_schedule_within_the_budget():
    plan = plan_demo(parse_cpuinfo(ZEN3, cpus=2), threads=2)
    assert plan.precision == "fp32" and plan.schedule == SHORT and not plan.forced and not plan.upper_bound
    assert plan.expected_seconds <= 0.9 * BUDGET_S  # a margin for slower disks and the first import
    assert "train.amp=false" in plan.overrides()
    assert f"train.batches_per_epoch={SHORT.steps_per_epoch}" in plan.overrides()


def test_avx512_without_bf16_trains_fp32_and_with_bf16_the_full_profile():
    cascade = plan_demo(parse_cpuinfo(CASCADE, cpus=2), threads=2)
    assert cascade.schedule == SHORT and cascade.upper_bound  # timed by the AVX2 figures, which are slower
    assert "min or less (timed as AVX2)" in cascade.describe()
    assert "or less (measured on 2 cores, timed as AVX2)" in plan_demo(parse_cpuinfo(CASCADE), 8).describe()
    # AVX512-BF16 without AMX (Zen 4): native bf16, the demo profile as it is, as the trainer's train.amp picks
    zen4 = plan_demo(parse_cpuinfo(ZEN4, cpus=2), threads=2)
    assert zen4.precision == "bf16" and zen4.schedule == FULL and "train.amp=false" not in zen4.overrides()
    assert zen4.reason.startswith("AVX512-BF16")


def test_bf16_two_cores_trains_the_demo_profile_as_it_is():
    plan = plan_demo(parse_cpuinfo(SAPPHIRE, cpus=2), threads=2)
    assert plan.precision == "bf16" and plan.schedule == FULL
    assert plan.expected_seconds <= BUDGET_S
    cfg = load_config("demo", plan.overrides())
    assert cfg.to_dict() == load_config("demo").to_dict()  # the overrides restate the profile: nothing changes


def test_fp32_schedule_keeps_the_model_and_reaches_the_pseudo_labels():
    demo, fp32 = load_config("demo"), load_config("demo", plan_demo(parse_cpuinfo(ZEN3), 2).overrides())
    assert fp32.model == demo.model and fp32.data == demo.data and fp32.loss == demo.loss
    assert fp32.train.batch_size == demo.train.batch_size and not fp32.train.amp
    assert 0 < fp32.train.warmup_epochs < fp32.train.epochs  # L_PL runs, or the demo fails
    assert SHORT.steps < FULL.steps


def test_forcing_a_plan():
    assert plan_demo(parse_cpuinfo(SAPPHIRE), 2, "fp32").schedule == SHORT
    forced = plan_demo(parse_cpuinfo(ZEN3), 2, " BF16 ")
    assert forced.precision == "bf16" and forced.schedule == FULL and forced.forced
    assert forced.describe().startswith("KS_DEMO_PLAN=bf16 (whatever the flags): bf16 training")
    with pytest.raises(ConfigError, match="KS_DEMO_PLAN"):
        plan_demo(parse_cpuinfo(ZEN3), 2, "fast")


def test_one_thread_takes_longer_and_says_so():
    two, one = plan_demo(parse_cpuinfo(ZEN3), 2), plan_demo(parse_cpuinfo(ZEN3), 1)
    assert one.expected_seconds > two.expected_seconds
    assert "1 torch thread;" in one.describe() and "over the 15-minute aim" in one.describe()


def test_printed_lines_name_the_cpu_flags_precision_schedule_and_time():
    cpu = parse_cpuinfo(ZEN3, cpus=2)
    plan = plan_demo(cpu, threads=2)
    first, second = machine_lines(cpu, plan)
    assert first.startswith("this CPU: AVX2; AMD EPYC 7B13, 2 CPUs; has avx2 fma; lacks avx512f avx512_vnni")
    assert "amx_bf16" in first
    minutes = plan.expected_seconds / 60
    assert second == (
        f"plan: no native bf16 (no AVX512-BF16, no AMX): fp32 training; demo schedule 'demo-fp32': "
        f"{SHORT.epochs} epochs x {SHORT.steps_per_epoch} steps = {SHORT.steps} steps, warm-up "
        f"{SHORT.warmup_epochs} epochs; 2 torch threads; expected ~{minutes:.1f} min "
        f"(training ~{plan.training_seconds / 60:.1f} min)"
    )
    bf16 = machine_lines(parse_cpuinfo(SAPPHIRE, 2), plan_demo(parse_cpuinfo(SAPPHIRE, 2), 2))
    assert bf16[0].startswith(
        "this CPU: AMX; Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz, 2 CPUs; has avx2 fma "
        "avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile"
    )
    assert bf16[1].startswith(
        "plan: AMX: native bf16 matrix tiles: bf16 training; demo schedule 'demo': 8 epochs x "
        "100 steps = 800 steps, warm-up 4 epochs; 2 torch threads; expected ~7"
    )


def test_this_machine_reads():
    cpu = read_cpu()
    assert isinstance(cpu, CpuInfo) and cpu.cpus >= 1
    assert read_cpu("/nonexistent/cpuinfo").flags == frozenset()
