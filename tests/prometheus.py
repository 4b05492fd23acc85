"""A real Prometheus for the tests: Debian's `prometheus` package (`apt-get install -y
prometheus`; .ci/run installs it where it can). It scrapes one Ray metrics endpoint every
SCRAPE_S into a temporary folder, and answers the same range queries Grafana's panels send.
"""

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

BINARY = shutil.which("prometheus")
SCRAPE_S = 2  # Ray exports about every 10 s; scraping faster just sees each export sooner


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """`with Prometheus(target) as prom:` scrapes http://TARGET/metrics until the block ends."""

    def __init__(self, target: str):
        self.target, self.port = target, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.proc = None

    def __enter__(self) -> "Prometheus":
        config = self.folder / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": f"{SCRAPE_S}s"},
                    "scrape_configs": [
                        {"job_name": "ray", "static_configs": [{"targets": [self.target]}]}
                    ],
                }
            )
        )
        self.proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "prometheus.log", "wb"),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/-/ready", timeout=1)
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        log = (self.folder / "prometheus.log").read_text()[-2000:]
        self.__exit__()
        raise RuntimeError(f"prometheus did not become ready:\n{log}")

    def query_range(self, expr: str, start: float, end: float, step: float = SCRAPE_S) -> list:
        """The series Prometheus returns for expr over [start, end]: [{"metric", "values"}]."""
        query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{query}", timeout=10) as r:
            answer = json.load(r)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
