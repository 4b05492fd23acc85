"""The driver's evaluation bookkeeping (driver/trainer.Trainer), in-process and without training:
which weights solve a run, and that exactly those are exported and summarised."""

import json

import numpy as np
import pytest
import torch

from common import envs as envs_lib
from common.config import parse_config
from common.networks import build_network
from driver.trainer import Trainer, make_run_dir
from driver.wiring import placed


def make_trainer(tmp_path, *flags):
    cfg = parse_config(
        ["--in-process", "--run-root", str(tmp_path), "--run-name", "run", "--seed", "3", *flags]
    )
    info = envs_lib.describe(cfg.env)
    cfg, where = placed(cfg)
    trainer = Trainer(cfg, info, make_run_dir(cfg), None, where)
    trainer.build()
    return trainer


def net_with_bias(trainer, bias: float):
    """A network whose policy logits are (0, bias) for any observation: greedy always takes action 1 when bias > 0."""
    net = build_network(trainer.cfg.network_spec(trainer.info)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        head = net.policy_logits(torch.zeros(1, 4))
        assert torch.equal(head, torch.zeros(1, 2))
        last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
        policy_layer = next(m for m in reversed(last) if m.out_features == 2)
        policy_layer.bias.copy_(torch.tensor([0.0, bias]))
    assert torch.allclose(net.policy_logits(torch.ones(3, 4)), torch.tensor([[0.0, bias]] * 3))
    return net


def test_the_first_passing_evaluation_solves_and_later_ones_do_not_replace_it(tmp_path):
    trainer = make_trainer(tmp_path, "--solve-return", "100")
    first, second = net_with_bias(trainer, 1.0), net_with_bias(trainer, 2.0)
    # mean 94.5 < 100: not solved
    trainer._judged(first, 7, 1234, None, np.array([90.0, 99.0]))
    assert trainer.solved_at is None and trainer.solved_net is None and trainer.best_eval == 94.5
    trainer._judged(first, 9, 2048, np.array([120.0]), np.array([100.0, 110.0]))
    assert trainer.solved_net is first
    assert trainer.solved_at["env_steps"] == 2048 and trainer.solved_at["version"] == 9
    assert trainer.solved_at["eval_mean"] == 105.0 and trainer.solved_at["eval_std"] == 5.0
    # better, but the run was solved before
    trainer._judged(second, 11, 4096, None, np.array([200.0, 200.0]))
    assert (
        trainer.solved_net is first
        and trainer.solved_at["env_steps"] == 2048
        and trainer.best_eval == 200.0
    )
    trainer.eval_thread.shutdown()
    trainer.log.close()


def test_finish_exports_the_weights_that_solved_not_the_newest(tmp_path):
    trainer = make_trainer(tmp_path, "--solve-return", "100", "--sampled-eval-episodes", "3")
    solved = net_with_bias(trainer, 3.0)
    trainer._judged(solved, 5, 512, None, np.array([150.0]))
    # newer weights, greedy on action 0
    trainer.latest = (net_with_bias(trainer, -3.0), 6)
    summary = trainer.finish("solved")
    policy = torch.export.load(str(trainer.run_dir / "policy.pt2")).module()
    assert torch.allclose(policy(torch.zeros(2, 4)), torch.tensor([[0.0, 3.0]] * 2))
    written = json.loads((trainer.run_dir / "summary.json").read_text())
    assert written == summary and summary["solved"] and summary["solved_at"]["env_steps"] == 512
    assert summary["greedy_eval_mean"] == 150.0


def test_newest_waits_for_the_stores_answer_on_ray():
    """An evaluation snapshot must judge the weights published by now: on Ray, poll() right
    after request() has no answer yet (the evaluation would judge the previous snapshot's
    weights, one evaluation period old); newest() waits for it."""
    ray = pytest.importorskip("ray")
    from transport.ray_weights import RayWeightClient, RayWeightPublisher
    from transport.weight_store import WeightStore

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        store = ray.remote(num_cpus=0)(WeightStore).remote()
        net = build_network(
            parse_config(["--num-cpus", "1"]).network_spec(envs_lib.describe("CartPole-v1"))
        )
        publisher = RayWeightPublisher(store)
        publisher.publish(0, net)
        client = RayWeightClient(store)
        assert client.wait()[0] == 0
        publisher.publish(7, net)
        ray.get(store.latest.remote())  # the publish has landed in the store
        got = client.newest()
        assert got is not None and got[0] == 7 and client.version == 7
        assert client.newest() is None  # nothing newer since
    finally:
        ray.shutdown()


def test_the_solving_evaluation_exports_on_its_thread_and_finish_does_not_again(
    tmp_path, monkeypatch
):
    """The export is off the path from the solve to the exit: the evaluation job that
    passes writes policy.pt2 before the driver hears of it, and finish() does not export again."""
    trainer = make_trainer(
        tmp_path,
        "--solve-return",
        "5",
        "--eval-episodes",
        "2",
        "--eval-screen-episodes",
        "1",
        "--sampled-eval-episodes",
        "1",
    )
    # always action 1: about 10 steps an episode
    solved = net_with_bias(trainer, 3.0)
    screen, full, ended = trainer._evaluation_job(solved)
    assert full is not None and full.mean() >= 5 and (trainer.run_dir / "policy.pt2").exists()
    trainer._judged(solved, 5, 512, screen, full, ended)
    exports = []
    monkeypatch.setattr("learner.export.export_policy", lambda *args: exports.append(args))
    summary = trainer.finish("solved")
    assert exports == [] and trainer.exported_net is solved
    policy = torch.export.load(str(trainer.run_dir / "policy.pt2")).module()
    assert torch.allclose(policy(torch.zeros(2, 4)), torch.tensor([[0.0, 3.0]] * 2))
    timeline = summary["timeline"]
    assert timeline["solved"] <= timeline["export"] <= timeline["finish"] <= timeline["summary"]


def test_no_evaluation_starts_after_the_run_is_solved(tmp_path, monkeypatch):
    """Another evaluation after the solving one would hold the exit up, and could write policy.pt2 over the one that passed."""
    trainer = make_trainer(tmp_path, "--solve-return", "100", "--eval-every-env-steps", "1")
    trainer._judged(net_with_bias(trainer, 1.0), 5, 512, None, np.array([150.0]))
    trainer.log.env_steps = 10_000  # an evaluation is due
    monkeypatch.setattr(
        trainer, "_evaluation_job", lambda net: pytest.fail("an evaluation started")
    )
    trainer.maybe_evaluate()
    assert trainer.evaluation is None
    trainer.eval_thread.shutdown()
    trainer.log.close()


def test_a_failed_export_leaves_the_previous_policy_whole(tmp_path, monkeypatch):
    from learner import export

    trainer = make_trainer(tmp_path)
    path = trainer.run_dir / "policy.pt2"
    export.export_policy(net_with_bias(trainer, 1.0), trainer.info, path)
    before = path.read_bytes()

    def cut_short(program, f):
        with open(f, "wb") as out:
            out.write(before[:100])
        raise OSError("disk full")

    monkeypatch.setattr(torch.export, "save", cut_short)
    with pytest.raises(OSError):
        export.export_policy(net_with_bias(trainer, 2.0), trainer.info, path)
    assert path.read_bytes() == before
    trainer.eval_thread.shutdown()
    trainer.log.close()


def test_the_final_checkpoint_is_saved_while_finish_goes_on(tmp_path, monkeypatch):
    """On Ray the final checkpoint waits for the learner's call in flight; the sampled evaluation,
    the export and the plot do not wait for it, and summary.json comes after it."""
    import threading

    trainer = make_trainer(tmp_path, "--solve-return", "100", "--sampled-eval-episodes", "1")
    trainer._judged(net_with_bias(trainer, 1.0), 5, 512, None, np.array([150.0]))
    plotted, order = threading.Event(), []
    real_plot = trainer.log.plot

    def plot(*args):
        real_plot(*args)
        plotted.set()

    monkeypatch.setattr(trainer.log, "plot", plot)

    def slow_checkpoint(force=False):
        order.append(("checkpoint saw the plot", plotted.wait(timeout=10)))

    monkeypatch.setattr(trainer, "maybe_checkpoint", slow_checkpoint)
    summary = trainer.finish("solved")
    assert order == [("checkpoint saw the plot", True)]
    assert (
        summary["timeline"]["plot"]
        <= summary["timeline"]["final_checkpoint"]
        <= summary["timeline"]["summary"]
    )


def test_the_sampled_evaluation_plays_env_seeds_no_other_role_plays(tmp_path, monkeypatch):
    """The final sampled evaluation must not replay the greedy evaluation's envs (it once ran on
    its seed + 1, so all but one of them), the screen's, the start-up check's or an actor's:
    every env seed each of them resets an env with (seed + j for env j) is collected and
    the sampled evaluation's must meet none of the others'."""
    from actors.evaluation import num_eval_envs
    from driver import trainer as trainer_module

    trainer = make_trainer(tmp_path, "--solve-return", "100")
    played = []  # (greedy, env seeds)

    def recording_evaluate(net, env_id, episodes, seed, greedy=True):
        played.append((greedy, set(range(seed, seed + num_eval_envs(episodes)))))
        return np.full(episodes, 150.0 if greedy else 0.0)

    monkeypatch.setattr(trainer_module, "evaluate", recording_evaluate)
    net = net_with_bias(trainer, 1.0)
    trainer._judge(net)  # the screen, then the full greedy evaluation
    trainer.latest = (net, 1)
    trainer.finish("budget")
    cfg = trainer.cfg
    others = set().union(*(seeds for greedy, seeds in played if greedy))
    assert len([greedy for greedy, _ in played if greedy]) >= 2  # screen and full at least
    for actor in trainer.components.actors:
        others |= set(range(actor.env_seed, actor.env_seed + cfg.envs_per_actor))
    others.add(envs_lib.derive_seed(cfg.seed, "check"))  # one env (driver/preflight.py)
    (sampled,) = [seeds for greedy, seeds in played if not greedy]
    assert len(sampled) == num_eval_envs(cfg.sampled_eval_episodes) > 1
    assert sampled.isdisjoint(others), sorted(sampled & others)
