"""Seeing a run: Ray metrics on the node's Prometheus endpoint, TensorBoard tags, the
learning-curve PNG and (where Chromium is installed) the Ray dashboard page.

One short pipeline on a local Ray (module fixture) serves the end-to-end checks; a
watcher thread scrapes http://127.0.0.1:PORT/metrics while launch.main runs, since
Ray exports only about every 10 s and launch.main shuts Ray down when it returns.
"""

import json
import os
import re
import socket
import threading
import time
import urllib.request
from collections import defaultdict

import pytest

import launch
from common.ray_metrics import SPECS, Recorder, build_ray_metric
from common.sequence import SequenceSpec, encode_sequence
from replay.shard import ReplayShard
from tests import browser

CHROMIUM = browser.CHROMIUM
RUN_SECONDS = 30

# Prometheus names (Ray adds `ray_`, and `_total` to counters) that must be non-zero.
EXPECTED = {
    "actor": [
        "env_steps_total",
        "episodes_total",
        "episode_return",
        "env_steps_per_s",
        "inference_ms",
        "weight_pulls_total",
        "policy_version",
    ],
    "replay": ["inserts_total", "samples_total", "size", "fill", "evictions_total"],
    "learner": [
        "steps_total",
        "transitions_per_s",
        "loss",
        "batch_wait_s_count",
        "policy_lag",
        "publishes_total",
    ],
}
SAMPLE = re.compile(r"^(ray_muesli_\w+)\{(.*)\}\s+(\S+)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(text: str) -> dict:
    """{(metric name, component): summed |value|} over the muesli samples of a scrape."""
    out = defaultdict(float)
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            out[(match.group(1), labels.get("component"))] += abs(float(match.group(3)))
    return out


def missing(values: dict) -> list:
    return [
        f"ray_muesli_{c}_{n}"
        for c, names in EXPECTED.items()
        for n in names
        if values.get((f"ray_muesli_{c}_{n}", c), 0.0) == 0.0
    ]


def ray_auth_token() -> str:
    """The token a local Ray uses (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token), or ''."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return open(path).read().strip() if os.path.exists(path) else ""


class Watcher(threading.Thread):
    """Scrapes the metrics endpoint every 2 s until every EXPECTED metric is non-zero; with
    Chromium, also loads the dashboard once the actors have started."""

    def __init__(self, port: int, run_dir, dashboard: bool):
        super().__init__(daemon=True)
        self.url, self.run_dir, self.dashboard = (
            f"http://127.0.0.1:{port}/metrics",
            run_dir,
            dashboard,
        )
        self.stop, self.text, self.dom, self.started = threading.Event(), "", None, time.monotonic()

    def run(self):
        while not self.stop.is_set():
            try:
                self.text = urllib.request.urlopen(self.url, timeout=2).read().decode()
            except OSError:
                pass
            if self.dashboard and self.dom is None and "ray_muesli_actor" in self.text:
                self.dom = self._load_dashboard()
            if not missing(parse(self.text)) and (self.dom is not None or not self.dashboard):
                return
            self.stop.wait(2.0)

    def _load_dashboard(self) -> str:
        """The actors page's visible text, with the auth token as the dashboard's cookie; the
        screenshot goes to the run directory."""
        import ray

        url = ray._private.worker.get_dashboard_url() or "127.0.0.1:8265"
        url = url if url.startswith("http") else "http://" + url
        token = ray_auth_token()
        cookies = {"ray-authentication-token": token} if token else {}
        text, png = browser.open_page(url + "/#/actors", cookies, wait_for="SelfPlayActor(0)")
        (self.run_dir / "dashboard.png").write_bytes(png)
        return text


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory):
    """A short CartPole run on a local 2-CPU Ray with a known metrics port (~45 s)."""
    root = tmp_path_factory.mktemp("runs")
    run_dir, port = root / "run", free_port()
    run_dir.mkdir()
    watcher = Watcher(port, run_dir, dashboard=CHROMIUM is not None)
    watcher.start()
    rc = launch.main(
        [
            "--run-root",
            str(root),
            "--run-name",
            "run",
            "--num-cpus",
            "2",
            "--seed",
            "0",
            "--metrics-export-port",
            str(port),
            "--max-seconds",
            str(RUN_SECONDS),
            "--replay-capacity",
            "300",
            "--eval-episodes",
            "5",
            "--eval-every-env-steps",
            "10000",
            "--dashboard" if CHROMIUM else "--no-dashboard",
        ]
    )
    watcher.stop.set()
    watcher.join(timeout=70)
    assert rc == 0
    return run_dir, watcher


# -- the adapter and the plain classes, no Ray ----------------------------------------------


def test_recorder_without_ray_is_a_no_op_that_still_checks_names():
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        pytest.skip("a Ray session is open in this process")
    rec = Recorder("actor", 3)
    rec.inc("env_steps", 16)
    rec.inc("episodes", 0)
    rec.set("policy_version", 7)
    rec.set("episode_return", 21.0)
    assert rec._live is False and rec.tags == {"component": "actor", "index": "3"}
    with pytest.raises(KeyError, match="env_step"):
        rec.inc("env_step", 1)  # typo
    with pytest.raises(KeyError, match="policy_version"):
        rec.inc("policy_version", 1)  # a gauge, not a counter


def test_every_spec_builds_as_a_ray_metric():
    """Ray checks names, tag keys and histogram boundaries only when a metric is built."""
    for (component, name), spec in SPECS.items():
        assert spec[0] in ("counter", "gauge", "histogram")
        build_ray_metric(f"muesli_{component}_{name}", spec)


class Calls:
    """Stands in for a Recorder: remembers every call."""

    def __init__(self):
        self.calls = defaultdict(list)

    def inc(self, name, value=1.0, **tags):
        self.calls[name].append(value)

    set = observe = inc


def test_replay_shard_reports_inserts_rejections_evictions_size_and_samples():
    spec = SequenceSpec(4, (2,), "float32", 2)
    shard = ReplayShard(spec, capacity=3, index=1)
    shard.metrics = rec = Calls()
    good = spec.empty()
    good["mask"][:] = True
    shard.insert([encode_sequence(good)] * 5 + [b"not msgpack"])
    assert shard.sample(1, 1) is not None
    assert (
        rec.calls["inserts"] == [5]
        and rec.calls["rejected"] == [1]
        and rec.calls["evictions"] == [2]
    )
    assert rec.calls["size"] == [3] and rec.calls["fill"] == [1.0] and rec.calls["samples"] == [2]


# -- a short run on local Ray ---------------------------------------------------------------


def test_ray_metrics_endpoint_shows_actor_replay_and_learner_metrics(ray_run):
    _, watcher = ray_run
    values = parse(watcher.text)
    assert watcher.text, "the metrics endpoint never answered"
    assert not missing(values), f"missing or zero: {missing(values)}; muesli lines:\n" + "\n".join(
        line for line in watcher.text.splitlines() if "muesli" in line
    )
    # tagged by component and index; losses also by term
    assert re.search(r'ray_muesli_actor_env_steps_total\{[^}]*index="0"', watcher.text)
    assert re.search(r'ray_muesli_learner_loss\{[^}]*term="total"', watcher.text)


def test_tensorboard_has_namespaced_scalars_and_config(ray_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = ray_run
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in (
        "actor/env_steps_per_s",
        "actor/episode_return",
        "loss/total",
        "learner/steps",
        "learner/policy_lag",
        "eval/greedy_return",
    ):
        assert tag in scalars, sorted(scalars)
    assert events.Scalars("learner/steps")[-1].value > 0
    assert "config" in " ".join(events.Tags()["tensors"])  # add_text lands under tensors


def test_learning_curve_png_is_written(ray_run):
    run_dir, _ = ray_run
    png = (run_dir / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] > 0 and summary["learner_steps"] > 0


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless check needs Debian's chromium (/usr/bin/chromium); CI does not install it",
)
def test_ray_dashboard_lists_the_components_in_headless_chromium(ray_run):
    run_dir, watcher = ray_run
    shot = run_dir / "dashboard.png"
    assert watcher.dom, "chromium returned no page"
    # The actors page, past the token prompt, names every component by its __repr__.
    for name in ("SelfPlayActor(0)", "ReplayShard(0)", "Learner(cpu)", "ALIVE"):
        assert name in watcher.dom, watcher.dom[:2000]
    assert (
        shot.exists()
        and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        and shot.stat().st_size > 20_000
    )


def test_progress_line_shows_dashes_until_there_is_a_loss_and_the_newest_screen_or_eval(tmp_path):
    import io

    from common.metrics import RunLogger

    out = io.StringIO()
    log = RunLogger(tmp_path, "{}", stream=out)

    def segments():
        log.progress(force=True)
        line = out.getvalue().splitlines()[-1]
        return [part.strip() for part in line.split("|")]

    assert segments()[3:] == [
        "eval         -",
        "learner       0 lag   0.0 (     0 env)",
        "loss       -",
    ]
    log.screening([40.0, 50.5], env_steps=256)
    log.scalars({"loss/total": 0.5, "learner/steps": 100})
    assert segments()[3] == "screen    45.2" and segments()[5] == "loss   0.500"
    log.evaluation([386.0, 387.0], env_steps=512)
    assert segments()[3] == "eval     386.5"
    log.screening([10.0], env_steps=1024)  # the newest look, whichever kind
    assert segments()[3] == "screen    10.0"
    log.close()
