"""What the peer runners share with each other and with `launch.py`: the command line
(`--seed`, `--max-seconds`, `--run-root`, `--run-name`), the greedy evaluation that
decides "solved" and the summary.json that bench/solve.py reads.

The evaluation is the project's own (actors/evaluation.py) on the same env seeds as a
`launch.py` run of that seed: a 10-episode screen on its own seeds first, then 100
greedy episodes; solved = mean >= the env's reward threshold (475 for CartPole-v1).
A peer's policy only has to offer `policy_logits(obs [B, O] float32) -> [B, A]`.
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

    def __init__(self, args: argparse.Namespace, start: float, name: str):
        self.args, self.start, self.name = args, start, name
        self.solve_return = envs_lib.describe(ENV_ID).solve_return
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
        """Screen, then (if it reaches the bar) the full evaluation; True once solved."""
        t = time.monotonic()
        self.evaluations += 1
        screen = evaluate(
            policy,
            ENV_ID,
            self.args.eval_screen_episodes,
            envs_lib.derive_seed(self.args.seed, "screen"),
            greedy=True,
        )
        full = None
        if screen.mean() >= self.solve_return:
            returns = evaluate(policy, ENV_ID, self.args.eval_episodes, self.eval_seed, greedy=True)
            full = float(returns.mean())
            self.last_greedy = full
            if full >= self.solve_return and self.solved_at is None:
                self.solved_at = dict(
                    seconds=round(self.elapsed(), 2),
                    env_steps=int(env_steps),
                    eval_mean=full,
                    eval_std=float(returns.std()),
                )
        self.eval_seconds += time.monotonic() - t
        self.curve.append((round(self.elapsed(), 2), int(env_steps), float(screen.mean()), full))
        print(
            f"[{self.elapsed():7.1f}s] {self.name} env {env_steps:>8,} | screen {screen.mean():6.1f}"
            + (f" | eval {full:6.1f}" if full is not None else ""),
            flush=True,
        )
        return self.solved_at is not None

    def finish(
        self, env_steps: int, learner_steps: int, reason: str, policy: Policy, extra: dict
    ) -> dict:
        if self.solved_at is None and np.isnan(self.last_greedy):
            self.last_greedy = float(
                evaluate(policy, ENV_ID, self.args.eval_episodes, self.eval_seed).mean()
            )
        run_dir = Path(self.args.run_root) / (
            self.args.run_name or f"{self.name}-s{self.args.seed}"
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        summary = {
            "env": ENV_ID,
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
            f"{head} {ENV_ID} [{self.name}, seed {self.args.seed}] in {at.get('seconds', summary['seconds']):.1f} s, "
            f"{at.get('env_steps', env_steps):,} env steps, {learner_steps:,} learner steps: "
            f"greedy eval {summary['greedy_eval_mean']:.1f}",
            flush=True,
        )
        return summary
