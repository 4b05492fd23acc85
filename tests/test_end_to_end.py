"""End-to-end: the whole system learns CartPole, in-process and on a local Ray.

Fixed seeds and generous bars; the full benchmark (seeds 0-4 to 475) is bench/solve.py."""

import json

import numpy as np
import torch

import launch


def run(tmp_path, *args):
    rc = launch.main(["--run-root", str(tmp_path), "--run-name", "run", "--no-dashboard", *args])
    assert rc == 0
    run_dir = tmp_path / "run"
    return json.loads((run_dir / "summary.json").read_text()), run_dir


def test_in_process_run_learns_cartpole_and_writes_run_dir(tmp_path):
    summary, run_dir = run(
        tmp_path,
        "--in-process",
        "--seed",
        "0",
        "--max-seconds",
        "150",
        "--solve-return",
        "250",
        "--eval-episodes",
        "20",
        "--eval-every-env-steps",
        "5000",
    )
    assert summary["solved"], summary
    assert summary["greedy_eval_mean"] >= 250
    config = json.loads((run_dir / "config.json").read_text())
    assert config["seed"] == 0 and config["in_process"] is True
    assert list((run_dir / "checkpoints").glob("ckpt-*.pt"))
    assert (run_dir / "learning_curve.png").stat().st_size > 10_000
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert any("loss/total" in line for line in lines)
    # The exported policy loads without project code and maps [B, 4] -> logits [B, 2].
    policy = torch.export.load(str(run_dir / "policy.pt2")).module()
    for batch in (1, 5):
        logits = policy(torch.zeros(batch, 4))
        assert logits.shape == (batch, 2) and torch.isfinite(logits).all()


def test_local_ray_with_two_actors_and_two_shards_improves(tmp_path):
    summary, run_dir = run(
        tmp_path,
        "--num-actors",
        "2",
        "--num-replay-shards",
        "2",
        "--num-cpus",
        "2",
        "--seed",
        "1",
        "--max-seconds",
        "120",
        "--solve-return",
        "150",
        "--eval-episodes",
        "20",
        "--eval-every-env-steps",
        "5000",
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    returns = [r["actor/episode_return"] for r in records if "actor/episode_return" in r]
    assert len(returns) >= 4
    first, last = np.mean(returns[:2]), np.mean(returns[-2:])
    assert summary["learner_steps"] > 0
    assert last > 1.5 * first, (first, last)
    assert summary["greedy_eval_mean"] > 60, summary
    # actors acted with weights the learner published after it started training
    assert max(r["actor/policy_version"] for r in records if "actor/policy_version" in r) > 0
