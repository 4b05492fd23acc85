"""What a benchmark ran on: platform, Python, CPUs, GPU and package versions (for its JSON)."""

import os
import platform
from importlib import metadata


def describe(packages, gpu=None) -> dict:
    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "gpu": gpu,
        "packages": {d: version(d) for d in packages},
    }
