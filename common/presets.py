"""Named starting points for Config: {preset name: the fields it changes from the defaults}.

`--preset NAME` applies one; flags given with it override it. Why each value is what it is (the
measurements, the paper's and the seed's settings it follows) is written down in docs/presets.md.
Envs beyond CartPole need extra packages: pip install -r requirements-envs.txt.
"""

# What every preset beyond CartPole shares: every start state unrolled (as they were measured),
# two hidden layers, gamma 0.99, learning from 64 stored sequences on.
BEYOND_CARTPOLE = dict(starts_per_sequence=0, depth=2, discount=0.99, min_replay=64)

# What the image presets share: sequences of 20 steps every 10, three quarters of each batch from
# replay (the paper's share), Adam 3e-4.
IMAGES = dict(
    BEYOND_CARTPOLE, sequence_length=20, sequence_stride=10, replay_fraction=0.75,
    learning_rate=3e-4,
)  # fmt: skip

# The MinAtar presets' shared settings (minatar-breakout's, measured on Breakout first); the
# model unrolled from 3 start states per sequence, as CartPole's default: 1M frames in 22 minutes
# on 2 cores (docs/presets.md).
MINATAR = dict(
    IMAGES, starts_per_sequence=3, torso="minatar", width=128, hidden_size=128, support_size=30, batch_size=64,
    replay_capacity=10_000, replay_ratio=12.8, envs_per_actor=16, eval_episodes=30,
    eval_screen_episodes=10, eval_every_env_steps=20_000, max_env_steps=5_000_000,
    max_seconds=1800.0,
)  # fmt: skip

PRESETS = {
    # The defaults, tuned by seed sweeps on a 2-core machine.
    "cartpole": {},
    # The blog post this project grew from, its defects fixed, its loss weighting kept.
    "seed": dict(
        width=128,
        depth=2,
        hidden_size=0,
        support_size=0,
        unroll_steps=2,
        value_target="mc",
        discount=0.99,
        reg_samples=2,
        reg_weight=5.0,
        pg_weight=1.0,
        value_weight=0.25,
        reward_weight=1.0,
        model_weight=0.25,
        sequence_length=500,
        sequence_stride=500,
        batch_size=6,
        starts_per_sequence=5,
        replay_fraction=5 / 6,
        min_replay=6,
        replay_capacity=5000,
        replay_ratio=120.0,
        replay_error_buffer=6,
        optimizer="adamw",
        learning_rate=3e-4,
        weight_decay=0.0,
        max_grad_norm=0.0,
        grad_clip_value=1.0,
        dynamics_grad="params",
        target_ema=0.01,
        target_blend_every_steps=600,
        actors_use_online=True,
        envs_per_actor=1,
        policy_terms_every_state=False,
        prior_behaviour_weight=0.0,
        prior_uniform_weight=0.0,
        actor_chunk_steps=64,
        weight_pull_every=1,
        publish_every=1,
        max_seconds=1800.0,
    ),  # fmt: skip
    # LunarLander-v3 (Box2D): solved at a greedy 100-episode mean >= 200.
    "lunarlander": dict(
        BEYOND_CARTPOLE,
        env="LunarLander-v3",
        solve_return=200.0,
        width=128,
        hidden_size=64,
        support_size=30,
        sequence_length=10,
        sequence_stride=5,
        batch_size=64,
        replay_capacity=20_000,
        replay_fraction=0.5,
        learning_rate=5e-4,
        replay_ratio=6.4,
        envs_per_actor=16,
        eval_every_env_steps=16_000,
        eval_min_train_return=100.0,
        max_env_steps=5_000_000,
        max_seconds=1800.0,
    ),  # fmt: skip
    # MinAtar (package minatar): 10x10xC grids, no reward threshold; one setting for every game
    # (docs/presets.md), the game's env id added.
    "minatar-breakout": dict(MINATAR, env="MinAtar/Breakout-v1"),
    "minatar-space-invaders": dict(MINATAR, env="MinAtar/SpaceInvaders-v1"),
    "minatar-asterix": dict(MINATAR, env="MinAtar/Asterix-v1"),
    # Atari Pong (ALE/Pong-v5) with the paper's env settings: stop at a greedy mean of +18.
    "atari-pong": dict(
        IMAGES,
        env="ALE/Pong-v5",
        torso="atari",
        width=256,
        hidden_size=256,
        support_size=10,
        batch_size=32,
        replay_capacity=3000,
        envs_per_actor=8,
        weight_pull_every=256,
        replay_ratio=3.2,
        solve_return=18.0,
        eval_episodes=20,
        eval_screen_episodes=5,
        eval_every_env_steps=50_000,
        eval_min_train_return=15.0,
        max_env_steps=10_000_000,
        max_seconds=3600.0,
    ),  # fmt: skip
}

# Fields that only fit the preset's own env: dropped when --env names another one.
ENV_BOUND = ("solve_return", "eval_min_train_return", "torso")
