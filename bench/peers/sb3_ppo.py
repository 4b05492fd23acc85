"""Stable-Baselines3 PPO on CartPole-v1 with the rl-baselines3-zoo hyperparameters,
measured like `launch.py`: wall time from process start, env steps, and solved = the
project's greedy 100-episode evaluation (separate env seeds) reaching 475. With
`--env MinAtar/...` it is bench/minatar.py's peer: gymnax-blines' PPO settings and the MinAtar
paper's network, judged by the same greedy evaluation as launch.py's runs of that seed.

  python -m bench.peers.sb3_ppo --seed 0 --max-seconds 300 --run-root /tmp/runs
  python -m bench.peers.sb3_ppo --env MinAtar/Breakout-v1 --max-env-steps 1000000 \
      --eval-every-steps 50000 --eval-episodes 30 --seed 0 --max-seconds 3600

Zoo, hyperparams/ppo.yml, CartPole-v1 (tuned): n_envs 8, n_timesteps 1e5, MlpPolicy,
n_steps 32, batch_size 256, gae_lambda 0.8, gamma 0.98, n_epochs 20, ent_coef 0.0,
learning_rate lin_0.001, clip_range lin_0.2 (lin_x: x * progress_remaining over
n_timesteps). The rest are SB3's defaults. One learn() call over n_timesteps keeps the
schedules exact; a callback evaluates between rollouts every --eval-every-steps env
steps and stops training once solved or out of time. One torch thread, CPU.

MinAtar (gymnax-blines, agents/<Game>-MinAtar/ppo.yaml, the same for Breakout, SpaceInvaders
and Asterix; its PPO curves are the 1M-frame PPO figures bench/minatar.py is compared with):
num_train_envs 64, n_steps 128, n_minibatch 8 (batch 8192 / 8 = 1024), epoch_ppo 4, lr 5e-4
constant after a linear warm-up from 0 over the first 5% of the steps, clip 0.2, gae_lambda
0.95, gamma 0.999, entropy 0.01, critic 0.5, max_grad_norm 0.5. Its network was a 2x256 MLP on
the flattened grid; here it is the MinAtar paper's instead (one 3x3 conv of 16 channels, ReLU,
flatten, 128 units, ReLU; linear policy and value heads on those 128 features, shared), as
the issue asks, so that both sides see the grid through the same torso. n_timesteps is
--max-env-steps (the warm-up is 5% of it); training stops at the first rollout boundary at or
past it (up to 64 x 128 = 8192 env steps over). The envs are common/envs.make_env's (uint8
0/255 grids, which SB3 treats as images: channels moved first, divided by 255).
"""

import time

START = time.monotonic()

import torch  # noqa: E402

from bench.peers.harness import ENV_ID, Judge, Policy, parse_args  # noqa: E402
from common import envs as envs_lib  # noqa: E402

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

GYMNAX_MINATAR = dict(
    n_envs=64,
    n_steps=128,
    batch_size=1024,
    n_epochs=4,
    learning_rate=5e-4,
    warmup_fraction=0.05,
    clip_range=0.2,
    gae_lambda=0.95,
    gamma=0.999,
    ent_coef=0.01,
    vf_coef=0.5,
    max_grad_norm=0.5,
    conv_channels=16,
    hidden=128,
)


def linear(start: float):
    """The zoo's lin_<start>: start * progress_remaining (1 -> 0 over n_timesteps)."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * start

    return schedule


def warmed_up(peak: float, fraction: float):
    """gymnax-blines' schedule with lr_begin == lr_end: 0 -> peak over the first `fraction` of
    the steps, then peak."""

    def schedule(progress_remaining: float) -> float:
        done = 1.0 - progress_remaining
        return peak * min(1.0, done / fraction) if fraction > 0 else peak

    return schedule


def minatar_extractor(channels: int, hidden: int):
    """The MinAtar paper's torso as an SB3 features extractor (built once SB3 is imported):
    [B, C, 10, 10] in [0, 1] -> conv 3x3 (channels) -> ReLU -> flatten -> hidden -> ReLU."""
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class MinAtarTorso(BaseFeaturesExtractor):
        def __init__(self, observation_space):
            super().__init__(observation_space, features_dim=hidden)
            c, h, w = observation_space.shape  # channels first: SB3 transposed the images
            self.net = torch.nn.Sequential(
                torch.nn.Conv2d(c, channels, kernel_size=3, stride=1),
                torch.nn.ReLU(),
                torch.nn.Flatten(),
                torch.nn.Linear(channels * (h - 2) * (w - 2), hidden),
                torch.nn.ReLU(),
            )

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.net(obs)

    return MinAtarTorso


def cartpole_kwargs() -> dict:
    """PPO's arguments for the zoo's CartPole-v1 setting (ZOO)."""
    keys = ("n_steps", "batch_size", "gae_lambda", "gamma", "n_epochs", "ent_coef")
    return dict(
        policy=ZOO["policy"],
        learning_rate=linear(ZOO["learning_rate"]),
        clip_range=linear(ZOO["clip_range"]),
        **{k: ZOO[k] for k in keys},
    )


def minatar_kwargs() -> dict:
    """PPO's arguments for gymnax-blines' MinAtar setting with the MinAtar paper's network."""
    h = GYMNAX_MINATAR
    keys = ("n_steps", "batch_size", "n_epochs", "clip_range", "gae_lambda", "gamma", "ent_coef")
    return dict(
        policy="CnnPolicy",
        learning_rate=warmed_up(h["learning_rate"], h["warmup_fraction"]),
        vf_coef=h["vf_coef"],
        max_grad_norm=h["max_grad_norm"],
        policy_kwargs=dict(
            features_extractor_class=minatar_extractor(h["conv_channels"], h["hidden"]),
            net_arch=dict(pi=[], vf=[]),  # linear heads on the torso's 128 features
        ),
        **{k: h[k] for k in keys},
    )


def main() -> None:
    def flags(p):
        p.add_argument(
            "--eval-every-steps", type=int, default=2048, help="env steps between evaluations"
        )
        p.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads")
        p.add_argument("--env", default=ENV_ID, help="CartPole-v1 or a MinAtar/<Game>-v1 id")
        p.add_argument(
            "--max-env-steps",
            type=int,
            default=None,
            help="MinAtar: the env-step budget (n_timesteps); CartPole: the zoo's 100k",
        )

    args = parse_args(__doc__.splitlines()[0], flags)
    torch.set_num_threads(args.torch_threads)
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    minatar = args.env.startswith("MinAtar/")
    if not minatar and args.env != ENV_ID:
        raise SystemExit(f"sb3_ppo.py: --env {args.env!r}: allowed: {ENV_ID} or MinAtar/<Game>-v1")
    judge = Judge(args, START, "sb3-ppo", args.env)
    if minatar:
        budget = args.max_env_steps or 5_000_000
        hyper = {**GYMNAX_MINATAR, "n_timesteps": budget, "policy": "CnnPolicy, MinAtar torso"}
        env = make_vec_env(
            lambda: envs_lib.make_env(args.env), n_envs=hyper["n_envs"], seed=args.seed
        )
        kwargs = minatar_kwargs()
    else:
        budget, hyper = ZOO["n_timesteps"], ZOO
        env = make_vec_env(ENV_ID, n_envs=ZOO["n_envs"], seed=args.seed)
        kwargs = cartpole_kwargs()
    model = PPO(env=env, seed=args.seed, device="cpu", verbose=0, **kwargs)

    def logits(obs: torch.Tensor) -> torch.Tensor:
        if obs.dim() == 4:  # [B, H, W, C] grids as make_env gives them -> SB3's [B, C, H, W]
            obs = obs.permute(0, 3, 1, 2)
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

    model.learn(total_timesteps=budget, callback=EvaluateBetweenRollouts())
    reason = state["reason"]
    # A last look at the final weights: once the budget is spent, and (MinAtar, as launch.py's
    # runs do) also when time ran out
    if not reason or (minatar and reason == "time budget spent"):
        model.policy.set_training_mode(False)
        judge.check(policy, model.num_timesteps)
        reason = reason or ("solved" if judge.solved_at else "env step budget spent")
    env_steps = (judge.solved_at or {}).get("env_steps", model.num_timesteps)
    minibatches = -(-hyper["n_steps"] * hyper["n_envs"] // hyper["batch_size"])
    judge.finish(
        env_steps,
        model._n_updates * minibatches,
        reason,
        policy,
        {
            "peer": "stable-baselines3 " + __import__("stable_baselines3").__version__,
            "hyperparameters": hyper,
            "total_env_steps": int(model.num_timesteps),
        },
    )


if __name__ == "__main__":
    main()
