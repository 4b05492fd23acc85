"""evaluate.py (evaluate and watch a run), the evaluation loop it shares with training
(actors/evaluation.play) and the episode video writer (actors/video.py).

One short in-process CartPole run (a few seconds of training) serves every test. In
CartPole every step pays +1, so a return equals its episode's length exactly, and a video of
an episode of L steps has L + 1 frames (the first observation, then one per step)."""

import json
import shutil

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
import torch

import evaluate as cli
import launch
from actors import video
from actors.evaluation import play
from common import envs as envs_lib
from tests.test_envs import needs

CARTPOLE_FRAME = (400, 600, 3)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished CartPole run (1,024 env steps) that did not solve: the exported policy is then the newest
    published weights, and with a publication every learner step they are the final
    checkpoint's acting (target) network."""
    root = tmp_path_factory.mktemp("runs")
    rc = launch.main(
        [
            "--in-process",
            "--run-root",
            str(root),
            "--run-name",
            "run",
            "--seed",
            "0",
            "--max-env-steps",
            "1024",
            "--solve-return",
            "1000",
            "--publish-every",
            "1",
            "--eval-episodes",
            "5",
            "--sampled-eval-episodes",
            "1",
        ]
    )
    assert rc == 0
    summary = json.loads((root / "run" / "summary.json").read_text())
    # target and online differ once the learner has stepped
    assert summary["learner_steps"] > 0, summary
    return root / "run"


def args(*argv):
    return cli.build_parser().parse_args([str(a) for a in argv])


def frame_count(path) -> int:
    with imageio.get_reader(path, format="FFMPEG") as reader:
        frames = [frame.shape for frame in reader]
    assert set(frames) == {CARTPOLE_FRAME}
    return len(frames)


def final_checkpoint(run_dir) -> str:
    return json.loads((run_dir / "summary.json").read_text())["learner_steps"]


def first_checkpoint(run_dir) -> int:
    """The step of the checkpoint written once the learner had trained (before the final one)."""
    return min(
        int(p.name[len("ckpt-") : -len(".pt")]) for p in (run_dir / "checkpoints").glob("ckpt-*.pt")
    )


def test_policy_episodes_are_plausible_and_videos_decode_to_their_episodes(run_dir):
    result = cli.watch(args(run_dir, "--episodes", 6, "--video", 2))
    returns, lengths = result["episodes"]
    assert len(returns) == 6
    np.testing.assert_array_equal(returns, lengths)  # +1 per CartPole step
    # no CartPole episode ends before 8 steps
    assert lengths.min() >= 8 and lengths.max() <= 500
    assert result["seed"] == envs_lib.derive_seed(0, "watch", 0)
    names = [f"policy-greedy-set0-episode{k}.mp4" for k in range(2)]
    assert [p.name for p in result["videos"]] == names
    assert sorted(p.name for p in (run_dir / "videos").iterdir()) == names  # no .tmp left behind
    for k in range(2):
        assert frame_count(run_dir / "videos" / names[k]) == lengths[k] + 1


def test_checkpoint_plays_as_the_exported_policy_of_the_same_weights(run_dir):
    exported = cli.watch(args(run_dir, "--episodes", 20))["episodes"]
    step = final_checkpoint(run_dir)
    by_step = cli.watch(args(run_dir, "--episodes", 20, "--checkpoint", step))
    by_path = cli.watch(
        args(run_dir, "--episodes", 20, "--checkpoint", run_dir / "checkpoints" / f"ckpt-{step}.pt")
    )
    assert by_step["source"] == f"ckpt-{step}.pt"
    np.testing.assert_array_equal(by_step["episodes"].returns, exported.returns)
    np.testing.assert_array_equal(by_path["episodes"].returns, exported.returns)
    # Greedy episodes of a barely trained policy hardly tell online from target: the logits do.
    cfg = cli.load_config(run_dir)
    obs = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    from_checkpoint = cli.checkpoint_policy(
        cfg, envs_lib.describe("CartPole-v1"), run_dir / "checkpoints" / f"ckpt-{step}.pt"
    )(obs)
    torch.testing.assert_close(from_checkpoint, cli.exported_policy(run_dir)(obs))


def test_other_seed_index_and_sampling_play_other_episodes(run_dir):
    base = cli.watch(args(run_dir, "--episodes", 20))["episodes"].returns
    again = cli.watch(args(run_dir, "--episodes", 20))["episodes"].returns
    other_seed = cli.watch(args(run_dir, "--episodes", 20, "--seed-set", 1))
    sampled = cli.watch(args(run_dir, "--episodes", 20, "--sampled"))["episodes"].returns
    np.testing.assert_array_equal(again, base)
    assert other_seed["seed"] == envs_lib.derive_seed(0, "watch", 1)
    assert not np.array_equal(other_seed["episodes"].returns, base)
    assert not np.array_equal(sampled, base)


def test_command_prints_a_line_per_batch_and_a_table(run_dir, capsys):
    assert cli.main([str(run_dir), "--episodes", "60"]) == 0
    out = capsys.readouterr().out.splitlines()
    seed = envs_lib.derive_seed(0, "watch", 0)
    assert out[0] == (
        f"evaluate.py: {run_dir} | CartPole-v1 | policy.pt2 | greedy | 60 episodes on 50 envs, "
        f"env seeds {seed}..{seed + 49} (role 'watch', --seed-set 0)"
    )
    progress = [line for line in out if "| this batch:" in line]
    assert [line.split("episodes")[1].split("|")[0].strip() for line in progress] == [
        "50/60",
        "60/60",
    ]
    returns = cli.watch(args(run_dir, "--episodes", 60))["episodes"].returns
    row = out[out.index(next(line for line in out if line.startswith("policy  "))) + 1].split()
    assert row[:3] == ["policy.pt2", "greedy", "60"]
    assert [float(x) for x in row[3:7]] == [
        round(float(f(returns)), 2) for f in (np.mean, np.std, np.min, np.max)
    ]


# -- bad input: one line on stderr, exit 2, nothing played or written ----------------------


def no_policy(run_dir, tmp_path):
    (tmp_path / "r").mkdir()
    shutil.copy(run_dir / "config.json", tmp_path / "r")
    return (
        [tmp_path / "r"],
        "run_dir='{d}/r' has no policy.pt2 (a run writes it when it ends); allowed: a finished run, or --checkpoint STEP for one of its checkpoints",
    )


def corrupt_policy(run_dir, tmp_path):
    shutil.copytree(run_dir, tmp_path / "r", ignore=shutil.ignore_patterns("videos"))
    data = bytearray((run_dir / "policy.pt2").read_bytes())
    # inside the first stored weight tensor: loads silently unless CRCs are checked
    data[2000] ^= 0xFF
    (tmp_path / "r" / "policy.pt2").write_bytes(bytes(data))
    return [
        tmp_path / "r"
    ], "{d}/r/policy.pt2 cannot be loaded (BadZipFile); allowed: a policy.pt2 written by launch.py"


def corrupt_checkpoint(run_dir, tmp_path):
    data = (run_dir / "checkpoints" / f"ckpt-{final_checkpoint(run_dir)}.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    return (
        [run_dir, "--checkpoint", tmp_path / "half.pt"],
        "--checkpoint='{d}/half.pt' is invalid: checkpoint {d}/half.pt is corrupt or truncated (BadZipFile)",
    )


def missing_env_package(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(
        envs_lib.OPTIONAL_ENV_PACKAGES, "Nowhere", ("no_such_env_module", "nowhere-envs")
    )
    (tmp_path / "r").mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    (tmp_path / "r" / "config.json").write_text(json.dumps({**config, "env": "Nowhere/Game-v0"}))
    shutil.copy(run_dir / "policy.pt2", tmp_path / "r")
    return [tmp_path / "r"], (
        "run_dir='{d}/r' was trained on Nowhere/Game-v0: --env='Nowhere/Game-v0' needs the package "
        "'nowhere-envs', which is not installed: pip install -r requirements-envs.txt"
    )


def missing_video_package(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(video, "VIDEO_PACKAGES", ("imageio", "no_such_video_module"))
    return (
        [run_dir, "--episodes", 2, "--video", 1],
        "--video needs the packages no_such_video_module, which are not installed: pip install -r requirements-video.txt",
    )


BAD = {
    "no such run": lambda r, t, m: (
        [t / "nowhere"],
        "run_dir='{d}/nowhere' is invalid: no such directory; allowed: "
        "a run directory written by launch.py (runs/<name>)",
    ),
    "no config": lambda r, t, m: (
        [t],
        "run_dir='{d}' is invalid: cannot read {d}/config.json (FileNotFoundError); "
        "allowed: a run directory written by launch.py",
    ),
    "no policy": lambda r, t, m: no_policy(r, t),
    "corrupt policy": lambda r, t, m: corrupt_policy(r, t),
    "no such checkpoint": lambda r, t, m: (
        [r, "--checkpoint", 7],
        f"--checkpoint='7' is invalid: no file {r}/checkpoints/"
        f"ckpt-7.pt; allowed: a step or path of ckpt-{final_checkpoint(r)}.pt, "
        f"ckpt-{first_checkpoint(r)}.pt",
    ),
    "corrupt checkpoint": lambda r, t, m: corrupt_checkpoint(r, t),
    "env package missing": missing_env_package,
    "video package missing": missing_video_package,
    "more videos than envs": lambda r, t, m: (
        [r, "--episodes", 3, "--video", 4],
        "--video=4 is invalid: must lie in "
        "[0, 3] (at most one video per evaluation env: min(--episodes, 50))",
    ),
    "no episodes": lambda r, t, m: (
        [r, "--episodes", 0],
        "--episodes=0 is invalid: must be a whole number >= 1",
    ),
    "greedy and sampled": lambda r, t, m: (
        [r, "--greedy", "--sampled"],
        "argument --sampled: not allowed with argument --greedy",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(case, run_dir, tmp_path, monkeypatch, capsys):
    argv, message = BAD[case](run_dir, tmp_path, monkeypatch)
    videos_before = sorted((run_dir / "videos").glob("*")) if (run_dir / "videos").exists() else []
    assert cli.main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.err == "evaluate.py: error: " + message.format(d=tmp_path) + "\n"
    assert captured.out == ""
    videos_after = sorted((run_dir / "videos").glob("*")) if (run_dir / "videos").exists() else []
    assert videos_after == videos_before


# -- the loop and the writer on their own --------------------------------------------------


def push_left(obs):
    return torch.tensor([[1.0, 0.0]]).expand(len(obs), 2)


def test_play_lists_the_first_episode_of_every_env_first():
    """53 episodes on 50 envs: envs 0-2 play two. The first 50 listed are the first episodes of
    envs 0..49, the same episodes 50 episodes on 50 envs play (sub-env j is seeded seed + j)."""
    many = play(push_left, "CartPole-v1", 53, seed=11)
    first = play(push_left, "CartPole-v1", 50, seed=11)
    np.testing.assert_array_equal(many.returns[:50], first.returns)
    np.testing.assert_array_equal(many.returns, many.lengths)
    one = play(push_left, "CartPole-v1", 1, seed=14)  # sub-env 3 of the 53 is seeded 11 + 3
    assert one.returns[0] == many.returns[3]


def test_video_frame_converts_floats_and_scales_small_screens_up():
    grid = np.zeros((10, 10, 3))
    grid[0, 1] = [1.0, 0.5, 0.2]
    out = video.video_frame(grid)
    assert out.dtype == np.uint8 and out.shape == (160, 160, 3)  # ceil(160 / 10) = 16
    np.testing.assert_array_equal(out[:16, 16:32], np.broadcast_to([255, 128, 51], (16, 16, 3)))
    assert out[:16, :16].max() == 0 and out[16:].max() == 0 and out[:, 32:].max() == 0
    screen = np.arange(400 * 600 * 3, dtype=np.uint8).reshape(400, 600, 3)
    np.testing.assert_array_equal(video.video_frame(screen), screen)
    with pytest.raises(
        ValueError, match=r"a rendered frame must be RGB \[H, W, 3\], got shape \(4, 4\)"
    ):
        video.video_frame(np.zeros((4, 4)))


def run_episode(env, actions) -> int:
    """Steps env (already reset) with actions[t % len(actions)] until the episode ends; its length."""
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(actions[steps % len(actions)])
        steps, done = steps + 1, terminated or truncated
    return steps


def test_episode_video_writes_its_first_episode_only_and_drops_an_unfinished_one(tmp_path):
    env = video.EpisodeVideo(
        gym.make("CartPole-v1", render_mode="rgb_array"), tmp_path / "a.mp4", fps=50
    )
    env.reset(seed=0)
    first = run_episode(env, [0])
    env.reset(seed=1)  # a second, longer episode is not recorded
    second = run_episode(env, [0, 1])
    env.close()
    assert second != first
    assert env.written == tmp_path / "a.mp4" and frame_count(tmp_path / "a.mp4") == first + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]
    cut = video.EpisodeVideo(
        gym.make("CartPole-v1", render_mode="rgb_array"), tmp_path / "b.mp4", fps=50
    )
    cut.reset(seed=0)
    cut.step(0)
    cut.close()  # closed mid-episode: no file, no temporary left
    assert cut.written is None and sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


@needs("atari-pong")
def test_atari_video_shows_the_raw_screen_while_the_agent_sees_the_stack():
    env = envs_lib.make_env("ALE/Pong-v5", render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84)
    assert env.render().shape == (210, 160, 3) and env.render().dtype == np.uint8
    # 60 Hz, one frame in 4 per agent step
    assert envs_lib.video_fps("ALE/Pong-v5", env) == 15.0
    env.close()
