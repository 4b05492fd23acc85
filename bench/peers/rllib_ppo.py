"""RLlib PPO (the installed Ray's own) on CartPole-v1 with the settings of Ray's tuned
CartPole example (rllib/examples/algorithms/ppo/cartpole_ppo.py, formerly
rllib/tuned_examples/ppo/cartpole_ppo.py), measured like `launch.py`: wall time from
process start (Ray start-up included), env steps, and solved = the project's greedy
100-episode evaluation (separate env seeds) reaching 475.

  python -m bench.peers.rllib_ppo --seed 0 --max-seconds 300 --run-root /tmp/runs

Example settings: lr 0.0003, num_epochs 6, vf_loss_coeff 0.01, one hidden layer of 32
linear units with the value function sharing it (fcnet_hiddens [32], fcnet_activation
'linear', vf_share_layers True); everything else PPOConfig's defaults (train batch
4000 env steps, minibatch 128, gamma 0.99, lambda 1.0, clip 0.3, KL loss on). The
example asks for 4 env runners x 16 envs and one remote learner; a machine with
fewer CPUs than that needs (runners + learner + driver) gets as many runners as fit
next to the driver (at least one) and the learner in the driver (--num-learners 0).
One training iteration is one chunk; the greedy evaluation runs after each.
"""

import os
import time

START = time.monotonic()

import torch  # noqa: E402

from bench.peers.harness import Judge, Policy, parse_args  # noqa: E402

EXAMPLE = dict(
    lr=0.0003,
    num_epochs=6,
    vf_loss_coeff=0.01,
    fcnet_hiddens=[32],
    fcnet_activation="linear",
    vf_share_layers=True,
    num_env_runners=4,
    num_envs_per_env_runner=16,
    num_learners=1,
)


def fit_to_machine(cpus: int) -> dict:
    """The example's scale where the machine has room for it (one CPU per runner, learner and
    driver), else as many runners as fit next to the driver and a local learner."""
    if cpus >= EXAMPLE["num_env_runners"] + EXAMPLE["num_learners"] + 1:
        return dict(
            num_env_runners=EXAMPLE["num_env_runners"], num_learners=EXAMPLE["num_learners"]
        )
    return dict(num_env_runners=max(1, min(EXAMPLE["num_env_runners"], cpus - 1)), num_learners=0)


def main() -> None:
    cpus = os.cpu_count() or 1
    fit = fit_to_machine(cpus)
    args = parse_args(
        __doc__.splitlines()[0],
        lambda p: (
            p.add_argument("--num-env-runners", type=int, default=fit["num_env_runners"]),
            p.add_argument(
                "--num-envs-per-env-runner", type=int, default=EXAMPLE["num_envs_per_env_runner"]
            ),
            p.add_argument("--num-learners", type=int, default=fit["num_learners"]),
            p.add_argument(
                "--max-env-steps",
                type=int,
                default=4_000_000,
                help="the example's --stop-timesteps",
            ),
            p.add_argument("--torch-threads", type=int, default=1),
        ),
    )
    torch.set_num_threads(args.torch_threads)
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    judge = Judge(args, START, "rllib-ppo")
    ray.init(num_cpus=cpus, log_to_driver=False)
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(
            num_env_runners=args.num_env_runners,
            num_envs_per_env_runner=args.num_envs_per_env_runner,
        )
        .learners(num_learners=args.num_learners)
        .training(
            lr=EXAMPLE["lr"],
            num_epochs=EXAMPLE["num_epochs"],
            vf_loss_coeff=EXAMPLE["vf_loss_coeff"],
        )
        .rl_module(
            model_config=DefaultModelConfig(
                fcnet_hiddens=EXAMPLE["fcnet_hiddens"],
                fcnet_activation=EXAMPLE["fcnet_activation"],
                vf_share_layers=EXAMPLE["vf_share_layers"],
            )
        )
        .debugging(seed=args.seed)
    )
    algo = config.build_algo()
    module = algo.get_module()

    def logits(obs: torch.Tensor) -> torch.Tensor:
        return module.forward_inference({"obs": obs})["action_dist_inputs"]

    policy = Policy(logits)
    env_steps, iterations, reason = 0, 0, ""
    batch, minibatch = config.train_batch_size_per_learner, config.minibatch_size
    while not reason:
        result = algo.train()
        iterations += 1
        env_steps = int(result[ENV_RUNNER_RESULTS].get(NUM_ENV_STEPS_SAMPLED_LIFETIME, env_steps))
        module = algo.get_module()
        if judge.check(policy, env_steps):
            reason = "solved"
        elif env_steps >= args.max_env_steps:
            reason = "env step budget spent"
        elif judge.out_of_time():
            reason = "time budget spent"
    learner_steps = iterations * EXAMPLE["num_epochs"] * -(-batch // minibatch)
    judge.finish(
        (judge.solved_at or {}).get("env_steps", env_steps),
        learner_steps,
        reason,
        policy,
        {
            "peer": "ray[rllib] " + ray.__version__,
            "iterations": iterations,
            "hyperparameters": dict(
                EXAMPLE,
                num_env_runners=args.num_env_runners,
                num_envs_per_env_runner=args.num_envs_per_env_runner,
                num_learners=args.num_learners,
                train_batch_size=batch,
                minibatch_size=minibatch,
            ),
        },
    )
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
