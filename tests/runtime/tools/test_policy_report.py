"""ks_runtime/tools/policy_report.py through `ks-run --policy-report` (the old spelling of `ks-run report`): a row per
key-slot policy."""

from ks_runtime.cli import main


def test_the_policy_report_lists_every_policy(bundle, capsys, tmp_path):
    code = main(
        [
            str(bundle),
            "--policy-report",
            "--input",
            "synthau:tiny:S01:T1",
            "--report-latency-frames",
            "8",
            "--no-progress",
            "--report-out",
            str(tmp_path / "table.md"),
        ]
    )
    assert code == 0
    table = (tmp_path / "table.md").read_text()
    for policy, ahead in (("last", 0), ("center", 1), ("shift", 2), ("ensemble", 2)):
        assert f"| {policy} | {ahead} frames" in table
