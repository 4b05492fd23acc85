"""One meaning per flag name across launch.py, evaluate.py, sweep.py and bench/: every
add_argument call of the project's scripts, read from their source."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [
    "evaluate.py",
    "sweep.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "bench").rglob("*.py")),
]


def flags() -> dict:
    """{flag: [(script, help text), ...]} of every add_argument("--flag", ..., help=...)."""
    found = {}
    for script in SCRIPTS:
        for node in ast.walk(ast.parse((ROOT / script).read_text())):
            if not (
                isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"
            ):
                continue
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and str(first.value).startswith("--"):
                helps = [k.value for k in node.keywords if k.arg == "help"]
                text = ast.unparse(helps[0]) if helps else ""
                found.setdefault(first.value, []).append((script, text))
    return found


def test_out_is_always_a_json_file_of_a_bench_script():
    uses = flags()["--out"]
    assert {script for script, _ in uses} <= {
        str(p.relative_to(ROOT)) for p in (ROOT / "bench").rglob("*.py")
    }
    for script, text in uses:
        assert "JSON" in text, (script, text)


def test_seed_is_only_the_run_seed():
    """launch.py's --seed (a Config field) is the run's seed; the peers' harness takes the same
    seed; evaluate.py's choice of env seeds is --seed-set."""
    assert {script for script, _ in flags().get("--seed", [])} <= {"bench/peers/harness.py"}
    assert "--seed-set" in flags()
    assert all("seed" in text for _, text in flags()["--seeds"])


def test_max_seconds_is_always_a_run_s_time_budget():
    for script, text in flags()["--max-seconds"]:
        assert "budget" in text, (script, text)


def test_a_bench_script_s_bad_flag_is_one_line_and_exit_2():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "bench.report", "--chek"], cwd=ROOT, capture_output=True, text=True
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert (
        proc.stderr == "report.py: error: unrecognized argument: --chek (did you mean --check?)\n"
    )


def test_help_descriptions_are_the_docstring_s_whole_first_paragraph():
    from common.cli import first_paragraph

    assert (
        first_paragraph('"""\n  One line\n  and its end.\n\n  More."""'.strip('"'))
        == "One line and its end."
    )
