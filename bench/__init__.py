"""Benchmarks and measurement scripts, each run from the repository root as
`python -m bench.NAME` (e.g. `python -m bench.solve`, `python -m bench.throughput --quick`),
so the project's packages import as they do for launch.py, with no sys.path edits."""
