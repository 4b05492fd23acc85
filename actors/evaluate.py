"""Evaluation on separate env seeds: greedy (argmax) or sampled, a fixed number of episodes.

Every env of the evaluation vector runs a fixed quota of episodes, so short episodes
are not over-counted; returns are those of the first `quota` episodes of each env. An
episode whose env raised (common/vector_env.py) is not counted: the rebuilt env plays
another in its place.
"""
import numpy as np
import torch

from common.sampling import sample_categorical
from common.vector_env import VectorEnv
from replay.client import split

MAX_EVAL_ENVS = 50


@torch.no_grad()
def evaluate(net: torch.nn.Module, env_id: str, episodes: int, seed: int, greedy: bool = True) -> np.ndarray:
    """Returns the undiscounted returns of `episodes` episodes [episodes]."""
    num_envs = min(episodes, MAX_EVAL_ENVS)
    quota = np.array(split(episodes, num_envs))
    envs = VectorEnv(env_id, num_envs, owner="evaluation")
    rng = np.random.default_rng(seed)
    try:
        obs = envs.reset(seed=seed)
        running = np.zeros(num_envs)
        finished = [[] for _ in range(num_envs)]
        done_count = np.zeros(num_envs, dtype=np.int64)
        while (done_count < quota).any():
            logits = net.policy_logits(torch.as_tensor(obs))
            if greedy:
                action = logits.argmax(-1).numpy()
            else:
                action = sample_categorical(torch.softmax(logits, -1).numpy(), rng)
            obs, reward, terminated, truncated, _, lost = envs.step(action)
            running += reward
            running[lost] = 0.0
            for j in np.flatnonzero(terminated | truncated):
                if done_count[j] < quota[j]:
                    finished[j].append(running[j])
                    done_count[j] += 1
                running[j] = 0.0
    finally:
        envs.close()
    return np.array([r for per_env in finished for r in per_env])
