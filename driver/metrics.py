"""Run logging: TensorBoard scalars, a metrics.jsonl file, terminal progress and the
learning-curve PNG. Metric names are flat and namespaced (`actor/...`, `learner/...`,
`loss/...`, `eval/...`)."""

import io
import json
import sys
import time
from collections import deque
from pathlib import Path

from common.files import write_atomic


def keep_metrics_until(path: Path, env_steps: int) -> None:
    """Rewrite metrics.jsonl (atomically) without the lines logged past env_steps, and
    without a last line cut short by a crash: a resumed run goes on from a checkpoint's
    env steps, and what the lost segment logged after it would make the steps go backwards."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            if json.loads(line)["env_steps"] <= env_steps:
                kept.append(line.rstrip("\n") + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    write_atomic(path, "".join(kept).encode())


def _number(value: float | None, spec: str) -> str:
    """value in `spec`, or a dash as wide while there is none yet (no update, no evaluation)."""
    width = len(format(0.0, spec))
    return format(value, spec) if value is not None else "-".rjust(width)


class RunLogger:
    def __init__(
        self,
        run_dir: Path,
        config_text: str,
        print_every_s: float = 2.0,
        stream=None,
        resume_at: int | None = None,
    ):
        """resume_at: the env steps of the checkpoint a resumed run continues from; what was
        logged past them is dropped from metrics.jsonl and purged from TensorBoard."""
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        if resume_at is not None:
            keep_metrics_until(self.run_dir / "metrics.jsonl", resume_at)
        # purge_step: TensorBoard hides the events of earlier files at this step and later
        purge = None if resume_at is None else resume_at + 1
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge)
        self.writer.add_text("config", "```\n" + config_text + "\n```", 0)
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # line-buffered
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.print_every_s = print_every_s
        self.start = time.monotonic()
        self._last_print = 0.0
        self.env_steps = 0
        self.episodes = 0
        self.recent_returns = deque(maxlen=100)
        self.curve = []  # (env_steps, seconds, training return)
        self.evals = []  # (env_steps, seconds, eval mean)
        # ("eval" or "screen", mean) of the newest greedy evaluation, full or screen (progress line)
        self.last_greedy = None
        self.latest: dict[str, float] = {}

    def restore(self, env_steps: int, episodes: int, seconds: float) -> None:
        """Resume: counters and the clock continue from a checkpoint's figures."""
        self.env_steps, self.episodes = env_steps, episodes
        self.start = time.monotonic() - seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def scalars(self, metrics: dict[str, float], step: int | None = None) -> None:
        step = self.env_steps if step is None else step
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for key, value in clean.items():
            self.writer.add_scalar(key, value, step)
        self.latest.update(clean)
        self.jsonl.write(
            json.dumps({"env_steps": step, "time_s": round(self.elapsed(), 3), **clean}) + "\n"
        )

    def actor(self, stats: dict) -> None:
        self.env_steps += stats["env_steps"]
        self.episodes += stats["episodes"]
        for ret in stats["returns"]:
            self.recent_returns.append(ret)
            self.curve.append((self.env_steps, self.elapsed(), ret))
        sps = stats["env_steps"] / max(stats["seconds"], 1e-9)
        metrics = {
            "actor/env_steps_per_s": sps,
            "actor/episodes": self.episodes,
            "actor/inference_s": stats["inference_s"],
            "actor/rate_limit_wait_s": stats["wait_s"],
            "actor/policy_version": stats["version"],
            "actor/weight_pulls": stats["pulls"],
        }
        if stats["returns"]:
            metrics["actor/episode_return"] = sum(stats["returns"]) / len(stats["returns"])
            metrics["actor/episode_length"] = sum(stats["lengths"]) / len(stats["lengths"])
        self.scalars(metrics)

    def evaluation(self, returns, greedy: bool = True, env_steps: int | None = None) -> None:
        """Log an evaluation of the weights as of `env_steps` (default: now)."""
        tag = "eval/greedy_return" if greedy else "eval/sampled_return"
        mean = float(sum(returns) / len(returns))
        self.scalars({tag: mean, tag + "_min": float(min(returns))}, env_steps)
        if greedy:
            self.evals.append(
                (self.env_steps if env_steps is None else env_steps, self.elapsed(), mean)
            )
            self.last_greedy = ("eval", mean)

    def screening(self, returns, env_steps: int) -> None:
        """Log a screen (the cheap greedy look of --eval-screen-episodes that comes first) of the
        weights as of `env_steps`; not a point of the learning curve's evaluations."""
        mean = float(sum(returns) / len(returns))
        self.scalars({"eval/screen_return": mean}, env_steps)
        self.last_greedy = ("screen", mean)

    def recent_return(self) -> float:
        return (
            sum(self.recent_returns) / len(self.recent_returns)
            if self.recent_returns
            else float("nan")
        )

    def progress(self, force: bool = False, note: str = "") -> None:
        """The progress line (every print_every_s unless force), `note` at its end."""
        now = self.elapsed()
        if not force and now - self._last_print < self.print_every_s:
            return
        self._last_print = now
        m = self.latest
        kind, mean = self.last_greedy or ("eval", None)
        line = (
            f"[{now:7.1f}s] env {self.env_steps:>9,} ({self.env_steps / max(now, 1e-9):6.0f}/s) "
            f"| ep {self.episodes:>6,} | return {self.recent_return():7.1f} "
            f"| {kind:<6} {_number(mean, '7.1f')} "
            f"| learner {int(m.get('learner/steps', 0)):>7,} lag {m.get('learner/policy_lag', 0.0):5.1f} "
            f"({m.get('learner/policy_lag_env_steps', 0.0):6,.0f} env) "
            f"| loss {_number(m.get('loss/total'), '7.3f')}{note}"
        )
        if self.tty and not force:
            self.stream.write("\r" + line)
        else:
            self.stream.write(("\n" if self.tty else "") + line + "\n")
        self.stream.flush()

    @staticmethod
    def warm_up_plot() -> None:
        """Import matplotlib as plot() does (about 0.4 s), ahead of the end of a run."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401

    def plot(self, path: Path, title: str) -> Path | None:
        """Learning curve: training returns (and a moving average) and eval points, against env
        steps and against wall time. Returns the PNG path."""
        if not self.curve:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        steps, secs, rets = map(np.array, zip(*self.curve))
        window = max(1, min(50, len(rets) // 10))
        smooth = np.convolve(rets, np.ones(window) / window, mode="valid")
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, x, label in ((axes[0], steps, "env steps"), (axes[1], secs, "wall time (s)")):
            ax.plot(x, rets, ".", alpha=0.25, ms=3, label="training episode")
            ax.plot(x[window - 1 :], smooth, lw=2, label=f"training mean ({window})")
            if self.evals:
                e_steps, e_secs, e_means = map(np.array, zip(*self.evals))
                ax.plot(
                    e_steps if x is steps else e_secs,
                    e_means,
                    "o-",
                    color="C3",
                    label="greedy eval (mean)",
                )
            ax.set_xlabel(label)
            ax.set_ylabel("return")
            ax.grid(alpha=0.3)
        axes[0].legend(loc="lower right", fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
        plt.close(fig)
        write_atomic(Path(path), png.getvalue())
        return Path(path)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
        self.jsonl.close()
