"""Evaluation on separate env seeds: greedy (argmax) or sampled, a fixed number of episodes.

Every env of the evaluation vector runs a fixed quota of episodes, so short episodes
are not over-counted; the episodes counted are the first `quota[j]` of each env j.
Sub-env j is reset with seed `seed + j`. An episode whose env raised (common/vector_env.py)
is not counted: the rebuilt env plays another in its place, up to MAX_CUT_PER_EPISODE cut
episodes per episode asked for; past that the env cannot end an episode without an error, and the
evaluation (which would have played on forever) raises EnvFailure.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from actors.sampling import sample_categorical
from common.split import split
from common.vector_env import EnvFailure, VectorEnv

MAX_EVAL_ENVS = 50
MAX_CUT_PER_EPISODE = 10


class Episodes(NamedTuple):
    """Per-episode results in round order: the first episode of every env (env 0, 1, ...),
    then the second of those that run two, and so on; so episode k < num_envs is the first
    episode of sub-env k (the one a watched sub-env records)."""

    returns: np.ndarray  # [episodes] undiscounted returns
    lengths: np.ndarray  # [episodes] agent steps


def num_eval_envs(episodes: int) -> int:
    return min(episodes, MAX_EVAL_ENVS)


@torch.no_grad()
def play(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    env_id: str,
    episodes: int,
    seed: int,
    greedy: bool = True,
    watched=(),
    on_episode: Callable[[float, int], None] | None = None,
) -> Episodes:
    """Play `episodes` episodes with the policy logits_fn(obs [B, *O]) -> logits [B, A].

    watched: wrappers of the leading sub-envs (common/vector_env.VectorEnv), e.g. video
    recorders. on_episode(return, length) is called for each counted episode as it ends."""
    num_envs = num_eval_envs(episodes)
    quota = np.array(split(episodes, num_envs))
    envs = VectorEnv(env_id, num_envs, owner="evaluation", watched=watched)
    rng = np.random.default_rng(seed)
    try:
        obs = envs.reset(seed=seed)
        running = np.zeros(num_envs)
        steps = np.zeros(num_envs, dtype=np.int64)
        finished = [[] for _ in range(num_envs)]  # (return, length) per env
        cut = 0  # episodes an env error cut off
        while any(len(done) < q for done, q in zip(finished, quota)):
            logits = logits_fn(torch.as_tensor(obs))
            if greedy:
                action = logits.argmax(-1).numpy()
            else:
                action = sample_categorical(torch.softmax(logits, -1).numpy(), rng)
            obs, reward, terminated, truncated, _, lost = envs.step(action)
            running += reward
            steps += 1
            running[lost], steps[lost] = 0.0, 0
            cut += int(lost.sum())
            if cut > MAX_CUT_PER_EPISODE * episodes:
                done = sum(map(len, finished))
                raise EnvFailure(
                    f"evaluation: --env={env_id!r} raised in {cut} episodes while only {done} "
                    f"of {episodes} ended without an error; an evaluation needs episodes that end"
                )
            for j in np.flatnonzero(terminated | truncated):
                if len(finished[j]) < quota[j]:
                    finished[j].append((running[j], int(steps[j])))
                    if on_episode is not None:
                        on_episode(float(running[j]), int(steps[j]))
                running[j], steps[j] = 0.0, 0
    finally:
        envs.close()
    rounds = [
        per_env[k] for k in range(int(quota.max())) for per_env in finished if k < len(per_env)
    ]
    return Episodes(
        np.array([r for r, _ in rounds]), np.array([n for _, n in rounds], dtype=np.int64)
    )


def evaluate(
    net: torch.nn.Module, env_id: str, episodes: int, seed: int, greedy: bool = True
) -> np.ndarray:
    """Returns the undiscounted returns of `episodes` episodes of net.policy_logits [episodes]."""
    return play(net.policy_logits, env_id, episodes, seed, greedy).returns
