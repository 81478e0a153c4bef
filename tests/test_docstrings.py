"""Every name of the package that a docstring or comment quotes exists (they go stale quietly)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gym_worldmodel"
#: ``a.b.c`` in double backticks, or a Sphinx role's target.
QUOTED = re.compile(
    r"``([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)``|:(?:func|class|meth|mod|data|attr):`~?\.?([\w.]+)`"
)


def package_classes() -> dict[str, list[tuple[str, ast.ClassDef]]]:
    """Class name -> (module, its definition) for every class the package defines."""
    found: dict[str, list[tuple[str, ast.ClassDef]]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append((module, node))
    return found


def assigned_in(cls: ast.ClassDef) -> set[str]:
    """The attributes a class body annotates or its methods assign to ``self``."""
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "self" and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return names


def has(obj: object, name: str, node: ast.ClassDef | None) -> bool:
    fields = getattr(obj, "__dataclass_fields__", {})
    return hasattr(obj, name) or name in fields or (node is not None and name in assigned_in(node))


def resolves(name: str, classes: dict) -> bool | None:
    """Whether ``name`` (a module path, a class path or ``Class.attribute``) exists; None: not
    the package's (``torch.nn``, ``env.unwrapped``...)."""
    parts = name.removeprefix("gym_worldmodel.").split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("gym_worldmodel." + ".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        except ImportError:  # an optional extra's module (a simulator): not checked here
            return None
        for j, attr in enumerate(parts[i:]):
            node = None
            if isinstance(obj, type) and obj.__name__ in classes:
                node = next((n for m, n in classes[obj.__name__] if m == obj.__module__), None)
            if not has(obj, attr, node):
                return False
            if j < len(parts[i:]) - 1:
                obj = getattr(obj, attr, None)
        return True
    if parts[0] not in classes:
        return None
    for module, node in classes[parts[0]]:
        cls = getattr(importlib.import_module(module), parts[0])
        if len(parts) == 1 or has(cls, parts[1], node):
            return True
    return False


def test_every_package_name_quoted_in_the_package_exists():
    classes = package_classes()
    stale = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in QUOTED.finditer(line):
                name = match.group(1) or match.group(2)
                if "." in name and resolves(name, classes) is False:
                    stale.append(f"{path.relative_to(ROOT)}:{number}: {name}")
    assert not stale, "quoted names that do not exist: " + "; ".join(stale)
