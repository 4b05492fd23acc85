"""A real multi-node run: a Ray head and a Ray worker, each its own `ray start` process on
its own host, and `launch.py --address HEAD:6379 --num-actors auto` joining them.

The two hosts are network namespaces that the test creates (`ip netns add`, one veth pair
between them carrying 10.213.0.1/24 and 10.213.0.2/24 and no route anywhere else), so each
node has its own address and its own ports, and Ray's default ports are used as on a real
cluster. Where the machine forbids namespaces (not root, no CAP_NET_ADMIN, no veth), the
nodes share this host's loopback instead, as 127.0.0.2 and 127.0.0.3 with distinct free
ports. MUESLI_MULTINODE=loopback takes that path on purpose.

The head gets 1 CPU and the worker 2, so the plan (learner 1 CPU, one actor per free CPU)
has more actors than the head can hold. Token authentication stays on: a fresh token goes
to both nodes, the driver and the state-API client, and a client with another token is
refused. Checked: actors ran on the worker node (Ray's state API and summary.json's
`nodes` agree), training progressed (env and learner steps), the head lists the worker's
metrics endpoint for Prometheus and it answers without a token, and the cluster shuts down
with nothing left running. Each node is a `ray start --block` process ended with SIGTERM
(Ray ends its children); `ray stop` is never used: it ends every Ray process on the
machine, other users' too.
"""

import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAD_CPUS, WORKER_CPUS = 1, 2
# launch.py stops at RUN_ENV_STEPS (about 20 s of training here) or, on a loaded machine,
# after RUN_SECONDS, counted from before ray.init (actor start-up included).
RUN_ENV_STEPS, RUN_SECONDS = 6000, 60
NETNS_IP = dict(head="10.213.0.1", worker="10.213.0.2")
NETNS_PREFIX = 24
# not 127.0.0.1: Ray swaps that for the LAN address
LOOPBACK_IP = dict(head="127.0.0.2", worker="127.0.0.3")
# netns mode; loopback mode picks free ports
METRICS_PORT = 8080

# Runs on the head host and prints one JSON line {rows, error}; polls until done or the deadline.
#   nodes URL N     the cluster's nodes, until N are alive      (state API)
#   actors URL      every actor of the cluster, until all are dead
#   scrape URL      GET a Prometheus endpoint, no token
STATE_SCRIPT = r"""
import json, sys, time, urllib.request
from ray.util.state import list_actors, list_nodes
what, url, want, deadline = sys.argv[1], sys.argv[2], int(sys.argv[3]), time.monotonic() + float(sys.argv[4])
while True:
    try:
        if what == "nodes":
            rows = [dict(node_id=n.node_id, ip=n.node_ip, state=n.state) for n in list_nodes(address=url)]
            done = sum(r["state"] == "ALIVE" for r in rows) >= want
        elif what == "actors":
            rows = [dict(cls=a.class_name, node_id=a.node_id, state=a.state)
                    for a in list_actors(address=url, limit=10000, raise_on_missing_output=False)]
            done = bool(rows) and all(r["state"] == "DEAD" for r in rows)
        else:
            text = urllib.request.urlopen(url, timeout=10).read().decode(errors="replace")
            rows = [line for line in text.splitlines() if line.startswith("ray_")]
            done = bool(rows)
        error = ""
    except Exception as exc:        # not up yet, or refused
        rows, done, error = [], False, f"{type(exc).__name__}: {exc}"
    if done or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(dict(rows=rows[:10000], error=error[-2000:])))
"""


def free_ports(n: int) -> list:
    """n distinct TCP ports free on this host now (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_quiet(cmd: list) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def process_table() -> dict:
    """{pid: (ppid, session id, command line)} of every process on the machine."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
                out[int(entry.name)] = (
                    int(fields[1]),
                    int(fields[3]),
                    (entry / "cmdline").read_bytes(),
                )
            except (OSError, ValueError):
                pass
    return out


class TwoHosts:
    """Two hosts for Ray nodes: network namespaces joined by a veth pair, or loopback."""

    def __init__(self, tag: str):
        self.namespaces = {}  # role -> namespace name (netns mode only)
        if os.environ.get("MUESLI_MULTINODE", "") == "loopback":
            self.why_not_netns = "MUESLI_MULTINODE=loopback"
        else:
            self.why_not_netns = self._make_namespaces(tag)
        self.mode = "loopback" if self.why_not_netns else "netns"
        self.ip = dict(LOOPBACK_IP if self.why_not_netns else NETNS_IP)

    def _make_namespaces(self, tag: str) -> str:
        """Create the namespaces and the veth pair: '' on success, else why not (nothing left behind)."""
        if shutil.which("ip") is None:
            return "no `ip` command (iproute2)"
        names = {role: f"muesli-{role}-{tag}" for role in ("head", "worker")}
        dev = {"head": "veth-head", "worker": "veth-worker"}
        steps = [
            ["ip", "netns", "add", names["head"]],
            ["ip", "netns", "add", names["worker"]],
            # made inside the namespaces: the machine's own interfaces never change
            [
                "ip",
                "link",
                "add",
                dev["head"],
                "netns",
                names["head"],
                "type",
                "veth",
                "peer",
                "name",
                dev["worker"],
                "netns",
                names["worker"],
            ],
        ]
        for role in ("head", "worker"):
            steps += [
                [
                    "ip",
                    "-n",
                    names[role],
                    "addr",
                    "add",
                    f"{NETNS_IP[role]}/{NETNS_PREFIX}",
                    "dev",
                    dev[role],
                ],
                ["ip", "-n", names[role], "link", "set", "lo", "up"],
                ["ip", "-n", names[role], "link", "set", dev[role], "up"],
            ]
        for step in steps:
            if step[:3] == ["ip", "netns", "add"]:
                self.namespaces[step[3]] = step[3]
            result = run_quiet(step)
            if result.returncode != 0:
                self.delete_namespaces()
                return f"`{' '.join(step)}` failed: {result.stderr.strip()}"
        self.namespaces = names
        return ""

    def prefix(self, role: str) -> list:
        """Command prefix that runs a program on that host."""
        return ["ip", "netns", "exec", self.namespaces[role]] if self.namespaces else []

    def pids(self) -> list:
        """Processes running inside the namespaces."""
        out = []
        for name in self.namespaces.values():
            out += [int(p) for p in run_quiet(["ip", "netns", "pids", name]).stdout.split()]
        return out

    def delete_namespaces(self) -> list:
        """Delete the namespaces (the veth pair goes with them); returns those still listed."""
        if not self.namespaces:
            return []
        for name in self.namespaces.values():
            run_quiet(["ip", "netns", "del", name])
        listed = run_quiet(["ip", "netns", "list"]).stdout.split()
        left = [name for name in self.namespaces.values() if name in listed]
        if not left:
            self.namespaces = {}
        return left


class Cluster:
    """A Ray head and one Ray worker, each a `ray start --block` process on its own host."""

    def __init__(self):
        # short: Ray's socket paths live below it
        self.temp = tempfile.mkdtemp(prefix="mmn-", dir="/tmp")
        self.hosts = TwoHosts(Path(self.temp).name[len("mmn-") :])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=secrets.token_hex(32),
            RAY_USAGE_STATS_ENABLED="0",
            PYTHONUNBUFFERED="1",
        )
        self.ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
        assert self.ray, "the `ray` command (ray[default]) is not installed"
        head, worker = self.hosts.ip["head"], self.hosts.ip["worker"]
        # a host of its own: Ray's default ports, as on a real cluster
        if self.hosts.mode == "netns":
            self.port, self.dashboard_port = 6379, 8265
            self.metrics_port = dict(head=METRICS_PORT, worker=METRICS_PORT)
            extra = {
                role: ["--metrics-export-port", str(METRICS_PORT)] for role in ("head", "worker")
            }
        # one shared loopback: every port a node opens is set and free
        else:
            flags = [
                "--metrics-export-port",
                "--node-manager-port",
                "--object-manager-port",
                "--dashboard-agent-listen-port",
                "--dashboard-agent-grpc-port",
                "--runtime-env-agent-port",
            ]
            ports = free_ports(3 + 2 * len(flags))
            self.port, self.dashboard_port, client_port = ports[:3]
            per_role = dict(head=ports[3 : 3 + len(flags)], worker=ports[3 + len(flags) :])
            self.metrics_port = {role: values[0] for role, values in per_role.items()}
            extra = {
                role: [x for f, v in zip(flags, values) for x in (f, str(v))]
                for role, values in per_role.items()
            }
            extra["head"] += ["--ray-client-server-port", str(client_port)]
        self.address = f"{head}:{self.port}"
        self.dashboard = f"http://{head}:{self.dashboard_port}"
        self.logs, self.procs = [], {}
        self.procs["head"] = self._start(
            "head",
            [
                "--head",
                "--node-ip-address",
                head,
                "--port",
                str(self.port),
                "--num-cpus",
                str(HEAD_CPUS),
                "--include-dashboard",
                "true",
                "--dashboard-host",
                head,
                "--dashboard-port",
                str(self.dashboard_port),
                *extra["head"],
            ],
        )
        self.procs["worker"] = self._start(
            "worker",
            [  # it retries until the head's GCS answers
                "--address",
                self.address,
                "--node-ip-address",
                worker,
                "--num-cpus",
                str(WORKER_CPUS),
                *extra["worker"],
            ],
        )
        self.tree = set()  # pids of the nodes' process trees, seen before shutdown

    def _start(self, role: str, args: list) -> subprocess.Popen:
        log = open(os.path.join(self.temp, f"{role}.log"), "w")
        self.logs.append(log)
        cmd = self.hosts.prefix(role) + [
            self.ray,
            "start",
            "--block",
            "--disable-usage-stats",
            "--temp-dir",
            os.path.join(self.temp, role),
            *args,
        ]
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.temp,
            start_new_session=True,
        )

    def log_tail(self, role: str, chars: int = 3000) -> str:
        path = Path(self.temp) / f"{role}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def on_head(
        self, cmd: list, timeout: float, env: dict = None, cwd=None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.hosts.prefix("head") + cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env or self.env,
            cwd=cwd or self.temp,
        )

    def state(
        self, what: str, url: str = None, want: int = 0, wait_s: float = 0.0, token: str = None
    ) -> dict:
        env = dict(self.env, RAY_AUTH_TOKEN=token) if token else self.env
        result = self.on_head(
            [
                sys.executable,
                "-c",
                STATE_SCRIPT,
                what,
                url or self.dashboard,
                str(want),
                str(wait_s),
            ],
            timeout=wait_s + 60,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, timeout: float = 90.0) -> list:
        for role, proc in self.procs.items():
            assert proc.poll() is None, (
                f"ray start ({role}) exited {proc.returncode}:\n{self.log_tail(role)}"
            )
        got = self.state("nodes", want=2, wait_s=timeout)
        alive = [n for n in got["rows"] if n["state"] == "ALIVE"]
        assert len(alive) == 2, (
            f"nodes: {got}\n--- head ---\n{self.log_tail('head')}\n"
            f"--- worker ---\n{self.log_tail('worker')}"
        )
        return alive

    def _note_tree(self) -> None:
        """Remember every process descended from, or in the session of, the two `ray start`s."""
        table = process_table()
        roots = {p.pid for p in self.procs.values()}
        tree = set(roots) | {pid for pid, (_, sid, _) in table.items() if sid in roots}
        grew = True
        while grew:
            new = {pid for pid, (ppid, _, _) in table.items() if ppid in tree} - tree
            tree |= new
            grew = bool(new)
        self.tree |= tree

    def leftovers(self) -> list:
        """Processes of this cluster still running: in its namespaces, in the process trees noted
        before shutdown, or naming its temp dir on their command line."""
        table = process_table()
        mine = {pid for pid, (_, _, cmdline) in table.items() if self.temp.encode() in cmdline}
        return sorted((set(self.hosts.pids()) | (self.tree & set(table)) | mine) - {os.getpid()})

    def shutdown(self, grace_s: float = 20.0) -> list:
        """SIGTERM both `ray start --block` processes; returns the pids still alive after grace_s."""
        self._note_tree()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if all(p.poll() is not None for p in self.procs.values()) and not self.leftovers():
                return []
            time.sleep(0.25)
        return self.leftovers()

    def close(self) -> None:
        """Finalizer: whatever of this cluster still runs is killed; namespaces and temp dir removed."""
        for pid in self.shutdown(grace_s=10.0):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for log in self.logs:
            log.close()
        self.hosts.delete_namespaces()
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def cluster():
    c = Cluster()
    try:
        yield c
    finally:
        c.close()


def discovery_targets(cluster, timeout: float = 30.0) -> list:
    """The metrics endpoints the head lists for Prometheus (Ray keeps the file in its temp dir)."""
    path = Path(cluster.temp) / "head" / "prom_metrics_service_discovery.json"
    deadline = time.monotonic() + timeout
    targets = []
    while time.monotonic() < deadline:
        try:
            targets = [t for group in json.loads(path.read_text()) for t in group["targets"]]
        except (OSError, ValueError, KeyError, TypeError):
            targets = []
        if f"{cluster.hosts.ip['worker']}:{cluster.metrics_port['worker']}" in targets:
            break
        time.sleep(0.5)
    return targets


def test_launch_joins_a_two_node_cluster_and_actors_run_on_the_worker(
    cluster, tmp_path, record_property
):
    started = time.monotonic()
    alive = cluster.wait_for_nodes()
    node_of_ip = {n["ip"]: n["node_id"] for n in alive}
    head_ip, worker_ip = cluster.hosts.ip["head"], cluster.hosts.ip["worker"]
    assert set(node_of_ip) == {head_ip, worker_ip}, alive
    up_s = time.monotonic() - started

    # Token authentication is on: a client holding another token is refused.
    refused = cluster.state("nodes", token=secrets.token_hex(32))
    assert refused["error"] and not refused["rows"], refused

    run = cluster.on_head(
        [
            sys.executable,
            "launch.py",
            "--address",
            cluster.address,
            "--num-actors",
            "auto",
            "--seed",
            "0",
            "--max-env-steps",
            str(RUN_ENV_STEPS),
            "--max-seconds",
            str(RUN_SECONDS),
            "--eval-every-env-steps",
            "3000",
            "--eval-episodes",
            "5",
            "--eval-screen-episodes",
            "5",
            "--run-root",
            str(tmp_path),
            "--run-name",
            "mn",
        ],
        timeout=RUN_SECONDS + 120,
        cwd=ROOT,
    )
    output = run.stdout + run.stderr
    run_s = time.monotonic() - started - up_s
    assert run.returncode == 0, output[-5000:]
    assert "placement:" in output, output[-5000:]
    summary = json.loads((tmp_path / "mn" / "summary.json").read_text())

    # Training progressed on the cluster.
    assert summary["env_steps"] > 0 and summary["learner_steps"] > 0, (summary, output[-5000:])

    # Where launch.py says its components ran: both nodes, actors on the worker.
    nodes = summary["nodes"]
    assert {n["ip"] for n in nodes.values()} == {head_ip, worker_ip}, nodes
    # auto: a CPU each, less the learner's
    assert summary["num_actors"] == HEAD_CPUS + WORKER_CPUS - 1, summary
    assert (
        json.loads((tmp_path / "mn" / "config.json").read_text())["num_actors"]
        == summary["num_actors"]
    )
    assert sum(n["actors"] for n in nodes.values()) == summary["num_actors"], nodes
    assert nodes[node_of_ip[worker_ip]]["actors"] >= 1, nodes
    assert (
        sum(n["learner"] for n in nodes.values()) == 1
        and sum(n["shards"] for n in nodes.values()) == 1
    ), nodes

    # Ray's own record (state API, from the head's dashboard) agrees node by node, and the
    # run's actors are gone once the driver has exited.
    actors = cluster.state("actors", wait_s=30)
    assert not actors["error"] and all(row["state"] == "DEAD" for row in actors["rows"]), actors
    per_node = {}
    for row in actors["rows"]:
        counts = per_node.setdefault(row["node_id"], {})
        counts[row["cls"]] = counts.get(row["cls"], 0) + 1
    for node_id, n in nodes.items():
        assert per_node.get(node_id, {}).get("SelfPlayActor", 0) == n["actors"], (per_node, nodes)
        assert per_node.get(node_id, {}).get("Learner", 0) == n["learner"], (per_node, nodes)
        assert per_node.get(node_id, {}).get("ReplayShard", 0) == n["shards"], (per_node, nodes)

    # What Prometheus scrapes: the head lists the worker's metrics endpoint, which needs no token.
    worker_metrics = f"{worker_ip}:{cluster.metrics_port['worker']}"
    targets = discovery_targets(cluster)
    assert worker_metrics in targets, targets
    scraped = cluster.state("scrape", url=f"http://{worker_metrics}/metrics", wait_s=20)
    assert scraped["rows"], scraped

    # Clean shutdown: nothing of either node keeps running; the hosts are removed.
    left = cluster.shutdown()
    assert not left, f"still running after SIGTERM: {left}"
    assert all(p.returncode is not None for p in cluster.procs.values())
    assert not cluster.hosts.delete_namespaces(), "network namespaces still listed"

    seen = {
        ("head " if n["ip"] == head_ip else "worker ") + n["ip"]: {
            k: n[k] for k in ("learner", "actors", "shards")
        }
        for n in nodes.values()
    }
    how = cluster.hosts.mode + (
        f" ({cluster.hosts.why_not_netns})" if cluster.hosts.why_not_netns else ""
    )
    line = (
        f"multinode, {how}: {seen}; env steps {summary['env_steps']}, learner steps {summary['learner_steps']}, "
        f"{time.monotonic() - started:.0f} s (cluster up {up_s:.0f} s, launch.py {run_s:.0f} s, "
        f"training {summary['seconds']:.0f} s)"
    )
    print(line)
    record_property("multinode", line)


# -- placement on several nodes (pure: driver/placement.plan against a model of Ray's packing) --


def fits_everywhere(node_cpus: list, plan) -> bool:
    """Whether Ray can place the learner and every actor on nodes with these free CPUs, on
    whichever node the learner lands (Ray counts CPUs in 1/10000ths; an actor never spans nodes)."""
    unit = lambda x: int(round(x * 10000))  # noqa: E731
    learner, actor = unit(plan.learner["num_cpus"]), unit(plan.actor["num_cpus"])
    free = [unit(c) for c in node_cpus]
    for i, cpus in enumerate(free):
        if cpus >= learner:
            left = free[:i] + [cpus - learner] + free[i + 1 :]
            if sum(c // actor for c in left) < plan.num_actors:
                return False
    return True


@pytest.mark.parametrize(
    "node_cpus", [[1, 2], [2, 2], [1, 1, 1], [3, 4], [8], [2, 2, 2, 2], [1, 4, 4], [16, 16]]
)
def test_actor_requests_fit_any_mix_of_whole_cpu_nodes(node_cpus):
    from types import SimpleNamespace

    from driver import placement

    total = float(sum(node_cpus))
    whole_left = int(total) - 1  # after the learner's CPU
    # 0 = auto; beyond 10 per CPU nothing fits
    for num_actors in [0] + list(range(1, 10 * whole_left + 1)):
        plan = placement.plan(
            SimpleNamespace(num_actors=num_actors, device="auto"), total, total, 0.0
        )
        assert fits_everywhere(node_cpus, plan), (node_cpus, num_actors, plan)
        assert plan.num_actors == (num_actors or whole_left)


@pytest.mark.parametrize("node_cpus", [[2], [1, 2], [2, 2], [8], [0.5]])
def test_more_actors_than_fit_are_refused_not_left_pending(node_cpus):
    """One actor past 10 per whole CPU left (or per 0.1 of less than one) would wait forever."""
    from types import SimpleNamespace

    from driver import placement

    total = float(sum(node_cpus))
    learner = min(1.0, total / 2)
    most = 10 * int(total - learner) if total - learner >= 1 else int((total - learner) * 10)
    cfg = SimpleNamespace(num_actors=most, device="auto")
    assert placement.plan(cfg, total, total, 0.0).num_actors == most
    with pytest.raises(placement.PlacementError) as refused:
        placement.plan(SimpleNamespace(num_actors=most + 1, device="auto"), total, total, 0.0)
    assert str(refused.value) == (
        f"--num-actors={most + 1} is invalid: at most {most} actors (at least 0.1 CPU each) fit "
        f"the {total - learner:g} CPU(s) left after the learner's {learner:g}; allowed: 1 to "
        f"{most}, or more CPUs (--num-cpus for a local Ray)"
    )


def test_an_even_split_that_would_strand_an_actor_is_not_chosen():
    """Two 2-CPU nodes, 4 actors: 3 free CPUs / 4 = 0.75 each leaves 0.25 and 0.5 over and the
    fourth actor pending forever; 1/2 CPU each fills the nodes exactly."""
    from types import SimpleNamespace

    from driver import placement

    plan = placement.plan(SimpleNamespace(num_actors=4, device="auto"), 4.0, 4.0, 0.0)
    assert plan.actor["num_cpus"] == 0.5 and plan.actor["scheduling_strategy"] == "SPREAD"
    assert fits_everywhere([2, 2], plan)
    stranded = dataclasses.replace(plan, actor=dict(plan.actor, num_cpus=0.75))
    assert not fits_everywhere([2, 2], stranded)


def test_a_plan_waits_for_the_cpus_a_job_that_just_ended_hands_back():
    """Back-to-back runs on one cluster: Ray frees the last job's actors a moment after it
    ends, so the next plan sees 0 of 2 CPUs free at first; it looks again and fits."""
    from types import SimpleNamespace

    from driver import on_ray

    free_cpus = iter([0.0, 1.0, 2.0])
    naps = []
    plan = on_ray.plan_when_free(
        SimpleNamespace(num_actors=1, device="auto"),
        lambda: ({"CPU": 2.0}, {"CPU": next(free_cpus)}),
        sleep=naps.append,
    )
    assert plan.num_actors == 1 and plan.actor["num_cpus"] == 1.0
    assert naps == [on_ray.waits.FREE_CPUS_POLL_S] * 2


def test_a_plan_that_cannot_fit_is_refused_at_once_or_after_the_wait():
    """An idle cluster too small is refused without waiting; a busy one after wait_s."""
    from types import SimpleNamespace

    from driver import on_ray, placement

    cfg = SimpleNamespace(num_actors=11, device="auto")
    naps = []
    with pytest.raises(placement.PlacementError, match="--num-actors=11 is invalid"):
        on_ray.plan_when_free(cfg, lambda: ({"CPU": 2.0}, {"CPU": 2.0}), sleep=naps.append)
    assert naps == []
    started = time.monotonic()
    with pytest.raises(placement.PlacementError, match="at most 0 actors"):
        on_ray.plan_when_free(cfg, lambda: ({"CPU": 2.0}, {"CPU": 1.0}), wait_s=0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
