"""docker/: the images, the compose file and the cluster files, checked without a Docker daemon.

- hadolint lints both Dockerfiles (settings and the one justified exception: .hadolint.yaml);
- both images install with README's quick-start `pip install -r requirements.txt` (the CUDA
  image adds only the CUDA build of the torch that requirements.txt pins), so
  requirements.txt stays the one source of truth; CI runs that install in a fresh venv;
- compose.yaml is validated against the compose specification (check-jsonschema's copy)
  and ray-cluster.yaml against Ray's own cluster schema, then every file's key fields are
  checked: images, ports 6379/8265, metrics port, non-root user, token authentication,
  and the trainer's `launch.py --address`;
- docs/cluster.md (Scale out) gives the commands of each path and the head's ports.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
METRICS_PORT = "8080"
RAY_IMAGES = {"muesli-ray:cpu": "docker/Dockerfile", "muesli-ray:cuda": "docker/Dockerfile.cuda"}


def tool(name: str) -> str:
    """A command installed with requirements-test.txt (next to this Python first)."""
    path = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    assert path, f"`{name}` is missing: pip install -r requirements-test.txt"
    return path


def load(name: str):
    return yaml.safe_load((DOCKER / name).read_text())


def instructions(dockerfile: str) -> list:
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in (DOCKER / dockerfile).read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, args = current.partition(" ")
            out.append((keyword.upper(), args.strip()))
            current = ""
    return out


def shell_steps(dockerfile: str) -> list:
    """The commands of every RUN, split at `&&`."""
    return [
        step.strip()
        for keyword, args in instructions(dockerfile)
        if keyword == "RUN"
        for step in args.split("&&")
    ]


def readme() -> str:
    return (ROOT / "README.md").read_text()


def readme_install_steps() -> list:
    """The quick start's install line (the first bash block of README), split at `&&`."""
    block = re.search(r"```bash\n(.*?)\n```", readme(), re.S).group(1)
    return [step.strip() for step in block.split("&&")]


def flags(command: str) -> dict:
    """{'--flag': value or True} of a `ray start ...` style command line."""
    out, words = {}, shlex.split(command.replace("\n", " "))
    for i, word in enumerate(words):
        if word.startswith("--"):
            name, eq, value = word.partition("=")
            if eq:
                out[name] = value
            elif i + 1 < len(words) and not words[i + 1].startswith("--"):
                out[name] = words[i + 1]
            else:
                out[name] = True
    return out


# -- the images ---------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile):
    result = subprocess.run(
        [
            tool("hadolint"),
            "--config",
            str(ROOT / ".hadolint.yaml"),
            "--no-color",
            str(DOCKER / dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_exceptions_are_justified():
    config = yaml.safe_load((ROOT / ".hadolint.yaml").read_text())
    assert config["failure-threshold"] == "style"
    text = (ROOT / ".hadolint.yaml").read_text()
    for rule in config.get("ignored", []):
        # every ignored rule has a comment block right above it saying why
        assert re.search(rf"#[^\n]*{rule}[^\n]*\n(\s*#[^\n]*\n)*\s*- {rule}\b", text), rule


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_install_readmes_command_from_requirements_txt(dockerfile):
    pip = [s for s in readme_install_steps() if s.startswith("pip install")]
    assert pip == ["pip install -r requirements.txt"], readme_install_steps()
    steps = shell_steps(dockerfile)
    assert pip[0] in steps, steps
    assert ("COPY", "--chown=1000:1000 requirements.txt ./") in instructions(dockerfile)
    # as README: a virtual environment
    assert any(s.startswith("python3 -m venv") for s in steps)
    # Nothing else is installed by pip, except (CUDA image) torch's CUDA build, whose version
    # is read from requirements.txt and installed before it.
    others = [s for s in steps if s.startswith("pip install") and s != pip[0]]
    if dockerfile == "Dockerfile":
        assert others == []
    else:
        assert others == [
            'pip install --index-url "$TORCH_INDEX" "$(grep -E \'^torch==\' requirements.txt)"'
        ]
        assert steps.index(others[0]) < steps.index(pip[0])
        pins = [
            line
            for line in (ROOT / "requirements.txt").read_text().splitlines()
            if re.match(r"^torch==", line)
        ]
        assert len(pins) == 1, pins
        index = [args for keyword, args in instructions(dockerfile) if keyword == "ARG"]
        assert any(
            a.startswith("TORCH_INDEX=https://download.pytorch.org/whl/cu") for a in index
        ), index
    # CI's install (README's test command) goes through the same file.
    assert "-r requirements.txt" in (ROOT / "requirements-test.txt").read_text().splitlines()


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_run_as_a_non_root_user_with_the_code_and_ports(dockerfile):
    found = instructions(dockerfile)
    users = [args for keyword, args in found if keyword == "USER"]
    # numeric, so runAsNonRoot can check it
    assert users and users[-1] == "1000:1000", users
    steps = shell_steps(dockerfile)
    assert "useradd --create-home --uid 1000 --gid 1000 --shell /bin/bash ray" in steps
    assert ("WORKDIR", "/home/ray/muesli-ray") in found
    assert ("COPY", "--chown=1000:1000 . ./") in found
    exposed = {p for keyword, args in found if keyword == "EXPOSE" for p in args.split()}
    assert {"6379", "8265", "10001", METRICS_PORT} <= exposed
    # README's Python 3.11
    assert found[0][0] == "FROM" and found[0][1] == "python:3.11-slim-bookworm"


def test_docker_build_context_leaves_local_state_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for name in (".git", ".venv", "runs"):
        assert name in ignored


# -- compose ------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(DOCKER / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_cluster_head_workers_trainer_and_monitoring():
    compose = load("compose.yaml")
    services = compose["services"]
    assert {"ray-head", "ray-worker", "trainer", "prometheus", "grafana"} <= set(services)
    ray_services = [name for name, s in services.items() if s["image"].startswith("muesli-ray:")]
    assert set(ray_services) == {"ray-head", "ray-worker", "ray-gpu-worker", "trainer"}
    for name in ray_services:
        s = services[name]
        assert s["build"]["dockerfile"] == RAY_IMAGES[s["image"]] and s["build"]["context"] == ".."
        assert (DOCKER / s["build"]["context"] / s["build"]["dockerfile"]).is_file()
        assert s["environment"]["RAY_AUTH_MODE"] == "token"
        # required, never written here
        assert s["environment"]["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")
        # the image's user 1000
        assert "user" not in s
        assert (
            flags(s["command"] if isinstance(s["command"], str) else s["command"][-1])[
                "--metrics-export-port"
            ]
            == METRICS_PORT
        )

    head = services["ray-head"]
    head_flags = flags(head["command"])
    assert (
        head_flags["--head"] is True
        and head_flags["--port"] == "6379"
        and head_flags["--block"] is True
    )
    assert head_flags["--dashboard-port"] == "8265" and head_flags["--dashboard-host"] == "0.0.0.0"
    assert "8265:8265" in head["ports"]
    assert head["healthcheck"]["test"][-1] == "http://localhost:8265/api/gcs_healthz"

    for name in ("ray-worker", "ray-gpu-worker"):
        worker = flags(services[name]["command"])
        assert worker["--address"] == "ray-head:6379" and worker["--block"] is True
        assert services[name]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert services["ray-worker"]["deploy"]["replicas"] >= 1
    gpu = services["ray-gpu-worker"]
    assert gpu["profiles"] == ["gpu"] and flags(gpu["command"])["--num-gpus"] == "1"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]

    trainer = services["trainer"]["command"]
    assert trainer[:2] == ["bash", "-c"]
    joins, runs = trainer[2].split("&&")
    assert flags(joins) == {
        "--address": "ray-head:6379",
        "--num-cpus": "0",
        "--metrics-export-port": METRICS_PORT,
    }
    assert runs.split()[:5] == ["exec", "python", "launch.py", "--address", "ray-head:6379"]
    assert flags(runs)["--run-root"] == "/home/ray/runs"
    assert "runs:/home/ray/runs" in services["trainer"]["volumes"]
    assert services["trainer"]["depends_on"]["ray-worker"]["condition"] == "service_healthy"


def test_prometheus_and_grafana_read_what_the_ray_head_writes():
    compose = load("compose.yaml")
    services = compose["services"]
    head_tmp = [
        v.split(":")[0] for v in services["ray-head"]["volumes"] if v.split(":")[1] == "/tmp/ray"
    ]
    assert head_tmp and head_tmp[0] in compose["volumes"]
    env = services["ray-head"]["environment"]
    assert env["RAY_PROMETHEUS_HOST"] == "http://prometheus:9090"
    assert env["RAY_GRAFANA_HOST"] == "http://grafana:3000"

    prometheus = services["prometheus"]
    assert f"{head_tmp[0]}:/tmp/ray:ro" in prometheus["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "9090:9090" in prometheus["ports"]
    config = load("prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "ray"
    assert job["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]

    grafana = services["grafana"]
    assert f"{head_tmp[0]}:/tmp/ray:ro" in grafana["volumes"]
    assert "3000:3000" in grafana["ports"]
    for name in ("prometheus", "grafana"):
        assert ":" in services[name]["image"] and not services[name]["image"].endswith(":latest")


def test_grafana_provisions_prometheus_rays_dashboards_and_muesli_rays():
    """Grafana's provisioning is docker/grafana/provisioning: Prometheus above as its data
    source, Ray's dashboards from the folder the head writes them to in the shared volume, and
    the project's dashboard from docker/grafana/dashboards (the file launch.py also puts into a
    local head's Grafana folder: driver/grafana.py)."""
    services = load("compose.yaml")["services"]
    grafana = services["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    provisioning = grafana["environment"]["GF_PATHS_PROVISIONING"]
    assert mounts["./grafana/provisioning"] == provisioning
    assert all(v.endswith(":ro") for v in grafana["volumes"])

    def provisioned(kind: str) -> list:
        (file,) = (DOCKER / "grafana" / "provisioning" / kind).iterdir()
        return yaml.safe_load(file.read_text())

    (source,) = provisioned("datasources")["datasources"]
    assert (source["type"], source["url"], source["isDefault"]) == (
        "prometheus",
        "http://prometheus:9090",
        True,
    )
    paths = {p["folder"]: p["options"]["path"] for p in provisioned("dashboards")["providers"]}
    ray_dashboards = services["ray-head"]["environment"]["RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR"]
    assert paths == {"Ray": ray_dashboards, "muesli-ray": mounts["./grafana/dashboards"]}
    assert ray_dashboards.startswith("/tmp/ray/")  # in the volume Grafana mounts from the head
    # the one dashboard, which tests/test_observability.py checks against a real Prometheus
    assert [p.name for p in (DOCKER / "grafana" / "dashboards").iterdir()] == ["muesli-ray.json"]


# -- ray up -----------------------------------------------------------------------------


def test_ray_cluster_file_follows_rays_schema():
    jsonschema = pytest.importorskip("jsonschema")  # a dependency of ray[default]
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(load("ray-cluster.yaml"), schema)


def test_ray_cluster_file_uses_the_image_with_token_auth():
    cluster = load("ray-cluster.yaml")
    assert cluster["docker"]["image"] == "muesli-ray:cpu"
    options = cluster["docker"]["run_options"]
    assert "--env RAY_AUTH_MODE=token" in options and "--ulimit nofile=65536:65536" in options
    # the token, at Ray's default path
    assert cluster["file_mounts"] == {"/home/ray/.ray": "~/.ray"}
    assert cluster["provider"]["type"] == "local"
    (stop, head), (stop2, worker) = (
        cluster["head_start_ray_commands"],
        cluster["worker_start_ray_commands"],
    )
    # inside the node's own container
    assert stop == stop2 == "ray stop"
    head, worker = flags(head), flags(worker)
    assert (
        head["--head"] is True and head["--port"] == "6379" and head["--dashboard-port"] == "8265"
    )
    assert (
        head["--dashboard-host"] == "0.0.0.0"
        and head["--autoscaling-config"] == "~/ray_bootstrap_config.yaml"
    )
    assert worker["--address"] == "$RAY_HEAD_IP:6379"
    for node in (head, worker):
        assert node["--metrics-export-port"] == METRICS_PORT
        assert (node["--node-manager-port"], node["--object-manager-port"]) == ("6380", "6381")
    assert not cluster["setup_commands"]  # the image has everything


# -- KubeRay ------------------------------------------------------------------------------


def test_kuberay_raycluster_uses_the_images_as_non_root_with_token_auth():
    import ray

    manifest = load("kuberay-raycluster.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    spec = manifest["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert f"ray[default]=={spec['rayVersion']}" in (ROOT / "requirements.txt").read_text().split()
    assert spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    groups = {"head": head} | {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"head", "cpu", "gpu"}
    for name, group in groups.items():
        assert group["rayStartParams"]["metrics-export-port"] == METRICS_PORT
        pod = group["template"]["spec"]
        assert (
            pod["securityContext"]["runAsNonRoot"] is True
            and pod["securityContext"]["runAsUser"] == 1000
        )
        (container,) = pod["containers"]
        assert container["image"] == ("muesli-ray:cuda" if name == "gpu" else "muesli-ray:cpu")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == int(METRICS_PORT)
        assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    head_ports = {
        p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]
    }
    assert head_ports == {
        "gcs-server": 6379,
        "dashboard": 8265,
        "client": 10001,
        "metrics": int(METRICS_PORT),
    }
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 1 and groups["gpu"]["replicas"] == 0


# -- README -------------------------------------------------------------------------------


def test_the_scale_out_page_has_each_path_and_the_head_ports():
    section = (ROOT / "docs" / "cluster.md").read_text()
    assert "docs/cluster.md" in readme()  # the README points at it
    for command in [
        "ray start --head --port=6379",
        "ray start --address=HEAD_IP:6379",
        "python launch.py --address HEAD_IP:6379 --num-actors auto",
        "docker build -f docker/Dockerfile -t muesli-ray:cpu .",
        "docker build -f docker/Dockerfile.cuda -t muesli-ray:cuda .",
        "docker compose -f docker/compose.yaml up --build --scale ray-worker=3",
        "ray up docker/ray-cluster.yaml",
        "ray exec docker/ray-cluster.yaml",
        "kubectl apply -f docker/kuberay-raycluster.yaml",
        "python launch.py --address auto --num-actors auto",
        "RAY_AUTH_MODE=token",
        "ray get-auth-token --generate",
    ]:
        assert command in section, command
    ports = dict(re.findall(r"^\| ([0-9, -]+) \| ([^|]+) \|", section, re.M))
    for port, what in [
        ("6379", "GCS"),
        ("8265", "dashboard"),
        ("10001", "client"),
        (METRICS_PORT, "metrics"),
        ("6380, 6381", "node manager"),
        ("52365", "dashboard agent"),
    ]:
        assert port in ports and what in ports[port], (port, ports)
    for path in set(re.findall(r"docker/[\w.-]+", section)):
        assert (ROOT / path).is_file(), path
