"""EnvPool (a C++ vectorised env with its own worker threads) set up as common/envs.py sets up
an Atari env: the Muesli paper's setting, the same constants.

  sticky actions 0.25 (per emulator frame, inside ALE, as ALE/Pong-v5 with frameskip=1),
  the full 18-action set, up to 30 no-op starts, frame skip 4 with a max over the last two
  frames, 84x84 greyscale with area interpolation (OpenCV INTER_AREA, as AtariPreprocessing),
  the last 4 frames stacked -> uint8 [4, 84, 84]; no fire reset, no episodic life, no reward
  clipping; an episode ends at 108,000 emulator frames (27,000 agent steps), as ALE v5's
  max_num_frames_per_episode.

Optional: `pip install envpool==0.8.4` (it needs gym, dm-env and optree). bench/throughput.py
measures it against gymnasium's envs; the actors do not use it (docs/benchmarks.md says why).
"""

from common import envs as envs_lib

MAX_EPISODE_FRAMES = 108_000


def task_id(env_id: str) -> str:
    """EnvPool's id of an ALE id: 'ALE/Pong-v5' -> 'Pong-v5'; EnvError for anything else."""
    if not env_id.startswith("ALE/") or not env_id.endswith("-v5"):
        raise envs_lib.EnvError(
            f"--env={env_id!r} has no EnvPool counterpart; allowed: ALE/<Game>-v5 ids"
        )
    return env_id[len("ALE/") :]


def make_envpool(env_id: str, num_envs: int, seed: int, num_threads: int):
    """A gymnasium-API EnvPool of `num_envs` envs stepped together (batch = all of them)."""
    import envpool

    return envpool.make(
        task_id(env_id),
        env_type="gymnasium",
        num_envs=num_envs,
        batch_size=num_envs,
        num_threads=num_threads,
        seed=seed,
        repeat_action_probability=envs_lib.ATARI_MAKE_KWARGS["repeat_action_probability"],
        full_action_space=envs_lib.ATARI_MAKE_KWARGS["full_action_space"],
        noop_max=envs_lib.ATARI_NOOP_MAX,
        frame_skip=envs_lib.ATARI_FRAME_SKIP,
        img_height=envs_lib.ATARI_SCREEN_SIZE,
        img_width=envs_lib.ATARI_SCREEN_SIZE,
        stack_num=envs_lib.ATARI_FRAME_STACK,
        gray_scale=True,
        use_inter_area_resize=True,
        episodic_life=False,
        reward_clip=False,
        use_fire_reset=False,
        zero_discount_on_life_loss=False,
        max_episode_steps=MAX_EPISODE_FRAMES // envs_lib.ATARI_FRAME_SKIP,
    )
