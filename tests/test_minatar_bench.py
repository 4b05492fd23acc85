"""bench/minatar.py end to end at a tiny budget: 2 games x 1 seed x ours (in-process) and the
SB3 PPO peer, real processes; the JSON's rows and curves, the JSON rewritten after every run,
the PNG. Then, on stand-in runs, --resume skipping what is done (and running again a run that
failed), and bad input (one line, exit 2)."""

import importlib.util
import json

import pytest

from bench import minatar

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("minatar") is None
    or importlib.util.find_spec("stable_baselines3") is None,
    reason="needs minatar and stable-baselines3 (requirements-envs.txt, requirements-bench.txt)",
)

GAMES, CONFIGS = ["breakout", "asterix"], ["ours-in-process", "sb3-ppo"]
FRAMES, EVERY = 2000, 1000


def argv(out, *more):
    return [
        *("--games", *GAMES, "--seeds", "0", "--configs", *CONFIGS),
        *("--frames", str(FRAMES), "--eval-every-env-steps", str(EVERY), "--eval-episodes", "2"),
        *("--max-seconds", "60", "--out", str(out), *more),
        # ours cheaper than the preset (fewer updates and envs): the harness is under test here
        *("--", "--replay-ratio", "2", "--envs-per-actor", "4"),
    ]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One real bench run; the number of rows the JSON held as each run began."""
    out = tmp_path_factory.mktemp("minatar") / "m.json"
    real, seen = minatar.run_one, []

    def counting(*args, **kwargs):
        seen.append(len(json.loads(out.read_text())["rows"]) if out.exists() else 0)
        return real(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setenv("MUESLI_RAY_CACHE", "off")  # no background build of the compiled loss
    mp.setattr(minatar, "run_one", counting)
    try:
        assert minatar.main(argv(out)) == 0
    finally:
        mp.undo()
    return out, seen


def test_rows_curves_and_json_after_every_run(bench_run):
    out, seen = bench_run
    assert seen == [0, 1, 2, 3]  # rewritten after each run, not only at the end
    data = json.loads(out.read_text())
    rows = {(r["game"], r["config"], r["seed"]): r for r in data["rows"]}
    assert set(rows) == {(g, c, 0) for g in GAMES for c in CONFIGS}
    for r in rows.values():
        assert "error" not in r, r
        assert r["env_steps"] >= FRAMES and r["stop_reason"] == "env step budget spent"
        frames = [x for x, _ in r["curve"]]
        assert frames == sorted(frames) and frames[-1] == r["env_steps"]
        assert [v for _, v in r["curve"]] == [v for _, v in r["curve_s"]]
        assert r["greedy_at_budget"] == r["curve"][-1][1] and r["frames_per_s"] > 0
    for game in GAMES:
        # ours evaluates every EVERY frames (and once more at the end)
        assert len(rows[(game, "ours-in-process", 0)]["curve"]) >= FRAMES // EVERY
    assert data["games"] == {"breakout": "MinAtar/Breakout-v1", "asterix": "MinAtar/Asterix-v1"}
    assert data["run_flags"]["asterix"]["ours-in-process"][:2] == ["--preset", "minatar-asterix"]
    summary = data["summary"]["breakout"]["sb3-ppo"]
    assert summary["runs"] == 1
    assert summary["greedy_at_budget"]["median"] == rows[("breakout", "sb3-ppo", 0)]["curve"][-1][1]


def test_png_is_written(bench_run):
    png = bench_run[0].with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_skips_what_is_done_and_reruns_a_failed_run(tmp_path, monkeypatch, capsys):
    """On stand-in runs (the real ones are bench_run's): a second pass with --resume runs
    nothing; one whose row failed runs that one again, and keeps the others."""
    calls = []

    def fake(game, config, seed, args, run_root):
        calls.append((game, config, seed))
        return dict(
            game=game,
            config=config,
            seed=seed,
            env_steps=FRAMES,
            process_wall_s=1.0,
            frames_per_s=float(FRAMES),
            greedy_at_budget=float(len(calls)),
            curve=[[FRAMES, float(len(calls))]],
            curve_s=[[1.0, float(len(calls))]],
        )

    monkeypatch.setattr(minatar, "run_one", fake)
    monkeypatch.setattr(minatar, "plot", lambda *a: None)
    out = tmp_path / "m.json"
    assert minatar.main(argv(out)) == 0 and len(calls) == 4
    first = json.loads(out.read_text())["rows"]
    calls.clear()
    capsys.readouterr()
    assert minatar.main(argv(out, "--resume")) == 0
    assert calls == [] and "0 runs to do, 4 done already" in capsys.readouterr().out
    assert json.loads(out.read_text())["rows"] == first
    data = json.loads(out.read_text())
    data["rows"][1]["error"] = ["it broke"]
    out.write_text(json.dumps(data))
    assert minatar.main(argv(out, "--resume")) == 0
    broken = data["rows"][1]
    assert calls == [(broken["game"], broken["config"], 0)]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and not any("error" in r for r in rows)
    assert [r for r in rows if r != rows[1]] == [r for r in first if r != first[1]]


@pytest.mark.parametrize(
    "more, message",
    [
        (["--games", "pong"], "--games pong: allowed: breakout"),
        (["--configs", "dqn"], "--configs dqn: allowed: ours"),
        (["--frames", "0"], "--frames and --eval-every-env-steps must be >= 1"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, more, message):
    out = tmp_path / "m.json"
    assert minatar.main(["--out", str(out), *more]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not out.exists()


def test_an_existing_out_needs_resume(tmp_path, capsys):
    out = tmp_path / "m.json"
    out.write_text("{}")
    assert minatar.main(["--out", str(out)]) == 2
    assert "exists: add --resume" in capsys.readouterr().err
