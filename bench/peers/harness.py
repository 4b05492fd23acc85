"""What the peer runners share with each other and with `launch.py`: the command line
(`--seed`, `--max-seconds`, `--run-root`, `--run-name`), the greedy evaluation that
decides "solved" and the summary.json that bench/solve.py reads.

The evaluation is the project's own (actors/evaluation.py) on the same env seeds as a
`launch.py` run of that seed: a 10-episode screen on its own seeds first, then 100
greedy episodes; solved = mean >= the env's reward threshold (475 for CartPole-v1).
An env without a threshold (MinAtar) gets no screen: every evaluation is the full one and
the run never solves, as in launch.py. Each full evaluation is also a line of the run's
metrics.jsonl, in launch.py's form (env_steps, time_s, eval/greedy_return), so that one
reader serves both. A peer's policy only has to offer
`policy_logits(obs [B, *O] float32) -> [B, A]`, with obs as common/envs.make_env gives them.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from actors.evaluation import evaluate
from common import envs as envs_lib
from common.cli import OneLineParser

ENV_ID = "CartPole-v1"


def parse_args(description: str, extra=None) -> argparse.Namespace:
    parser = OneLineParser(description=description, exit_on_usage=True)
    parser.add_argument("--seed", type=int, default=0, help="the run seed, as launch.py --seed")
    parser.add_argument(
        "--max-seconds", type=float, default=300.0, help="time budget from process start"
    )
    parser.add_argument("--run-root", default="runs")
    parser.add_argument("--run-name", default="")
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--eval-screen-episodes", type=int, default=10)
    if extra:
        extra(parser)
    return parser.parse_args()


class Policy(torch.nn.Module):
    """Adapter: any callable obs -> logits as the `policy_logits` evaluate() expects."""

    def __init__(self, logits_fn):
        super().__init__()
        self.logits_fn = logits_fn

    @torch.no_grad()
    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self.logits_fn(obs.float())


class Judge:
    """Runs screen + full greedy evaluations and keeps the bookkeeping launch.py keeps."""

    def __init__(self, args: argparse.Namespace, start: float, name: str, env_id: str = ENV_ID):
        self.args, self.start, self.name, self.env_id = args, start, name, env_id
        self.solve_return = envs_lib.describe(env_id).solve_return
        self.run_dir = Path(args.run_root) / (args.run_name or f"{name}-s{args.seed}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = self.run_dir / "metrics.jsonl"
        self.metrics.write_text("")
        self.eval_seed = envs_lib.derive_seed(args.seed, "eval")
        self.solved_at = None
        self.last_greedy = float("nan")
        self.evaluations = 0
        self.eval_seconds = 0.0
        self.curve = []  # (seconds, env_steps, screen mean, full mean or None)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def out_of_time(self) -> bool:
        return self.elapsed() >= self.args.max_seconds

    def check(self, policy: Policy, env_steps: int) -> bool:
        """Screen, then (if it reaches the bar) the full evaluation; True once solved. Without a
        bar, the full evaluation only."""
        t = time.monotonic()
        self.evaluations += 1
        screen = None
        if self.solve_return is not None:
            screen = evaluate(
                policy,
                self.env_id,
                self.args.eval_screen_episodes,
                envs_lib.derive_seed(self.args.seed, "screen"),
                greedy=True,
            )
        full = None
        if screen is None or screen.mean() >= self.solve_return:
            returns = evaluate(
                policy, self.env_id, self.args.eval_episodes, self.eval_seed, greedy=True
            )
            full = float(returns.mean())
            self.last_greedy = full
            self.log_evaluation(env_steps, returns)
            if self.solve_return is not None and full >= self.solve_return and not self.solved_at:
                self.solved_at = dict(
                    seconds=round(self.elapsed(), 2),
                    env_steps=int(env_steps),
                    eval_mean=full,
                    eval_std=float(returns.std()),
                )
        self.eval_seconds += time.monotonic() - t
        screen_mean = None if screen is None else float(screen.mean())
        self.curve.append((round(self.elapsed(), 2), int(env_steps), screen_mean, full))
        print(
            f"[{self.elapsed():7.1f}s] {self.name} env {env_steps:>8,}"
            + (f" | screen {screen_mean:6.1f}" if screen is not None else "")
            + (f" | eval {full:6.1f}" if full is not None else ""),
            flush=True,
        )
        return self.solved_at is not None

    def log_evaluation(self, env_steps: int, returns) -> None:
        """One metrics.jsonl line as launch.py's run logger writes it for a greedy evaluation."""
        line = {
            "env_steps": int(env_steps),
            "time_s": round(self.elapsed(), 3),
            "eval/greedy_return": float(returns.mean()),
            "eval/greedy_return_min": float(returns.min()),
        }
        with self.metrics.open("a") as f:
            f.write(json.dumps(line) + "\n")

    def finish(
        self, env_steps: int, learner_steps: int, reason: str, policy: Policy, extra: dict
    ) -> dict:
        if self.solved_at is None and np.isnan(self.last_greedy):
            self.last_greedy = float(
                evaluate(policy, self.env_id, self.args.eval_episodes, self.eval_seed).mean()
            )
        run_dir = self.run_dir
        summary = {
            "env": self.env_id,
            "preset": self.name,
            "seed": self.args.seed,
            "stop_reason": reason,
            "solved": self.solved_at is not None,
            "seconds": round(self.elapsed(), 1),
            "env_steps": int(env_steps),
            "learner_steps": int(learner_steps),
            "greedy_eval_mean": self.solved_at["eval_mean"] if self.solved_at else self.last_greedy,
            "solved_at": self.solved_at,
            "evaluations": self.evaluations,
            "eval_seconds": round(self.eval_seconds, 2),
            "curve": self.curve,
            "run_dir": str(run_dir),
            **extra,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        head = "solved" if summary["solved"] else f"stopped ({reason})"
        at = self.solved_at or {}
        print(
            f"{head} {self.env_id} [{self.name}, seed {self.args.seed}] in {at.get('seconds', summary['seconds']):.1f} s, "
            f"{at.get('env_steps', env_steps):,} env steps, {learner_steps:,} learner steps: "
            f"greedy eval {summary['greedy_eval_mean']:.1f}",
            flush=True,
        )
        return summary
