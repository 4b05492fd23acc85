"""Stable-Baselines3 PPO on CartPole-v1 with the rl-baselines3-zoo hyperparameters,
measured like `launch.py`: wall time from process start, env steps, and solved = the
project's greedy 100-episode evaluation (separate env seeds) reaching 475.

  python -m bench.peers.sb3_ppo --seed 0 --max-seconds 300 --run-root /tmp/runs

Zoo, hyperparams/ppo.yml, CartPole-v1 (tuned): n_envs 8, n_timesteps 1e5, MlpPolicy,
n_steps 32, batch_size 256, gae_lambda 0.8, gamma 0.98, n_epochs 20, ent_coef 0.0,
learning_rate lin_0.001, clip_range lin_0.2 (lin_x: x * progress_remaining over
n_timesteps). The rest are SB3's defaults. One learn() call over n_timesteps keeps the
schedules exact; a callback evaluates between rollouts every --eval-every-steps env
steps and stops training once solved or out of time. One torch thread, CPU.
"""

import time

START = time.monotonic()

import torch  # noqa: E402

from bench.peers.harness import Judge, Policy, parse_args  # noqa: E402

ZOO = dict(
    n_envs=8,
    n_timesteps=100_000,
    policy="MlpPolicy",
    n_steps=32,
    batch_size=256,
    gae_lambda=0.8,
    gamma=0.98,
    n_epochs=20,
    ent_coef=0.0,
    learning_rate=0.001,
    clip_range=0.2,
)


def linear(start: float):
    """The zoo's lin_<start>: start * progress_remaining (1 -> 0 over n_timesteps)."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * start

    return schedule


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        lambda p: (
            p.add_argument(
                "--eval-every-steps", type=int, default=2048, help="env steps between evaluations"
            ),
            p.add_argument("--torch-threads", type=int, default=1),
        ),
    )
    torch.set_num_threads(args.torch_threads)
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    judge = Judge(args, START, "sb3-ppo")
    env = make_vec_env("CartPole-v1", n_envs=ZOO["n_envs"], seed=args.seed)
    model = PPO(
        ZOO["policy"],
        env,
        n_steps=ZOO["n_steps"],
        batch_size=ZOO["batch_size"],
        gae_lambda=ZOO["gae_lambda"],
        gamma=ZOO["gamma"],
        n_epochs=ZOO["n_epochs"],
        ent_coef=ZOO["ent_coef"],
        learning_rate=linear(ZOO["learning_rate"]),
        clip_range=linear(ZOO["clip_range"]),
        seed=args.seed,
        device="cpu",
        verbose=0,
    )

    def logits(obs: torch.Tensor) -> torch.Tensor:
        return model.policy.get_distribution(obs).distribution.logits

    policy = Policy(logits)
    state = {"reason": "", "next": args.eval_every_steps}

    class EvaluateBetweenRollouts(BaseCallback):
        def _on_rollout_start(self) -> None:  # after the previous rollout's update
            if self.num_timesteps >= state["next"]:
                while state["next"] <= self.num_timesteps:
                    state["next"] += args.eval_every_steps
                model.policy.set_training_mode(False)
                if judge.check(policy, self.num_timesteps):
                    state["reason"] = "solved"
            if not state["reason"] and judge.out_of_time():
                state["reason"] = "time budget spent"

        def _on_step(self) -> bool:
            return not state["reason"]

    model.learn(total_timesteps=ZOO["n_timesteps"], callback=EvaluateBetweenRollouts())
    reason = state["reason"]
    if not reason:  # the zoo's n_timesteps are spent: a last look
        model.policy.set_training_mode(False)
        judge.check(policy, model.num_timesteps)
        reason = "solved" if judge.solved_at else "env step budget spent"
    env_steps = (judge.solved_at or {}).get("env_steps", model.num_timesteps)
    minibatches = -(-ZOO["n_steps"] * ZOO["n_envs"] // ZOO["batch_size"])
    judge.finish(
        env_steps,
        model._n_updates * minibatches,
        reason,
        policy,
        {
            "peer": "stable-baselines3 " + __import__("stable_baselines3").__version__,
            "hyperparameters": ZOO,
            "total_env_steps": int(model.num_timesteps),
        },
    )


if __name__ == "__main__":
    main()
