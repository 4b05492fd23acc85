"""The project's Grafana dashboard (docker/grafana/dashboards/muesli-ray.json) put where Ray's
own Grafana configuration looks for dashboards.

A Ray head with its dashboard writes Grafana files into its session folder:
`<session>/metrics/grafana/grafana.ini`, a Prometheus data source, and a dashboard provider
(`provisioning/dashboards/default.yml`) whose `path` is the folder of Ray's dashboards. A
Grafana started with that grafana.ini lists every JSON file of that folder, and rescans it
every few seconds, so a file written there during a run shows up under Dashboards > Ray.
Only a driver on the head's machine sees the folder; docker/compose.yaml provisions the
dashboard for its own Grafana instead. No Ray import: the session folder is passed in.
"""

from pathlib import Path

import yaml  # a dependency of ray, and only the Ray path imports this module

from learner.checkpoint import write_atomic

DASHBOARD = Path(__file__).resolve().parents[1] / "docker/grafana/dashboards/muesli-ray.json"
PROVIDERS = Path("metrics") / "grafana" / "provisioning" / "dashboards" / "default.yml"


def ray_dashboard_folder(session_dir) -> Path | None:
    """The folder Ray's Grafana provider reads (its file in session_dir), or None when this
    machine has none: no dashboard head here (--no-dashboard, or a driver off the head)."""
    try:
        providers = yaml.safe_load((Path(session_dir) / PROVIDERS).read_text())["providers"]
        folder = Path(providers[0]["options"]["path"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return None
    return folder if folder.is_dir() else None


def install(session_dir) -> Path | None:
    """Write the dashboard into Ray's dashboard folder of session_dir, atomically (Grafana may
    read the folder at any time); returns the file written, or None where there is no folder."""
    folder = ray_dashboard_folder(session_dir)
    if folder is None:
        return None
    target = folder / DASHBOARD.name
    write_atomic(target, DASHBOARD.read_bytes())  # via muesli-ray.json.tmp, which Grafana skips
    return target
