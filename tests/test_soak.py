"""bench/soak.py's table: slopes per minute, per 1000 actor chunks and per 1000 learner updates,
one row per process even when its Ray name changes (ray::IDLE becomes ray::Learner)."""

import math

from bench import soak


def test_slope_is_least_squares():
    assert soak.slope([0, 1, 2, 3], [1.0, 3.0, 2.0, 6.0]) == 1.4  # sxy 7 / sxx 5
    assert math.isnan(soak.slope([5], [1.0]))
    assert math.isnan(soak.slope([2, 2], [1.0, 3.0]))


def test_summarize_per_minute_per_chunk_and_per_update_over_the_last_half():
    # gcs: 100 MB at 1 min, then +2 MB a minute and +10 MB from 1 to 2 min (start-up);
    # a worker keeps its pid but changes its Ray name; a third process is seen once.
    times, chunks, updates = [60, 120, 180, 240], [0, 100, 200, 300], [0, 500, 1000, 1500]
    gcs = [100.0, 110.0, 112.0, 114.0]
    samples = [
        {
            "t": t,
            "progress": {"chunks": c, "learner_steps": u, "env_steps": 0},
            "rss": {
                "7": ("gcs_server", g),
                "9": ("ray::IDLE" if t == 60 else "ray::Learner", 300.0),
            },
        }
        for t, c, u, g in zip(times, chunks, updates, gcs)
    ]
    samples[0]["rss"]["11"] = ("raylet", 30.0)
    table = {row["process"]: row for row in soak.summarize(samples)}
    assert set(table) == {"gcs_server", "ray::Learner", "raylet"}
    g = table["gcs_server"]
    assert (g["pid"], g["samples"], g["start_mb"], g["end_mb"]) == (7, 4, 100.0, 114.0)
    assert g["mb_per_min"] == 4.4  # least squares over 1..4 min: sxy 22 / sxx 5
    assert g["late_mb_per_min"] == 2.0  # samples at t >= 120 s: 110, 112, 114
    assert g["late_mb_per_1k_chunks"] == 20.0  # 2 MB per 100 chunks
    assert g["late_mb_per_1k_updates"] == 4.0  # 2 MB per 500 updates
    learner = table["ray::Learner"]
    assert (learner["pid"], learner["samples"], learner["mb_per_min"]) == (9, 4, 0.0)
    assert table["raylet"]["samples"] == 1 and math.isnan(table["raylet"]["mb_per_min"])
