"""Seeing a run: Ray metrics on the node's Prometheus endpoint, the Grafana dashboard's panel
queries against a real Prometheus, the actors' rate lines in the dashboard's log view, the
console, TensorBoard tags, the learning-curve PNG and (where Chromium is installed) the Ray
dashboard page.

One short pipeline (module fixture: `python launch.py` on a local Ray, its console captured)
serves the end-to-end checks; a watcher thread scrapes http://127.0.0.1:PORT/metrics and asks
the dashboard while the run goes on, since Ray exports only about every 10 s and the run shuts
Ray down when it ends. Prometheus (Debian's package, where installed) scrapes the same port.
"""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from actors.actor import RATE_PREFIX
from common.ray_metrics import SPECS, Recorder, build_ray_metric
from common.sequence import SequenceSpec, encode_sequence
from driver import grafana
from driver.trainer import FAULT_KINDS
from replay.shard import ReplayShard
from tests import browser, prometheus

ROOT = Path(__file__).resolve().parents[1]
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
DASHBOARD_URL = re.compile(r"^ray: started a local Ray, dashboard at (http://[\w.:-]+)$", re.M)


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


class Console(threading.Thread):
    """Collects the lines a process writes to one of its pipes."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.lines = pipe, []
        self.start()

    def run(self):
        for line in self.pipe:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)


class Watcher(threading.Thread):
    """While the run goes on: scrapes the metrics endpoint every 2 s until every EXPECTED metric
    is non-zero, reads actor 0's log through the dashboard (what its Actors -> Log view shows)
    until a rate line is in it, and with Chromium loads the dashboard's actors page once."""

    def __init__(self, port: int, run_dir, stdout: Console):
        super().__init__(daemon=True)
        self.url, self.run_dir, self.stdout = f"http://127.0.0.1:{port}/metrics", run_dir, stdout
        self.stop, self.text, self.dom, self.actor_log = threading.Event(), "", None, ""
        self.token = ray_auth_token()

    def dashboard(self) -> str | None:
        found = DASHBOARD_URL.search(self.stdout.text())
        return found and found.group(1)

    def run(self):
        while not self.stop.is_set():
            try:
                self.text = urllib.request.urlopen(self.url, timeout=2).read().decode()
            except OSError:
                pass
            acting = "ray_muesli_actor" in self.text and self.dashboard()
            if acting and RATE_PREFIX not in self.actor_log:
                self.actor_log = self._actor_log()
            if acting and CHROMIUM and self.dom is None:
                self.dom = self._load_dashboard()
            done = RATE_PREFIX in self.actor_log and (self.dom is not None or not CHROMIUM)
            if done and not missing(parse(self.text)):
                return
            self.stop.wait(2.0)

    def _get(self, path: str, **query) -> bytes:
        request = urllib.request.Request(
            f"{self.dashboard()}{path}?{urllib.parse.urlencode(query)}",
            headers={"Authorization": f"Bearer {self.token}"} if self.token else {},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read()

    def _actor_log(self) -> str:
        """SelfPlayActor 0's stdout as the dashboard serves it (the API its log view reads)."""
        try:
            actors = json.loads(
                self._get(
                    "/api/v0/actors",
                    filter_keys="class_name",
                    filter_predicates="=",
                    filter_values="SelfPlayActor",
                )
            )["data"]["result"]["result"]
            alive = [a for a in actors if a["state"] == "ALIVE"]
            return self._get(
                "/api/v0/logs/file", actor_id=alive[0]["actor_id"], suffix="out"
            ).decode()
        except (OSError, KeyError, IndexError, ValueError):
            return ""

    def _load_dashboard(self) -> str:
        """The actors page's visible text, with the auth token as the dashboard's cookie; the
        screenshot goes to the run directory."""
        cookies = {"ray-authentication-token": self.token} if self.token else {}
        text, png = browser.open_page(
            self.dashboard() + "/#/actors", cookies, wait_for="SelfPlayActor(0)"
        )
        (self.run_dir / "dashboard.png").write_bytes(png)
        return text


def session_name(scrape: str) -> str:
    return re.search(r'ray_muesli_\w+\{[^}]*SessionName="([^"]+)"', scrape).group(1)


def panel_queries() -> list:
    """[(panel title, expr)] of every target of the Grafana dashboard's panels."""
    board = json.loads(grafana.DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory):
    """A short CartPole run of `python launch.py` on a local 2-CPU Ray with its dashboard and a
    known metrics port (~45 s); where Prometheus is installed, the panels' answers over the run."""
    root = tmp_path_factory.mktemp("runs")
    run_dir, port = root / "run", free_port()
    run_dir.mkdir()
    argv = [
        sys.executable,
        "launch.py",
        *("--run-root", str(root), "--run-name", "run", "--num-cpus", "2", "--seed", "0"),
        *("--metrics-export-port", str(port), "--max-seconds", str(RUN_SECONDS)),
        *("--replay-capacity", "300", "--eval-episodes", "5", "--eval-every-env-steps", "10000"),
        "--dashboard",
    ]
    # Ray exports every 2 s instead of 10: a short run on a loaded machine gives every panel
    # several points
    env = {**os.environ, "RAY_metrics_report_interval_ms": "2000"}
    with contextlib.ExitStack() as stack:
        prom = None
        if prometheus.BINARY:
            prom = stack.enter_context(prometheus.Prometheus(f"127.0.0.1:{port}"))
        started = time.time()
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        stdout, stderr = Console(proc.stdout), Console(proc.stderr)
        watcher = Watcher(port, run_dir, stdout)
        watcher.start()
        rc = proc.wait(timeout=RUN_SECONDS + 150)
        ended = time.time()
        stdout.join(timeout=10), stderr.join(timeout=10)
        watcher.stop.set()
        watcher.join(timeout=70)
        panels = sizes = None
        if prom is not None and watcher.text:
            session = session_name(watcher.text)
            panels = [
                (
                    title,
                    expr,
                    prom.query_range(expr.replace("$SessionName", session), started, ended),
                )
                for title, expr in panel_queries()
            ]
            query = f'ray_muesli_replay_size{{SessionName="{session}"}}'
            (shard,) = prom.query_range(query, started, ended)
            sizes = shard["values"]
    assert rc == 0, stdout.text() + "\n" + stderr.text()
    return SimpleNamespace(
        run_dir=run_dir,
        watcher=watcher,
        stdout=stdout.lines,
        stderr=stderr.lines,
        panels=panels,
        sizes=sizes,
    )


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
    watcher = ray_run.watcher
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

    run_dir = ray_run.run_dir
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
    run_dir = ray_run.run_dir
    png = (run_dir / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] > 0 and summary["learner_steps"] > 0


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless check needs Debian's chromium (/usr/bin/chromium); CI does not install it",
)
def test_ray_dashboard_lists_the_components_in_headless_chromium(ray_run):
    run_dir, watcher = ray_run.run_dir, ray_run.watcher
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


# -- the Grafana dashboard ------------------------------------------------------------------

PANELS = {
    "Env steps/s per actor",
    "Learner updates/s",
    "Replay fill",
    "Policy lag",
    "Faults",
}


def test_dashboard_panels_query_project_metrics_of_the_chosen_session():
    """No Prometheus needed: every panel reads the data source variable, and each query names
    metrics that common/ray_metrics.SPECS defines (as Ray exports them) and filters by session."""
    board = json.loads(grafana.DASHBOARD.read_text())
    exported = {
        f"ray_muesli_{c}_{n}" + ("_total" if spec[0] == "counter" else "")
        for (c, n), spec in SPECS.items()
    }
    assert {p["title"] for p in board["panels"]} == PANELS
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "SessionName"]
    for title, expr in panel_queries():
        names = set(re.findall(r"\bray_muesli_\w+", expr))
        assert names and names <= exported, (title, names - exported)
        assert expr.count('{SessionName=~"$SessionName"}') == len(re.findall(r"ray_muesli_", expr))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.skipif(
    prometheus.BINARY is None,
    reason="needs Debian's prometheus (apt-get install -y prometheus); .ci/run installs it where it can",
)
def test_each_panel_query_returns_the_runs_data_from_a_real_prometheus(ray_run):
    """Grafana's range queries, as the panels send them with the run's session chosen, against
    a Prometheus that scraped the run: every panel has data, with the labels and values the
    run can only give if the query is right (one actor and one shard: --num-cpus 2)."""
    assert ray_run.panels is not None, "the metrics endpoint never answered"
    answers = {title: series for title, _, series in ray_run.panels}
    shown = {
        title: [
            (s["metric"], max(float(v) for _, v in s["values"]), len(s["values"])) for s in series
        ]
        for title, series in answers.items()
    }
    print("panel answers (labels, max, points):", json.dumps(shown, indent=1))
    for title in PANELS:
        assert answers[title], f"panel {title!r} returned no data: {ray_run.panels}"
    (actor,) = shown["Env steps/s per actor"]
    assert actor[0] == {"index": "0"} and actor[1] > 0
    ((labels, updates, _),) = shown["Learner updates/s"]
    assert labels == {} and updates > 0
    ((labels, fill, _),) = shown["Replay fill"]
    assert labels == {"index": "0"} and 0 < fill <= 1
    # the shard's size over its capacity of 300, point by point
    (fill_series,) = answers["Replay fill"]
    size = {t: float(v) / 300 for t, v in ray_run.sizes}
    assert {t: float(v) for t, v in fill_series["values"]} == size
    ((labels, lag, _),) = shown["Policy lag"]
    assert labels == {} and lag > 0
    faults = {s["metric"]["kind"]: {v for _, v in s["values"]} for s in answers["Faults"]}
    assert faults == {kind: {"0"} for kind in FAULT_KINDS}  # a healthy run: every kind, all 0


def test_the_dashboard_is_written_into_rays_grafana_folder_during_the_run(ray_run):
    """The run's driver is on the head and the head has its dashboard: the file lands in the
    folder Ray's own Grafana provider reads, byte for byte the repository's."""
    (line,) = [line for line in ray_run.stdout if line.startswith("grafana: ")]
    folder = Path(line.split(" in ", 1)[1].split(" (")[0])
    session_dir = folder.parents[2]  # <session>/metrics/grafana/dashboards
    assert grafana.ray_dashboard_folder(session_dir) == folder
    assert (folder / "muesli-ray.json").read_bytes() == grafana.DASHBOARD.read_bytes()
    assert (folder / "default_grafana_dashboard.json").exists()  # Ray's own, next to it


# -- the actors' rate lines and the console -------------------------------------------------

RATE_LINE = re.compile(
    re.escape(RATE_PREFIX) + r"actor 0: \d+ env steps/s over \d+\.\d s \([\d,]+ env steps, "
    r"\d+ episodes; [\d,]+ in all\), weights of learner step -?\d+$"
)


def test_actors_log_their_rate_where_the_dashboard_shows_their_log(ray_run):
    lines = [line for line in ray_run.watcher.actor_log.splitlines() if RATE_PREFIX in line]
    assert lines, f"no rate line in actor 0's log:\n{ray_run.watcher.actor_log[-2000:]}"
    for line in lines:
        assert RATE_LINE.match(line), line


def test_console_has_the_progress_line_and_no_unexplained_error_or_token_warning(ray_run):
    """What a user sees: the actors' rate lines stay off the console, Ray's one error-level
    line (ray#53727) comes with the driver's note, and Ray does not warn about the token."""
    from driver.on_ray import RESTART_ERROR_NOTE

    console = ray_run.stdout + ray_run.stderr
    # Ray's INFO start-up line is off stderr; the dashboard's address is on stdout instead
    assert not [line for line in ray_run.stderr if "Started a local Ray instance" in line]
    assert [line for line in ray_run.stdout if DASHBOARD_URL.match(line)], ray_run.stdout[:5]
    errors = [line for line in console if re.search(r" E \d+ \d+\]|\bERROR\b", line)]
    assert len(errors) == 1 and "ray-project/ray/issues/53727" in errors[0], errors
    assert RESTART_ERROR_NOTE in ray_run.stdout
    assert not [line for line in console if "Token authentication is enabled" in line]
    assert not [line for line in console if RATE_PREFIX in line]
    progress = [line for line in ray_run.stdout if line.startswith("[") and "| loss" in line]
    assert progress and not [line for line in progress if "nan" in line], progress


def test_progress_line_shows_dashes_until_there_is_a_loss_and_the_newest_screen_or_eval(tmp_path):
    import io

    from driver.metrics import RunLogger

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
