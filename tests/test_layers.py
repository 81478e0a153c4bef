"""The package's layering, as docs/architecture.md's table states it: imports point up only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gym_worldmodel"


def table_layers() -> dict[str, int]:
    """Top-level module or package name -> its row in the architecture page's layer table."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    layers = {}
    for i, row in enumerate(rows):
        for name in re.findall(r"`([\w.]+/?)`", row.split("|")[1]):
            layers[name.removesuffix("/").removesuffix(".py")] = i
    return layers


def imports(path: Path) -> set[str]:
    """The top-level package modules ``path`` imports (``gym_worldmodel.X`` -> ``X``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "gym_worldmodel":
                names = [f"gym_worldmodel.{a.name}" for a in node.names]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n.split(".")[1] for n in names if n.startswith("gym_worldmodel.")}
    return found


def test_every_import_points_to_the_same_or_a_higher_layer():
    layers = table_layers()
    assert {"models", "memory", "envs", "hub", "training", "cli"} <= layers.keys()
    outside = len(layers)  # the package's own __init__ and __main__: the edge
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if top not in layers and top not in ("__init__", "__main__"):
            wrong.append(f"{path.relative_to(ROOT)} is in no row of the table")
        mine = layers.get(top, outside)
        for name in imports(path):
            if layers.get(name, outside) > mine:
                wrong.append(f"{path.relative_to(ROOT)} imports gym_worldmodel.{name}")
            if name == "integrations" and top != "integrations":  # adapters, never the core
                wrong.append(f"{path.relative_to(ROOT)} imports the integrations")
    assert not wrong, "imports below their layer (docs/architecture.md): " + "; ".join(wrong)


def test_training_reads_of_the_envs_only_their_kinematics_and_action_layout():
    """As the table says: ``envs/pose.py`` and ``envs/actions.py`` (NumPy, no env state)."""
    allowed = {"gym_worldmodel.envs.pose", "gym_worldmodel.envs.actions"}
    wrong = []
    for path in (PACKAGE / "training").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "gym_worldmodel.envs":  # from gym_worldmodel.envs import x
                    names = [f"gym_worldmodel.envs.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            wrong += [
                f"{path.relative_to(ROOT)} imports {n}"
                for n in names
                if n.startswith("gym_worldmodel.envs") and n not in allowed
            ]
    assert not wrong, "; ".join(wrong)
