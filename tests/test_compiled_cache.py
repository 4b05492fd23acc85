"""The compiled loss cache (learner/compiled.py): a learner with --compile auto on CPU learns
eagerly when its compiled loss is not cached, the end of the run builds it in a background
process, and a later learner loads it while it learns and swaps it in with the same numbers; a
build cut short, a damaged cache or a changed source never reaches a run."""

import os
import signal
import time

import pytest
import torch

from common import envs as envs_lib
from learner import compiled as compiled_lib
from tests.test_learner import make_batch, make_learner, small_config

CFG = dict(compile="auto", starts_per_sequence=2)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(compiled_lib.CACHE_ENV, str(tmp_path))
    # loading sets TORCHINDUCTOR_CACHE_DIR to a private copy: leave this process's setting as it was
    monkeypatch.setenv(
        "TORCHINDUCTOR_CACHE_DIR",
        os.environ.get("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor")),
    )
    return tmp_path / "compiled"


def wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def build_after_run(cfg):
    """What launch.py does when a run ends."""
    return compiled_lib.build_after_run(cfg, envs_lib.describe(cfg.env))


def test_the_end_of_a_run_builds_the_cache_and_a_later_learner_swaps_it_in(cache, capsys):
    first, _ = make_learner(small_config(**CFG))
    folder = first.compiled_folder()
    # not cached: this run learns eagerly
    assert first.cached_loss is None and not first.compiled
    # and builds nothing while it runs
    assert not cache.exists()
    first.update(make_batch(0))
    assert build_after_run(first.cfg) == folder
    assert build_after_run(first.cfg) is None  # one build at a time
    wait_for(lambda: (folder / "loss.bin").exists(), 600)  # nice 19: slow under load
    wait_for(lambda: not (cache / f"{folder.name}.lock").exists(), 30)
    assert not list(cache.glob(".staging-*"))
    assert build_after_run(first.cfg) is None  # built: nothing to do

    later, _ = make_learner(small_config(**CFG))
    twin, _ = make_learner(small_config(compile="off", starts_per_sequence=2))
    twin.online.load_state_dict(later.online.state_dict())
    twin.target.load_state_dict(later.target.state_dict())
    assert later.cached_loss is not None
    wait_for(later.cached_loss.done, 120)
    assert later.cached_loss.error is None
    for seed in range(3):
        torch.manual_seed(seed)
        got = later.update(make_batch(seed, terminal_at=seed + 1))
        # swapped in at the first update
        assert later.compiled and later.cached_loss is None
        torch.manual_seed(seed)
        want = twin.update(make_batch(seed, terminal_at=seed + 1))
        for key in (
            "loss/total",
            "loss/pg",
            "loss/value",
            "loss/model",
            "loss/reward",
            "learner/grad_norm",
        ):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), (seed, key)


def test_a_build_killed_part_way_leaves_nothing_and_the_next_run_builds_again(cache):
    learner, _ = make_learner(small_config(**CFG, seed=1))
    folder = build_after_run(learner.cfg)
    lock = cache / f"{folder.name}.lock"
    wait_for(lambda: lock.read_text().strip(), 10)
    pid = int(lock.read_text())
    # part-way: kernels being written
    wait_for(lambda: list(cache.glob("*/inductor")), 120)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not compiled_lib._pid_alive(pid) or _reaped(pid), 10)
    # nothing a later run would load
    assert not folder.exists()
    again, _ = make_learner(small_config(**CFG, seed=1))
    assert again.cached_loss is None
    assert build_after_run(again.cfg) == folder
    # the dead builder's lock was taken over
    assert int(lock.read_text()) != pid
    # its leftovers removed
    assert not [p for p in cache.glob(".staging-*") if p.name.endswith(f"-{pid}")]
    os.kill(int(lock.read_text()), signal.SIGKILL)


def _reaped(pid):
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


def test_a_damaged_cache_gives_one_line_and_eager_learning(cache, capsys):
    learner, _ = make_learner(small_config(**CFG, seed=2))
    folder = learner.compiled_folder()
    (folder / "inductor").mkdir(parents=True)
    (folder / "loss.bin").write_bytes(b"not a compiled function")
    damaged, _ = make_learner(small_config(**CFG, seed=2))
    wait_for(damaged.cached_loss.done, 30)
    capsys.readouterr()
    damaged.update(make_batch(0))
    out = capsys.readouterr().out
    assert out.count("did not load") == 1 and "learning eagerly" in out
    assert not damaged.compiled and damaged.cached_loss is None
    damaged.update(make_batch(1))
    assert "did not load" not in capsys.readouterr().out


def test_the_key_names_sources_config_and_layout(cache, monkeypatch):
    learner, _ = make_learner(small_config(compile="off"))
    spec, params = learner.online.spec, learner.params
    base = compiled_lib.cache_key(spec, params, 6, 4, "float32", "cpu", False)
    assert base == compiled_lib.cache_key(spec, params, 6, 4, "float32", "cpu", False)
    import dataclasses

    others = [
        compiled_lib.cache_key(
            dataclasses.replace(spec, width=32), params, 6, 4, "float32", "cpu", False
        ),
        compiled_lib.cache_key(
            spec, dataclasses.replace(params, discount=0.9), 6, 4, "float32", "cpu", False
        ),
        compiled_lib.cache_key(spec, params, 7, 4, "float32", "cpu", False),
        compiled_lib.cache_key(spec, params, 6, 4, "uint8", "cpu", False),
        compiled_lib.cache_key(spec, params, 6, 4, "float32", "cpu", True),
    ]
    # a different source set
    monkeypatch.setattr(compiled_lib, "SOURCES", compiled_lib.SOURCES[:-1])
    others.append(compiled_lib.cache_key(spec, params, 6, 4, "float32", "cpu", False))
    assert len({base, *others}) == len(others) + 1


def test_cache_off_neither_reads_nor_builds(tmp_path, monkeypatch):
    monkeypatch.setenv(compiled_lib.CACHE_ENV, "off")
    learner, _ = make_learner(small_config(**CFG))
    assert learner.cached_loss is None and compiled_lib.cache_root() is None
    assert build_after_run(learner.cfg) is None


@pytest.mark.parametrize("flags", [dict(compile="off"), dict(compile="on"), dict(address="auto")])
def test_no_build_after_a_run_that_does_not_use_the_cache(cache, flags):
    assert build_after_run(small_config(**{**CFG, **flags})) is None
    assert not cache.exists()
