"""driver/timeline.py: milestones in seconds since the process started."""

import json
import subprocess
import sys
import time
from pathlib import Path

from driver.timeline import Timeline

ROOT = Path(__file__).resolve().parents[1]


def test_process_start_is_when_the_process_was_spawned():
    before = time.time()
    out = subprocess.run(
        [sys.executable, "-c", "from driver.timeline import process_start; print(process_start())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert before - 0.05 <= float(out) <= before + 0.25  # /proc's clock ticks are 10 ms


def test_the_first_mark_of_a_name_counts_and_marks_come_in_time_order():
    timeline = Timeline(start=100.0)
    timeline.mark("late", 103.0)
    timeline.mark("early", 101.5)
    timeline.mark("early", 102.0)
    assert list(timeline.as_dict().items()) == [
        ("start_unix", 100.0),
        ("early", 1.5),
        ("late", 3.0),
    ]
    assert json.loads(json.dumps(timeline.as_dict())) == timeline.as_dict()
