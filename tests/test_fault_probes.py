"""bench/faults.py: its verdict, and two probes run for real (both refused before Ray starts)."""

import json

import pytest

from bench import faults

CLEAN = {"exit": 2, "stderr_lines": 1, "traceback": False, "stop_reason": None, "temp_files": [],
         "processes_after_10s": []}  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [{"exit": 1}, {"stderr_lines": 4}, {"traceback": True}, {"stop_reason": "error"},
     {"temp_files": ["run/config.json.tmp"]}, {"processes_after_10s": ["123"]}],
)  # fmt: skip
def test_a_probe_fails_on_any_one_fault(change):
    assert faults.passed(CLEAN, {2: None})
    assert not faults.passed({**CLEAN, **change}, {2: None})


def test_refused_probes_run_and_keep_the_results_of_others(tmp_path, capsys):
    out = tmp_path / "faults.json"
    out.write_text(json.dumps({"probes": {"sigterm": {"passed": True}}}))
    assert faults.main(["--only", "flag-prefix", "unroll-past-sequence", "--out", str(out)]) == 0
    probes = json.loads(out.read_text())["probes"]
    assert sorted(probes) == ["flag-prefix", "sigterm", "unroll-past-sequence"]
    assert probes["flag-prefix"]["stderr"] == [
        "launch.py: error: unrecognized argument: --lr (did you mean --learning-rate?)"
    ]
    assert probes["flag-prefix"]["passed"] and probes["unroll-past-sequence"]["exit"] == 2
