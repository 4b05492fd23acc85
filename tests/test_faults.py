"""Faults injected into real runs: resume after a corrupt checkpoint, and a three-node
Ray cluster (ray.cluster_utils.Cluster on this machine) that loses an actor process,
a replay shard and a whole worker node mid-run and still learns.

The end-to-end Ray test (tests/test_end_to_end.py) reaches a greedy eval of 150 within
120 s with two actors and two shards; the cluster run here must reach the same bar.
"""

import json
import threading
import time

import pytest
import torch

import launch
from common import envs as envs_lib
from common.config import parse_config, to_dict
from driver.trainer import Trainer, make_run_dir
from driver.wiring import placed
from learner import checkpoint


def summary_of(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_resume_skips_a_corrupt_checkpoint_and_continues_the_counters(
    tmp_path, capsys, monkeypatch
):
    base = [
        "--in-process",
        "--run-root",
        str(tmp_path),
        "--run-name",
        "run",
        "--seed",
        "3",
        "--checkpoint-every-s",
        "2",
        "--eval-episodes",
        "5",
        "--solve-return",
        "1e9",
    ]
    assert launch.main(base + ["--max-seconds", "12"]) == 0
    run_dir = tmp_path / "run"
    summary_of(run_dir)
    paths = checkpoint.list_checkpoints(run_dir / "checkpoints")
    assert len(paths) >= 2
    newest, previous = paths[0], paths[1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a crash mid-copy, say
    stored = torch.load(previous, weights_only=True)
    assert stored["run"]["env_steps"] > 0
    capsys.readouterr()

    # what the resumed driver and learner hold right after restoring
    restored = []

    def spy_restore(trainer, run_state):
        real_restore(trainer, run_state)
        learner = trainer.components.learner
        restored.append(
            {
                "env_steps": trainer.log.env_steps,
                "episodes": trainer.log.episodes,
                "learner_steps": trainer.learner_steps,
                "best_eval": trainer.best_eval,
                "learner.steps": learner.steps,
                "seconds": trainer.log.elapsed(),
            }
        )

    real_restore = Trainer.restore
    monkeypatch.setattr(Trainer, "restore", spy_restore)
    assert launch.main(["--resume", str(run_dir), "--max-seconds", "20"]) == 0
    run = stored["run"]
    assert len(restored) == 1
    got = restored[0]
    assert (
        got["env_steps"],
        got["episodes"],
        got["learner_steps"],
        got["best_eval"],
        got["learner.steps"],
    ) == (
        run["env_steps"],
        run["episodes"],
        run["learner_steps"],
        run["best_eval"],
        stored["steps"],
    )
    # the clock goes on from the stored time
    assert run["seconds"] <= got["seconds"] < run["seconds"] + 5.0
    out = capsys.readouterr().out
    assert f"resume: skipped checkpoint {newest} is corrupt or truncated" in out
    assert f"resume: continuing from {previous}" in out
    second = summary_of(run_dir)
    assert second["resumed_from"] == str(previous)
    # counted on from the restored figure
    assert second["env_steps"] > run["env_steps"]
    assert second["seconds"] >= 12
    # The resumed learner went on from the restored step, not from 0.
    restored_step = int(previous.name[len("ckpt-") : -len(".pt")])
    assert second["learner_steps"] > restored_step
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 3


def test_resume_without_a_readable_checkpoint_exits_2_with_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    cfg = parse_config(["--in-process"])
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg)))
    (run_dir / "checkpoints" / "ckpt-5.pt").write_bytes(b"not a checkpoint")
    assert launch.main(["--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no readable checkpoint" in err[0] and "Traceback" not in err[0]


def test_resume_of_a_directory_without_config_exits_2(tmp_path, capsys):
    assert launch.main(["--resume", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--resume=" in err and "config.json" in err and "\n" not in err


def wait_for_learner_steps(trainer, steps, timeout=90):
    deadline = time.monotonic() + timeout
    while trainer.learner_steps < steps:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"learner stuck at {trainer.learner_steps} steps (waiting for {steps})"
            )
        time.sleep(0.2)


class Injector(threading.Thread):
    """Kills an actor, then a replay shard, then removes a worker node that hosts an actor
    but neither the learner nor the driver (whose raylet the weight store sits with; losing
    that node ends a run, as losing the head does), each once training has moved on."""

    def __init__(self, trainer, cluster):
        super().__init__(daemon=True)
        self.trainer, self.cluster, self.done, self.error = trainer, cluster, [], None
        self.actor_killed_at = self.shard_instance = None

    def run(self):
        import ray

        try:
            driver_node = ray.get_runtime_context().get_node_id()
            wait_for_learner_steps(self.trainer, 80)
            c = self.trainer.components
            ray.kill(c.actors[0], no_restart=False)
            self.done.append(("actor", self.trainer.learner_steps))
            self.actor_killed_at = time.monotonic()
            wait_for_learner_steps(self.trainer, self.trainer.learner_steps + 40)
            self.shard_instance = ray.get(c.shards[0].stats.remote())["started"]
            ray.kill(c.shards[0], no_restart=False)
            self.done.append(("shard", self.trainer.learner_steps))
            wait_for_learner_steps(self.trainer, self.trainer.learner_steps + 40)
            victim = next(
                node
                for node in self.cluster.list_all_nodes()[1:]
                if self.trainer.nodes.get(node.node_id, {}).get("actors")
                and not self.trainer.nodes[node.node_id]["learner"]
                and node.node_id != driver_node
            )
            # the step the node goes at: remove_node kills its processes first, then waits for
            # the cluster to see it gone (seconds under load, while the learner goes on)
            self.done.append(("node", self.trainer.learner_steps))
            self.cluster.remove_node(victim)
        except Exception as exc:  # reported by the test
            self.error = exc


@pytest.fixture
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def test_training_survives_a_dead_actor_a_dead_shard_and_a_lost_node(tmp_path, cluster):
    """Three actors, one CPU each, fill the cluster (the learner takes the fourth CPU), so a
    worker node with an actor and without the driver always exists, whichever node the
    driver attached to; the actor on the removed node cannot restart (no free CPU) and the
    run goes on with two."""
    import ray

    cfg = parse_config(
        [
            "--address",
            cluster.address,
            "--no-ship-code",
            "--num-actors",
            "3",
            "--num-replay-shards",
            "2",
            "--seed",
            "1",
            "--max-seconds",
            "180",
            "--solve-return",
            "300",
            "--eval-episodes",
            "20",
            "--eval-every-env-steps",
            "5000",
            "--run-root",
            str(tmp_path),
            "--run-name",
            "run",
        ]
    )
    ray.init(address=cluster.address)
    cfg, where = placed(cfg)
    trainer = Trainer(cfg, envs_lib.describe(cfg.env), make_run_dir(cfg), None, where)
    # (arrival time, actor index, that actor process's env steps so far)
    chunks = []
    count_chunk = trainer.on_actor
    trainer.on_actor = lambda stats: (
        chunks.append((time.monotonic(), stats["actor"], stats["total_env_steps"])),
        count_chunk(stats),
    )
    injector = Injector(trainer, cluster)
    injector.start()
    reason = trainer.run()
    summary = trainer.finish(reason)
    injector.join(timeout=5)
    assert injector.error is None, injector.error
    assert [what for what, _ in injector.done] == ["actor", "shard", "node"], injector.done
    assert summary["solved"], summary  # the same bar as the fault-free run
    # solved after the last fault: by weights of its learner step or later (seen in CI: 300 and 300;
    # 300 and 302 under load when the step was read after remove_node returned)
    assert summary["solved_at"]["version"] >= injector.done[-1][1]
    # The killed actor came back (a new process: its own env-step count starts again) and the driver
    # gave it work again: chunks of actor 0 after the kill, counted from a fresh start.
    before = max(total for t, i, total in chunks if i == 0 and t < injector.actor_killed_at)
    after = [total for t, i, total in chunks if i == 0 and t > injector.actor_killed_at]
    assert after and min(after) < before, (before, after[:5])
    # The killed shard came back (a new instance) and took sequences again.
    shard = ray.get(trainer.components.shards[0].stats.remote(), timeout=30)
    assert shard["started"] != injector.shard_instance and shard["sequences"] > 0, shard
    faults = summary["faults"]
    # The killed actor's failure, and the lost node's actor's (one CPU: one actor per worker node)
    # when a call of it was in flight as the node went, which timing decides: 1 was seen once in
    # CI (2026-12-03), 2 otherwise. The killed actor's return is asserted above.
    assert faults["actor_failures"] in (1, 2), faults
    # at least the learner's sample in flight to the killed shard
    assert faults["replay_failed_calls"] >= 1, faults
    assert faults["replay_sequences_lost"] > 0, faults  # the killed shard held sequences
    print("faults:", injector.done, faults, "solved at", summary["solved_at"])


def test_learning_goes_on_after_the_only_replay_shard_loses_everything(tmp_path):
    """One shard, killed mid-run: Ray restarts it empty, with a fresh rate limit (replay/rate_limit.py),
    so the actor that sat at the old shard's limit may insert at once and the learner, which has no
    data meanwhile, trains again once the shard holds its minimum; neither waits forever."""
    ray = pytest.importorskip("ray")
    cfg = parse_config(
        [
            "--num-actors",
            "1",
            "--num-replay-shards",
            "1",
            "--seed",
            "2",
            "--max-seconds",
            "50",
            "--solve-return",
            "1e9",
            "--eval-every-env-steps",
            "1000000000",
            "--no-dashboard",
            "--run-root",
            str(tmp_path),
            "--run-name",
            "run",
        ]
    )
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        cfg, where = placed(cfg)
        trainer = Trainer(cfg, envs_lib.describe(cfg.env), make_run_dir(cfg), None, where)
        killed_at, errors = [], []

        def kill_the_shard():
            try:
                wait_for_learner_steps(trainer, 60)
                ray.kill(trainer.components.shards[0], no_restart=False)
                killed_at.append(trainer.learner_steps)
            except Exception as exc:  # reported by the test
                errors.append(exc)

        threading.Thread(target=kill_the_shard, daemon=True).start()
        summary = trainer.finish(trainer.run())
    finally:
        ray.shutdown()
    assert not errors and killed_at, errors
    assert summary["learner_steps"] >= killed_at[0] + 100, (killed_at, summary["learner_steps"])
    # the shard did lose its data
    assert summary["faults"]["replay_sequences_lost"] > 0, summary["faults"]
    print(
        "shard killed at learner step",
        killed_at[0],
        "; run ended at",
        summary["learner_steps"],
        summary["faults"],
    )


def test_replay_fault_counts_of_a_report_without_updates_still_reach_the_summary(tmp_path):
    """A learner starved by a lost shard reports no update; its replay fault counters must not be dropped with it."""
    cfg, where = placed(
        parse_config(["--in-process", "--run-root", str(tmp_path), "--run-name", "run"])
    )
    trainer = Trainer(cfg, envs_lib.describe(cfg.env), make_run_dir(cfg), None, where)
    trainer.on_learner(
        {
            "learner/updates_in_call": 5,
            "learner/steps": 5,
            "loss/total": 1.0,
            "learner/policy_lag": 2.0,
            "replay/failed_calls": 0,
            "replay/lost_sequences": 0,
        }
    )
    trainer.on_learner(
        {
            "learner/updates_in_call": 0,
            "learner/steps": 5,
            "replay/failed_calls": 2,
            "replay/lost_sequences": 300,
        }
    )
    latest = trainer.log.latest
    assert (
        latest["replay/failed_calls"],
        latest["replay/lost_sequences"],
        latest["loss/total"],
    ) == (2, 300, 1.0)
    assert trainer.learner_steps == 5
    trainer.log.close()
