"""Every name of the package that a docstring or comment quotes exists (they go stale quietly)."""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gym_worldmodel"
#: ``a.b.c`` in double backticks (a dotted name), or a Sphinx role's target (any name).
DOTTED = re.compile(r"``([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)``")
ROLE = re.compile(r":(?:func|class|meth|mod|data|attr):`~?\.?([\w.]+)`")
UNCHECKED = object()  # a name of another library, or of a module an absent extra needs
#: The package's top-level modules and layers: a quoted path that starts with one must exist.
LAYERS = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
#: Quoted attributes of an object the text names (a checkpoint's config, a recipe's ``train``
#: settings), whose first part is also a module's name.
OBJECT_ATTRIBUTES = {"config.sampler.nfe", "train.seed"}
#: ``config.json``, ``start_frames.npz``: file names, not attributes.
FILE_SUFFIXES = {"json", "npz", "npy", "py", "md", "png", "mp4", "pt", "safetensors", "csv"}


def external(name: str) -> bool:
    """Whether ``name`` is also another installed library's (``pettingzoo``), not only ours."""
    import importlib.util

    return name not in LAYERS and importlib.util.find_spec(name) is not None


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def package_classes() -> dict[str, list[tuple[str, ast.ClassDef]]]:
    """Class name -> (module, its definition) for every class the package defines."""
    found: dict[str, list[tuple[str, ast.ClassDef]]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append((module_name(path), node))
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


class Resolver:
    """Whether a quoted name exists: a module path, a class path or ``Class.attribute``, in
    full (``gym_worldmodel.envs.hooks``), from a layer (``envs.hooks``) or a module's own name
    (``hooks.run_hooks``), or a role's bare name in the module that quotes it."""

    def __init__(self) -> None:
        self.classes = package_classes()
        modules = [module_name(p) for p in PACKAGE.rglob("*.py")]
        self.tails: dict[str, list[str]] = {}  # "hooks" -> ["gym_worldmodel.envs.hooks"]
        for name in modules:
            self.tails.setdefault(name.rsplit(".", 1)[-1], []).append(name)

    def module(self, name: str) -> ModuleType | object | None:
        """The module ``name``; None if there is none; UNCHECKED if an extra it needs is absent."""
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as err:
            missing = err.name or ""
            if missing == name or name.startswith(missing + ".") or not missing:
                return None  # no such module of the package
            return UNCHECKED  # an extra's module it imports
        except ImportError:
            return UNCHECKED

    def has(self, obj: object, attr: str) -> bool:
        if hasattr(obj, attr) or attr in getattr(obj, "__dataclass_fields__", {}):
            return True
        if isinstance(obj, type):  # an attribute its methods set on self
            own = self.classes.get(obj.__name__, [])
            return any(m == obj.__module__ and attr in assigned_in(n) for m, n in own)
        return False

    def walk(self, obj: object, attrs: list[str]) -> bool:
        for attr in attrs:
            if not self.has(obj, attr):
                return False
            obj = getattr(obj, attr, None)
        return True

    def exists(self, name: str, here: str, variables: set[str] = frozenset()) -> bool | object:
        """True, False, or UNCHECKED; ``here`` is the module quoting it, ``variables`` the names
        its code binds (``config.nfe`` there is an attribute of its variable ``config``)."""
        parts = name.split(".")
        if parts[0] == "gym_worldmodel":
            parts = parts[1:]
        starts = [["gym_worldmodel"]]  # from the package, or from a module of that own name
        named = (
            len(parts) > 1
            and parts[0] not in variables
            and not external(parts[0])
            and parts[-1] not in FILE_SUFFIXES
        )
        if named:
            starts += [m.split(".") for m in self.tails.get(parts[0], [])]
        for start in starts:
            rest = parts[1:] if len(start) > 1 else parts
            for i in range(len(rest), 0 if len(parts) == 1 else -1, -1):
                module = self.module(".".join(start + rest[:i]))
                if module is UNCHECKED:
                    return UNCHECKED
                if module is not None:
                    if self.walk(module, rest[i:]):
                        return True
                    break
        if named and parts[0] in self.tails:  # its module is there, the name in it is not
            return False
        if len(parts) == 1:  # a role's bare name: the quoting module's, a class's of it, a builtin
            module = importlib.import_module(here)
            owners = [module, builtins, *(c for c in vars(module).values() if isinstance(c, type))]
            return any(self.has(owner, parts[0]) for owner in owners)
        if parts and parts[0] in self.classes:
            for module, _ in self.classes[parts[0]]:
                if self.walk(getattr(importlib.import_module(module), parts[0]), parts[1:]):
                    return True
            return False
        if parts and parts[0] in LAYERS:  # a path from the package's top: it must be there
            return False
        return UNCHECKED  # from a module's own name: checked above where it resolves


def bound_names(tree: ast.AST) -> set[str]:
    """The names a module's code binds: arguments, assignments, loop and ``with`` targets."""
    names = {
        a.arg
        for node in ast.walk(tree)
        if isinstance(node, ast.arguments)
        for a in (*node.posonlyargs, *node.args, *node.kwonlyargs)
    }
    names |= {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    }
    return names


def test_every_package_name_quoted_in_the_package_exists():
    resolver, stale = Resolver(), []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        if resolver.module(here) is UNCHECKED:
            continue  # a module of an absent extra
        text = path.read_text()
        variables = bound_names(ast.parse(text))
        for number, line in enumerate(text.splitlines(), 1):
            for match in [*DOTTED.finditer(line), *ROLE.finditer(line)]:
                if match.group(1) in OBJECT_ATTRIBUTES:
                    continue
                if resolver.exists(match.group(1), here, variables) is False:
                    stale.append(f"{path.relative_to(ROOT)}:{number}: {match.group(1)}")
    assert not stale, "quoted names that do not exist: " + "; ".join(stale)
