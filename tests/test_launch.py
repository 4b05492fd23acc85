"""launch.py as a user meets it: bad input stops before Ray or any file (exit 2, one line),
a run that fails later still writes summary.json, Ctrl-C finishes a run, and --resume
continues a run's files without a lost segment, a renamed checkpoint or a rewritten config."""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import launch
import muesli_ray
from common import envs as envs_lib
from common.config import parse_config, to_dict
from driver.trainer import Trainer, make_run_dir
from driver.wiring import placed
from learner import checkpoint

ROOT = Path(__file__).resolve().parent.parent


def tree_digest(folder: Path) -> dict:
    """{relative path: sha256} of every file below folder ({} when it does not exist)."""
    folder = Path(folder)
    return (
        {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        if folder.exists()
        else {}
    )


def main_fails(capsys, argv) -> str:
    """Run launch.main(argv); it must exit 2 with one line on stderr, nothing on stdout; returns the line.
    (A short budget, so that a run that wrongly starts ends soon and fails the test.)"""
    capsys.readouterr()
    assert launch.main([*argv, "--max-seconds", "2", "--no-dashboard"]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("launch.py: error: "), err
    assert "Traceback" not in err and out == ""
    return lines[0]


def ray_running() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--seed", "-1"], "--seed=-1 is invalid: must be a whole number >= 0"),
        (
            ["--replay-capacity", str(10**12)],
            "--replay-capacity=1000000000000 is invalid: its 1,000,000,000,000 "
            "sequences of 446 bytes need 415,369.9 GiB; allowed: at most 80% of the ",
        ),
        (["--eval-episodes", "1000000"], "--eval-episodes=1000000 is invalid: must be <= 10,000"),
        (
            ["--sampled-eval-episodes", "10001"],
            "--sampled-eval-episodes=10001 is invalid: must be <= 10,000",
        ),
        (
            ["--run-name", "{tmp}/elsewhere"],
            "--run-name='{tmp}/elsewhere' is invalid: must be a plain folder name",
        ),
        (["--run-name", ".."], "--run-name='..' is invalid: must be a plain folder name"),
        (["--run-name", "a/b"], "--run-name='a/b' is invalid: must be a plain folder name"),
        # deadlocked
        (["--replay-ratio", "inf"], "--replay-ratio=inf is invalid: must be finite (0 = no limit)"),
    ],
)
@pytest.mark.parametrize("where", [["--in-process"], ["--num-cpus", "1"]])
def test_bad_flags_stop_before_anything_starts(tmp_path, capsys, flags, expected, where):
    root = tmp_path / "runs"
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    line = main_fails(capsys, ["--run-root", str(root), *where, *flags])
    assert line.startswith("launch.py: error: " + expected.replace("{tmp}", str(tmp_path))), line
    assert list(tmp_path.iterdir()) == [] and not ray_running()


def test_a_local_ray_that_would_hang_is_refused_before_it_starts(tmp_path, capsys):
    """11 actors on 2 CPUs waited forever for CPUs; a metrics port another process holds made
    ray.init time out after 30 s with a traceback. Both: one line, Ray never started."""
    root = ["--run-root", str(tmp_path / "runs")]
    line = main_fails(capsys, [*root, "--num-cpus", "2", "--num-actors", "11"])
    assert line == (
        "launch.py: error: --num-actors=11 is invalid: at most 10 actors (at least 0.1 CPU each) "
        "fit the 1 CPU(s) left after the learner's 1; allowed: 1 to 10, or more CPUs (--num-cpus "
        "for a local Ray)"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = main_fails(capsys, [*root, "--num-cpus", "1", "--metrics-export-port", str(port)])
    assert line == (
        f"launch.py: error: --metrics-export-port={port} is invalid: another process holds port "
        f"{port} on this machine (Address already in use); allowed: a free port, or 0 (Ray's "
        "default)"
    )
    assert not (tmp_path / "runs").exists() and not ray_running()


def test_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    for where in (["--in-process"], ["--num-cpus", "1"]):  # in-process, and a local Ray
        line = main_fails(
            capsys, ["--run-root", str(tmp_path / "runs"), "--device", "cuda", *where]
        )
        assert line == (
            "launch.py: error: --device='cuda' is invalid: torch sees no CUDA device on this machine; "
            "allowed here: auto, cpu"
        )
        assert not (tmp_path / "runs").exists() and not ray_running()


def test_address_where_nothing_listens_fails_within_seconds(tmp_path, capsys):
    """Refused at once (port 1 of this machine) or unanswered (a listening socket whose
    backlog is full drops further connection attempts): one line after at most the probe's
    2 s, where ray.init waited for minutes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    full = f"127.0.0.1:{server.getsockname()[1]}"
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", server.getsockname()[1]))
    try:
        for address, why in (("127.0.0.1:1", "Connection refused"), (full, "TimeoutError")):
            start = time.monotonic()
            line = main_fails(capsys, ["--run-root", str(tmp_path / "runs"), "--address", address])
            assert time.monotonic() - start < 5
            assert line == (
                f"launch.py: error: --address='{address}' is invalid: nothing accepts connections at "
                f"{address} within 2 s ({why}); allowed: 'auto' or HOST:PORT of a running Ray head "
                "(its GCS port, 6379 by default)"
            )
            assert not (tmp_path / "runs").exists() and not ray_running()
    finally:
        for sock in (*fillers, server):
            sock.close()
    line = main_fails(capsys, ["--address", "headnode"])
    assert "--address='headnode' is invalid: allowed: 'auto' or HOST:PORT" in line


def test_run_root_that_is_a_file_read_only_or_not_creatable(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    cases = [
        (afile, f"{afile} is a file"),
        (afile / "sub", f"{afile} is a file"),
        (Path("/proc/muesli-runs"), "cannot create folders in /proc (No such file or directory)"),
    ]
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    # chmod does not stop root; the immutable attribute does
    immutable = subprocess.run(["chattr", "+i", str(readonly)], capture_output=True).returncode == 0
    if immutable:
        cases.append(
            (readonly / "runs", f"cannot create folders in {readonly} (Operation not permitted)")
        )
    try:
        for root, expected in cases:
            before = tree_digest(tmp_path)
            line = main_fails(capsys, ["--in-process", "--run-root", str(root)])
            assert line.startswith(
                f"launch.py: error: --run-root='{root}' is invalid: {expected}"
            ), line
            assert tree_digest(tmp_path) == before and not list(tmp_path.rglob(".write-test-*"))
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(readonly)], check=True)
    assert immutable or not shutil.which("chattr"), (
        "chattr exists but +i failed: the read-only case did not run"
    )


def test_an_existing_run_name_is_refused(tmp_path, capsys):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "run" / "checkpoints" / "ckpt-5.pt").write_bytes(b"a checkpoint")
    line = main_fails(capsys, ["--in-process", "--run-root", str(tmp_path), "--run-name", "run"])
    assert (
        f"--run-name='run' is invalid: {tmp_path / 'run'} already exists and is not an empty folder; allowed: "
        f"a new name, or --resume {tmp_path / 'run'} to continue that run"
    ) in line
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == "{}\n"


def test_a_run_folder_without_a_checkpoint_says_how_to_free_its_name(tmp_path, capsys):
    """A run killed before its first checkpoint: --resume cannot continue it, so neither line sends the user there."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("{}\n")
    (run_dir / "config.json").write_text(json.dumps(to_dict(parse_config(["--in-process"]))))
    line = main_fails(capsys, ["--in-process", "--run-root", str(tmp_path), "--run-name", "run"])
    assert line == (
        f"launch.py: error: --run-name='run' is invalid: {run_dir} already exists and holds no checkpoint "
        f"to resume from; allowed: a new name, or delete {run_dir} (if no run is using it) and start again"
    )
    line = main_fails(capsys, ["--resume", str(run_dir)])
    assert line.endswith(
        f"no readable checkpoint in {run_dir / 'checkpoints'}; allowed: a run folder with one, or "
        f"delete {run_dir} (if no run is using it) and start that run again"
    )
    shutil.rmtree(run_dir)  # what the line says: then the name is free again
    assert (
        launch.main(
            [
                "--in-process",
                "--run-root",
                str(tmp_path),
                "--run-name",
                "run",
                "--max-env-steps",
                "256",
                "--eval-episodes",
                "2",
                "--sampled-eval-episodes",
                "1",
            ]
        )
        == 0
    )


def test_a_run_name_taken_while_this_run_starts_is_one_line_and_exit_2(
    tmp_path, capsys, monkeypatch
):
    """Two runs with one name both pass preflight (on Ray, ray.init lies between preflight and the
    folder): the one that claims the folder second stops with one line and writes nothing into it."""
    real_placed = muesli_ray.placed

    def placed_while_another_run_claims_the_folder(cfg, connect=False):
        other = make_run_dir(cfg)  # the other run, claiming the folder first
        (other / "metrics.jsonl").write_text("the other run\n")
        return real_placed(cfg, connect)

    monkeypatch.setattr(muesli_ray, "placed", placed_while_another_run_claims_the_folder)
    line = main_fails(capsys, ["--in-process", "--run-root", str(tmp_path), "--run-name", "run"])
    assert line == (
        f"launch.py: error: --run-name='run' is invalid: {tmp_path / 'run'} was taken by another run "
        "that started at the same time; allowed: a new name"
    )
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == "the other run\n"
    # the other run's files (.lock: its claim while it runs; .space-for-summary: the room it
    # keeps for its summary.json)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        ".lock",
        ".space-for-summary",
        "checkpoints",
        "config.json",
        "metrics.jsonl",
    ]


def test_a_default_run_name_taken_in_the_same_second_gets_a_suffix(tmp_path, monkeypatch):
    """Two runs of one config started in the same second (without --run-name) get folders of their own."""
    import datetime

    from driver import trainer

    monkeypatch.setattr(
        trainer, "datetime", SimpleNamespace(now=lambda: datetime.datetime(2026, 1, 2, 3, 4, 5))
    )
    cfg = parse_config(["--in-process", "--run-root", str(tmp_path)])
    first, second = make_run_dir(cfg), make_run_dir(cfg)
    assert (first.name, second.name) == (
        "CartPole-v1-cartpole-s0-20260102-030405",
        "CartPole-v1-cartpole-s0-20260102-030405-2",
    )


def test_launch_py_with_an_address_where_nothing_listens_exits_2_at_once(tmp_path):
    """The user's path: a fresh interpreter (imports included) against port 1, which hung > 150 s."""
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "--address",
            "127.0.0.1:1",
            "--run-root",
            str(tmp_path / "r"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert proc.stderr.startswith(
        "launch.py: error: --address='127.0.0.1:1' is invalid: nothing accepts connections"
    )
    assert len(proc.stderr.splitlines()) == 1 and not (tmp_path / "r").exists()
    print(f"launch.py --address 127.0.0.1:1: exit 2 after {time.monotonic() - start:.1f} s")


def test_config_json_records_the_actor_count_the_run_used(tmp_path):
    """--num-actors auto (0) is resolved before config.json is written: it records the count the
    run started (in-process: one), as summary.json does, so a resume or a reader sees real figures."""
    assert (
        launch.main(
            [
                "--in-process",
                "--num-actors",
                "auto",
                "--max-env-steps",
                "256",
                "--eval-episodes",
                "2",
                "--sampled-eval-episodes",
                "1",
                "--run-root",
                str(tmp_path),
                "--run-name",
                "run",
            ]
        )
        == 0
    )
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert config["num_actors"] == summary["num_actors"] == 1


# -- a short run to resume -------------------------------------------------------------------

RUN_FLAGS = [
    "--in-process",
    "--seed",
    "3",
    "--checkpoint-every-s",
    "0",
    "--eval-episodes",
    "5",
    "--sampled-eval-episodes",
    "2",
    "--solve-return",
    "1e9",
    "--keep-checkpoints",
    "10",
    "--max-seconds",
    "120",
]
CHUNK = 256  # --actor-chunk-steps: env steps per in-process driver loop


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """An in-process run of 8 driver loops with a checkpoint after each (copy it before changing it)."""
    root = tmp_path_factory.mktemp("finished")
    assert (
        launch.main(
            [
                *RUN_FLAGS,
                "--run-root",
                str(root),
                "--run-name",
                "run",
                "--max-env-steps",
                str(8 * CHUNK),
            ]
        )
        == 0
    )
    return root / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def env_steps_of_lines(run_dir: Path, key: str) -> list:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line["env_steps"] for line in lines if key in line]


def test_checkpoints_are_named_by_the_learner_step_stored_inside(finished_run):
    paths = checkpoint.list_checkpoints(finished_run / "checkpoints")
    assert len(paths) >= 3
    for path in paths:
        assert checkpoint.contents(path.read_bytes())["steps"] == checkpoint.step_of(path), path


def test_a_checkpoint_is_named_by_the_learners_step_not_the_drivers_last_report(tmp_path):
    """On Ray the driver knows the learner's step from its last report, while the learner has
    gone on (ckpt-2250 held step 2300): here the learner trains 7 steps past its report."""
    from common.config import parse_config

    cfg = parse_config(
        ["--in-process", "--run-root", str(tmp_path), "--run-name", "run", "--replay-ratio", "0"]
    )
    cfg, where = placed(cfg)
    trainer = Trainer(cfg, envs_lib.describe(cfg.env), make_run_dir(cfg), None, where)
    c = trainer.build()
    for _ in range(3):
        trainer.on_actor(c.actors[0].collect(CHUNK))
    trainer.on_learner(c.learner.train(5))
    c.learner.train(7)  # its report has not reached the driver
    assert (trainer.learner_steps, c.learner.steps) == (5, 12)
    trainer.maybe_checkpoint(force=True)
    (path,) = checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints")
    assert path.name == "ckpt-12.pt" and checkpoint.contents(path.read_bytes())["steps"] == 12
    trainer.eval_thread.shutdown()
    trainer.log.close()


def test_save_never_replaces_an_existing_checkpoint(tmp_path):
    assert checkpoint.save(tmp_path, 7, b"resumed from", keep=3) == tmp_path / "ckpt-7.pt"
    assert checkpoint.save(tmp_path, 7, b"same step, later", keep=3) is None
    assert (tmp_path / "ckpt-7.pt").read_bytes() == b"resumed from"


def test_resume_drops_the_lost_segment_and_keeps_its_checkpoint(run_copy, capsys):
    """Resume from the second-newest checkpoint (the newest is cut short): what the first run
    logged after it is gone from metrics.jsonl and TensorBoard, env steps never go back, the
    checkpoint resumed from is kept as it was, and the cut one is renamed, not deleted."""
    paths = checkpoint.list_checkpoints(run_copy / "checkpoints")
    newest, previous = paths[0], paths[1]
    newest.write_bytes(newest.read_bytes()[:1000])
    previous_bytes = previous.read_bytes()
    resumed_at = checkpoint.contents(previous_bytes)["run"]["env_steps"]
    # there is a lost segment
    assert max(env_steps_of_lines(run_copy, "actor/episodes")) > resumed_at
    assert (
        launch.main(["--resume", str(run_copy), "--max-env-steps", str(resumed_at + 4 * CHUNK)])
        == 0
    )
    out = capsys.readouterr().out
    assert (
        f"resume: continuing from {previous}" in out
        and f"resume: renamed {newest.name} to {newest.name}.corrupt" in out
    )
    steps = env_steps_of_lines(run_copy, "actor/episodes")
    assert all(a < b for a, b in zip(steps, steps[1:])), "env steps go backwards in metrics.jsonl"
    assert resumed_at in steps and max(steps) > resumed_at

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_copy / "tensorboard"))
    events.Reload()
    tb_steps = [e.step for e in events.Scalars("actor/episodes")]
    assert tb_steps == steps, "TensorBoard still shows the lost segment"

    assert previous.read_bytes() == previous_bytes
    assert (run_copy / "checkpoints" / (newest.name + ".corrupt")).stat().st_size == 1000
    for path in checkpoint.list_checkpoints(run_copy / "checkpoints"):
        assert checkpoint.contents(path.read_bytes())["steps"] == checkpoint.step_of(path), path
    summary = json.loads((run_copy / "summary.json").read_text())
    assert (
        summary["resumed_from"] == str(previous)
        and summary["stop_reason"] == "env step budget spent"
    )
    assert summary["env_steps"] == resumed_at + 4 * CHUNK


def test_resume_with_flags_that_do_not_fit_changes_nothing(run_copy, capsys):
    """--width 32 cannot load a width-64 checkpoint: refused before config.json is rewritten,
    so a later plain --resume still works."""
    before = tree_digest(run_copy)
    line = main_fails(capsys, ["--resume", str(run_copy), "--width", "32"])
    assert line.startswith(
        f"launch.py: error: --resume='{run_copy}' with these flags is invalid: checkpoint online "
        "parameter "
    ), line
    assert "has shape (64, 4), this config builds (32, 4)" in line
    assert tree_digest(run_copy) == before and not ray_running()


def test_resume_of_a_config_with_a_wrong_typed_field_changes_nothing(run_copy, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    for field, value, allowed in (
        ("batch_size", "64", "a whole number"),
        ("learning_rate", "3e-3", "a number"),
        ("in_process", 1, "true or false"),
        ("solve_return", [1], "a number or null"),
    ):
        (run_copy / "config.json").write_text(json.dumps({**config, field: value}))
        before = tree_digest(run_copy)
        line = main_fails(capsys, ["--resume", str(run_copy)])
        assert line == (
            f"launch.py: error: --resume='{run_copy}' is invalid: {run_copy / 'config.json'} field "
            f"'{field}' is {value!r} ({type(value).__name__}); allowed: {allowed}"
        )
        assert tree_digest(run_copy) == before


# -- failures after start-up ---------------------------------------------------------------


def test_a_run_that_fails_after_start_up_writes_summary_json(tmp_path, capsys, monkeypatch):
    """The learner's third train call raises: exit 1, the traceback and one line on stderr,
    and summary.json says why the run stopped and where to resume from."""
    from learner.learner import Learner

    train, calls = Learner.train, []

    def failing_train(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return train(self, *args, **kwargs)

    monkeypatch.setattr(Learner, "train", failing_train)
    run_dir = tmp_path / "run"
    assert launch.main([*RUN_FLAGS, "--run-root", str(tmp_path), "--run-name", "run"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.splitlines()[-1] == (
        "launch.py: error: the run failed: RuntimeError: CUDA error: an illegal memory "
        f"access was encountered (summary.json in {run_dir})"
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "error" and summary["solved"] is False
    assert summary["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert summary["env_steps"] == 3 * CHUNK and summary["run_dir"] == str(run_dir)
    newest = checkpoint.list_checkpoints(run_dir / "checkpoints")
    assert summary["checkpoint"] == (str(newest[0]) if newest else None)


# -- Ctrl-C --------------------------------------------------------------------------------


def launch_argv(tmp_path, *flags) -> list:
    """`python launch.py` of a run named `run` below tmp_path that never solves on its own."""
    return [sys.executable, "launch.py", "--run-root", str(tmp_path), "--run-name", "run",
            "--seed", "3", "--solve-return", "1e9", "--checkpoint-every-s", "1000", *flags]  # fmt: skip


def start_run(tmp_path, *flags) -> subprocess.Popen:
    """`python launch.py` in its own process group, as a terminal's foreground job is."""
    log = open(tmp_path / "stdout.txt", "w")
    return subprocess.Popen(
        launch_argv(tmp_path, *flags),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_stop_signals,
    )


def default_stop_signals() -> None:
    """SIGINT and SIGHUP as a terminal's job has them, even when pytest runs as a background job
    (which starts with SIGINT ignored) or under nohup (SIGHUP ignored)."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def wait_for(predicate, proc, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, (
            f"launch.py exited ({proc.returncode}) before {what}: {proc.stderr.read()}"
        )
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.2)


def learner_has_trained(run_dir: Path) -> bool:
    path = run_dir / "metrics.jsonl"
    return path.exists() and '"learner/steps"' in path.read_text()


def ctrl_c(proc) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends to its foreground job


def check_interrupted_run(
    tmp_path, proc, timeout_s: float, reason: str = "interrupted", rc: int = 0
) -> dict:
    """Exit rc with everything a finished run writes; the final checkpoint holds the summary's env steps."""
    _, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == rc, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    run_dir = tmp_path / "run"
    out = (tmp_path / "stdout.txt").read_text()
    again = "Ctrl-C again" if reason == "interrupted" else "a second signal"
    assert f"{reason}: finishing (final checkpoint, policy, summary); {again} stops at once" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == reason and out.splitlines()[-1].startswith(
        f"stopped ({reason})"
    )
    check_finished_files(run_dir, summary)
    return summary


def check_finished_files(run_dir: Path, summary: dict) -> None:
    """The final checkpoint (holding the summary's env steps) and policy.pt2 of a run that finished."""
    paths = checkpoint.list_checkpoints(run_dir / "checkpoints")
    # --checkpoint-every-s 1000: the first (once trained) and the final
    assert 1 <= len(paths) <= 2
    state = checkpoint.contents(paths[0].read_bytes())
    assert state["run"]["env_steps"] == summary["env_steps"] > 0
    assert state["steps"] == checkpoint.step_of(paths[0]) > 0
    policy = torch.export.load(str(run_dir / "policy.pt2")).module()
    assert policy(torch.zeros(3, 4)).shape == (3, 2)


def test_first_ctrl_c_finishes_an_in_process_run(tmp_path):
    proc = start_run(tmp_path, "--in-process", "--max-seconds", "300", "--eval-episodes", "5")
    try:
        wait_for(lambda: learner_has_trained(tmp_path / "run"), proc, 90, "learner steps")
        ctrl_c(proc)
        check_interrupted_run(tmp_path, proc, 60)
    finally:
        proc.kill()


def test_second_ctrl_c_stops_at_once(tmp_path):
    """The second Ctrl-C lands in the final evaluation (2,000 episodes of an env whose reset takes
    3 ms: over 6 s, however short the episodes): the run stops within seconds, exit 130,
    summary.json says so."""
    proc = start_run(
        tmp_path,
        "--in-process",
        "--max-seconds",
        "300",
        "--eval-episodes",
        "2000",
        "--env",
        "tests.flaky_envs:SlowResetCartPole-v0",
    )
    try:
        wait_for(lambda: learner_has_trained(tmp_path / "run"), proc, 90, "learner steps")
        ctrl_c(proc)
        wait_for(
            lambda: "interrupted: finishing" in (tmp_path / "stdout.txt").read_text(),
            proc,
            30,
            "the first stop",
        )
        time.sleep(0.5)
        start = time.monotonic()
        ctrl_c(proc)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - start < 10
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == (
        "launch.py: stopped at once (second Ctrl-C); resume from the newest checkpoint "
        f"in {tmp_path / 'run'}"
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted twice" and summary["error"] == "KeyboardInterrupt"


def test_sigterm_finishes_an_in_process_run_with_exit_143(tmp_path):
    """Kubernetes, `ray job stop`, systemd and Docker stop a run with SIGTERM: it ends as after a
    Ctrl-C, with exit 128 + 15 (it did not end on its own); it wrote nothing at all before."""
    proc = start_run(tmp_path, "--in-process", "--max-seconds", "300", "--eval-episodes", "5")
    try:
        wait_for(lambda: learner_has_trained(tmp_path / "run"), proc, 90, "learner steps")
        proc.send_signal(signal.SIGTERM)
        check_interrupted_run(tmp_path, proc, 60, "sigterm", 143)
    finally:
        proc.kill()


def test_sighup_of_a_closed_terminal_finishes_the_run_with_exit_129(tmp_path):
    """Closing the terminal of a run hangs it up (every later write to it fails with EIO) and sends
    SIGHUP: the run still ends as after a Ctrl-C, its output going nowhere, with exit 128 + 1."""
    master, terminal = os.openpty()
    proc = subprocess.Popen(
        launch_argv(tmp_path, "--in-process", "--max-seconds", "300", "--eval-episodes", "5"),
        cwd=ROOT,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        preexec_fn=default_stop_signals,
    )
    os.close(terminal)
    os.set_blocking(master, False)
    # what the terminal showed: read as it comes, so the run never blocks on it
    shown = []

    def read_terminal():
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(master, 65536):
                shown.append(chunk)

    try:
        wait_for(
            lambda: read_terminal() or learner_has_trained(tmp_path / "run"),
            proc,
            90,
            "learner steps",
        )
        os.close(master)  # the terminal closes...
        proc.send_signal(signal.SIGHUP)  # ...and the kernel sends SIGHUP
        assert proc.wait(timeout=60) == 129, b"".join(shown)[-2000:]
    finally:
        proc.kill()
    assert b"Traceback" not in b"".join(shown)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "sighup"
    check_finished_files(tmp_path / "run", summary)


def test_a_second_signal_stops_at_once_and_an_ignored_one_stays_ignored():
    """Signals sent to this process: the first asks for a stop, the second raises; SIGHUP ignored
    at the start (nohup) is left ignored, and every handler is put back afterwards."""
    # the handlers touch only stop_request (and log, on EIO)
    trainer = SimpleNamespace(stop_request="")
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        term = signal.getsignal(signal.SIGTERM)
        with launch.stop_on_signals(trainer):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
            # the handler runs in this thread at the next bytecode
            time.sleep(0.05)
            assert trainer.stop_request == "sigterm"
            with pytest.raises(launch.StopAtOnce) as stopped:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
            assert stopped.value.signum == signal.SIGTERM and str(stopped.value) == "SIGTERM"
        assert (
            signal.getsignal(signal.SIGTERM) is term
            and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        )
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_second_sigterm_exits_143_with_a_summary(tmp_path, capsys, monkeypatch):
    def stopped_twice(trainer):
        trainer.stop_request = "sigterm"
        raise launch.StopAtOnce(signal.SIGTERM)

    monkeypatch.setattr(launch, "train", stopped_twice)
    assert launch.main(["--in-process", "--run-root", str(tmp_path), "--run-name", "run"]) == 143
    assert capsys.readouterr().err.splitlines() == [
        f"launch.py: stopped at once (second signal: SIGTERM); resume from the newest checkpoint in {tmp_path / 'run'}"
    ]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "sigterm twice" and summary["error"] == "SIGTERM"


def test_a_run_killed_before_its_first_checkpoint_interval_can_be_resumed(tmp_path):
    """--checkpoint-every-s 1000 and SIGKILL soon after the learner starts: its first checkpoint,
    written once it has trained, is there to --resume from (before, there was none: --resume exited 2)."""
    proc = start_run(
        tmp_path,
        "--in-process",
        "--max-seconds",
        "300",
        "--eval-episodes",
        "2",
        "--sampled-eval-episodes",
        "1",
    )
    folder = tmp_path / "run" / "checkpoints"
    try:
        wait_for(lambda: learner_has_trained(tmp_path / "run"), proc, 90, "learner steps")
        wait_for(
            lambda: checkpoint.list_checkpoints(folder),
            proc,
            5,
            "checkpoint once the learner trained",
        )
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    stored = checkpoint.contents(checkpoint.list_checkpoints(folder)[0].read_bytes())
    assert stored["steps"] > 0 and stored["run"]["env_steps"] > 0
    # replay refills in 2 rounds, then the learner goes on
    more = stored["run"]["env_steps"] + 4 * CHUNK
    assert launch.main(["--resume", str(tmp_path / "run"), "--max-env-steps", str(more)]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["resumed_from"] and summary["learner_steps"] > stored["steps"]


def test_resuming_or_reusing_the_folder_of_a_running_run_is_refused(tmp_path, capsys):
    """Two runs never write into one folder: --resume of a live run's folder and its --run-name
    are each one line naming the run's pid, exit 2, with the folder left as it was."""
    proc = start_run(tmp_path, "--in-process", "--max-seconds", "300")
    run_dir = tmp_path / "run"
    try:
        wait_for(
            lambda: checkpoint.list_checkpoints(run_dir / "checkpoints"), proc, 90, "a checkpoint"
        )
        config = (run_dir / "config.json").read_bytes()
        assert launch.main(["--resume", str(run_dir)]) == 2
        again = ["--in-process", "--run-root", str(tmp_path), "--run-name", "run"]
        assert launch.main(again) == 2
        assert (run_dir / "config.json").read_bytes() == config
        assert proc.poll() is None
    finally:
        proc.kill()
    in_use = f"{run_dir} is in use by the run of pid {proc.pid}, still running"
    assert capsys.readouterr().err.splitlines() == [
        f"launch.py: error: --resume={str(run_dir)!r} is invalid: {in_use}; allowed: --resume "
        "once that run has ended (Ctrl-C finishes it)",
        f"launch.py: error: --run-name='run' is invalid: {in_use}; allowed: a new name",
    ]


# a local Ray on 2 CPUs without the dashboard, 5 evaluation episodes, 5 minutes at most
SHORT_RAY_RUN = (
    "--num-cpus",
    "2",
    "--no-dashboard",
    "--max-seconds",
    "300",
    "--eval-episodes",
    "5",
)


def test_first_ctrl_c_finishes_a_local_ray_run_and_shuts_ray_down(tmp_path):
    proc = start_run(tmp_path, *SHORT_RAY_RUN)
    try:
        wait_for(lambda: learner_has_trained(tmp_path / "run"), proc, 120, "learner steps")
        ctrl_c(proc)
        summary = check_interrupted_run(tmp_path, proc, 90)
    finally:
        proc.kill()
    assert summary["num_actors"] >= 1
    # Ray's processes of this session (gcs_server, raylet, workers) are gone with it
    session = subprocess.run(
        ["pgrep", "-s", str(proc.pid)], capture_output=True, text=True
    ).stdout.split()
    assert session == [], f"processes of the run's session are still alive: {session}"


def test_sigterm_to_a_local_ray_runs_driver_finishes_it(tmp_path):
    """Kubernetes, Docker and `ray job stop` send SIGTERM to the driver: the run's handler, not the
    one ray.init installs (sys.exit(15), which wrote nothing), ends the run, and no process of its
    session outlives it."""
    proc = start_run(tmp_path, *SHORT_RAY_RUN)
    try:
        wait_for(lambda: learner_has_trained(tmp_path / "run"), proc, 120, "learner steps")
        proc.send_signal(signal.SIGTERM)
        check_interrupted_run(tmp_path, proc, 90, "sigterm", 143)
    finally:
        proc.kill()
    assert_session_ends(proc, 15)


def test_a_sigkilled_drivers_local_ray_ends_with_it(tmp_path):
    """SIGKILL (or the OOM killer) of the driver alone: every process of its local Ray is gone
    within seconds (driver/reaper.py). Before, Ray's dashboard and runtime-env agents lived on for
    1-2 minutes, reporting the raylet's death to a GCS that was already gone."""
    proc = start_run(tmp_path, *SHORT_RAY_RUN)
    try:
        wait_for(lambda: learner_has_trained(tmp_path / "run"), proc, 120, "learner steps")
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert_session_ends(proc, 15)


def assert_session_ends(proc: subprocess.Popen, timeout_s: float) -> None:
    """No process of the ended run's session (start_run) is alive `timeout_s` after it ended."""
    deadline, session = time.monotonic() + timeout_s, ["?"]
    while session and time.monotonic() < deadline:
        session = subprocess.run(
            ["pgrep", "-s", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        time.sleep(0.5)
    assert session == [], (
        f"processes of the run's session are still alive {timeout_s} s after it ended: {session}"
    )


def test_sigterm_to_every_process_of_a_ray_run_ends_it_with_143_and_a_summary(tmp_path):
    """systemd (KillMode=control-group) and `kill -- -PGID` send SIGTERM to Ray's processes as
    well as to the driver: the learner may be gone before the final checkpoint. The run still
    ends with exit 143, no traceback, and a summary.json that names the signal and either the
    final checkpoint or what cut the finish short, with the newest checkpoint to resume from."""
    proc = start_run(tmp_path, *SHORT_RAY_RUN, "--checkpoint-every-s", "2")
    try:
        wait_for(lambda: learner_has_trained(tmp_path / "run"), proc, 120, "learner steps")
        wait_for(
            lambda: checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints"),
            proc, 60, "a checkpoint",
        )  # fmt: skip
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "sigterm"
    if "error" in summary:  # the components went first: the newest checkpoint is named
        assert summary["error"].startswith("the finish was cut short: "), summary["error"]
        assert summary["checkpoint"] and Path(summary["checkpoint"]).is_file()
        assert "launch.py: sigterm: the run's components were stopped too" in err
    else:
        check_finished_files(tmp_path / "run", summary)


def test_without_address_a_new_local_ray_starts_even_where_a_cluster_runs(
    tmp_path, monkeypatch, capsys
):
    """A cluster left by `ray start` (found by ray.init through RAY_ADDRESS or
    /tmp/ray/ray_current_cluster) is not joined without --address: joining it with num_cpus
    set was a ValueError traceback."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    try:
        rc = launch.main(
            [
                "--num-cpus",
                "1",
                "--no-dashboard",
                "--max-env-steps",
                "256",
                "--eval-episodes",
                "2",
                "--sampled-eval-episodes",
                "1",
                "--num-actors",
                "auto",
                "--run-root",
                str(tmp_path),
                "--run-name",
                "run",
            ]
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert rc == 0, capsys.readouterr().err
    # auto on one CPU: half for the learner, one actor on the rest; config.json records it, resolved
    assert json.loads((tmp_path / "run" / "config.json").read_text())["num_actors"] == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "env step budget spent" and summary["env_steps"] >= 256
