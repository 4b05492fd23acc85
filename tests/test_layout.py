"""The house's layout rules (issue 28), checked on the source rather than by importing it.

- common/ holds what several folders share, so none of its modules may import a folder
  above it (actors/, learner/, replay/, transport/, driver/, bench/): such an import would
  make the shared layer depend on one room and drag that room into every other.
- No two .py files outside tests/ share a base name (__init__.py aside): twins such as the root
  evaluate.py CLI and actors/evaluate.py, or sweep.py and bench/sweep.py, shadow each other
  whenever a folder lands on sys.path (they once cost 18 suite failures).
- Nothing in bench/ edits sys.path: bench scripts run as `python -m bench.NAME` from the root.
"""

import ast
import collections
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOMS = {"actors", "learner", "replay", "transport", "driver", "bench"}


def imported_packages(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in the module at path, lazy ones in
    functions included; a relative import is resolved against the module's own package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(root).parent.parts
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                parts = list(base) + (node.module.split(".") if node.module else [])
                top = parts[0] if parts else ""
            else:
                top = node.module.split(".")[0]
            found.append((node.lineno, top))
    return found


def upward_imports(folder: Path, root: Path = ROOT) -> list[str]:
    """'path:line imports room' for every import of a room by a module under folder."""
    return [
        f"{path.relative_to(root)}:{line} imports {top}"
        for path in sorted(folder.rglob("*.py"))
        for line, top in imported_packages(path, root)
        if top in ROOMS
    ]


def test_common_imports_no_room_above_it():
    assert (ROOT / "common" / "config.py").exists()
    assert upward_imports(ROOT / "common") == []


def test_the_check_sees_absolute_relative_and_lazy_imports(tmp_path):
    """The rule's own check finds each way of writing an upward import."""
    common = tmp_path / "common"
    common.mkdir()
    (common / "a.py").write_text("import learner.learner\n")
    (common / "b.py").write_text("from ..driver import trainer\n")
    (common / "c.py").write_text("def f():\n    from replay.shard import ReplayShard\n")
    (common / "d.py").write_text("from common import envs\nimport numpy\n")
    assert upward_imports(common, tmp_path) == [
        "common/a.py:1 imports learner",
        "common/b.py:1 imports driver",
        "common/c.py:2 imports replay",
    ]


# not the project's own modules: virtual environments, caches, run folders
SKIPPED_DIRS = {"__pycache__", "venv", "runs", "node_modules"}


def project_modules(root: Path = ROOT) -> list[Path]:
    """Every .py file of the project outside tests/ (hidden folders such as .venv skipped)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in SKIPPED_DIRS
            and not d.endswith(".egg-info")
            and not (Path(folder) == root and d == "tests")
        )
        found += [Path(folder) / f for f in sorted(files) if f.endswith(".py")]
    return found


def twin_names(root: Path = ROOT) -> dict[str, list[str]]:
    """{base name: paths} of the base names that more than one module outside tests/ has."""
    paths = collections.defaultdict(list)
    for path in project_modules(root):
        if path.name != "__init__.py":
            paths[path.name].append(str(path.relative_to(root)))
    return {name: where for name, where in paths.items() if len(where) > 1}


def sys_path_edits(folder: Path, root: Path = ROOT) -> list[str]:
    """'path:line' of every use of sys.path (or `from sys import path`) under folder."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            uses = (
                isinstance(node, ast.Attribute)
                and node.attr == "path"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "sys"
                and any(alias.name == "path" for alias in node.names)
            )
            if uses:
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_two_modules_outside_tests_share_a_base_name():
    assert len(project_modules()) > 50  # the walk found the project
    assert twin_names() == {}


def test_nothing_in_bench_edits_sys_path():
    assert (ROOT / "bench" / "solve.py").exists()
    assert sys_path_edits(ROOT / "bench") == []


def test_the_checks_see_twins_and_sys_path_edits(tmp_path):
    """The two rules' own checks find what they forbid, and pass what they allow."""
    for name in [
        "evaluate.py",
        "actors/evaluate.py",
        "actors/__init__.py",
        "bench/__init__.py",
        "tests/evaluate.py",
        ".venv/lib/evaluate.py",
        "bench/a.py",
        "bench/peers/b.py",
        "bench/c.py",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert twin_names(tmp_path) == {"evaluate.py": ["evaluate.py", "actors/evaluate.py"]}
    (tmp_path / "bench/a.py").write_text("import sys\nsys.path.insert(0, 'x')\n")
    (tmp_path / "bench/peers/b.py").write_text("from sys import path\n")
    (tmp_path / "bench/c.py").write_text("import sys\nprint(sys.argv, 'sys.path')\n")
    assert sys_path_edits(tmp_path / "bench", tmp_path) == ["bench/a.py:2", "bench/peers/b.py:1"]
