"""bench/report.py builds docs/results.md and README.md's results from docs/results/*.json: the
committed pages must be what the JSON gives, and a page edited by hand must be caught."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_report():
    spec = importlib.util.spec_from_file_location("report", ROOT / "bench" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_pages_are_what_the_json_gives():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.report", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_figure_edited_by_hand_is_caught(tmp_path, monkeypatch, capsys):
    report = load_report()
    readme, results = tmp_path / "README.md", tmp_path / "results.md"
    readme.write_text((ROOT / "README.md").read_text())
    results.write_text((ROOT / "docs" / "results.md").read_text())
    monkeypatch.setattr(report, "README", readme)
    monkeypatch.setattr(report, "RESULTS_MD", results)
    monkeypatch.setattr(report, "ROOT", tmp_path)
    assert report.main(["--check"]) == 0
    assert "| `python launch.py` (local Ray) | 5 / 5 | 29.7 s | 16,832 |" in readme.read_text()
    readme.write_text(readme.read_text().replace("| 29.7 s | 16,832 |", "| 19.7 s | 16,832 |"))
    assert report.main(["--check"]) == 1
    assert capsys.readouterr().out.strip() == (
        "report.py: README.md differs from docs/results/*.json; run python -m bench.report"
    )
    assert report.main([]) == 0  # rebuilt
    assert "| 29.7 s | 16,832 |" in readme.read_text() and report.main(["--check"]) == 0


def test_every_figure_names_the_command_and_date_that_made_it():
    page = (ROOT / "docs" / "results.md").read_text()
    sections = page.split("\n## ")[1:]
    assert len(sections) >= 3
    for section in sections:
        assert "2026-" in section and (
            "`python -m bench." in section or "`python launch.py" in section
        ), section[:80]
