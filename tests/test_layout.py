"""The house's layout rules (issue 28), checked on the source rather than by importing it.

- common/ holds what several folders share, so none of its modules may import a folder
  above it (actors/, learner/, replay/, transport/, driver/, bench/): such an import would
  make the shared layer depend on one room and drag that room into every other.
"""

import ast
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
