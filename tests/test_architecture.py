"""The layers of ARCHITECTURE.md hold: imports go down (or across one layer), never up, and no
module imports another's private name.

The layer list is read from ARCHITECTURE.md itself, so the document and the code cannot drift.
"""

import ast
import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source folder -> the package it installs as (setup.cfg's package_dir).
PACKAGES = {"nmfsched": "nmfsched", "kernels": "nmfsched.kernels", "theory": "nmfsched.theory"}


def layers():
    """``[(layer number, module pattern)]`` from ARCHITECTURE.md's ``layers`` block."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, flags=re.S).group(1)
    rows = []
    for line in block.splitlines():
        if line.strip():
            number, patterns = line.split(":", 1)
            rows += [(int(number.split()[-1]), p) for p in patterns.split("#")[0].split()]
    return rows


def layer_of(module, table):
    matches = [number for number, pattern in table if fnmatch.fnmatchcase(module, pattern)]
    return max(matches) if matches else None  # the most specific (highest) listed wins


def modules():
    """``{module name: path}`` of every library module."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(module, path, known):
    """``[(line, imported module, imported name or None)]`` of one module, relative imports resolved."""
    is_package = path.name == "__init__.py"
    result = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            result += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in known:  # `from . import objective` imports a module
                    result.append((node.lineno, submodule, None))
                else:
                    result.append((node.lineno, target, alias.name))
    return [(line, target, name) for line, target, name in result if target.split(".")[0] == "nmfsched"]


def _private_module(target, importer):
    """The first private package or module on ``target``'s path that ``importer`` is outside of."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            owner = ".".join(parts[:i])  # the package the private module belongs to
            if not (importer == owner or importer.startswith(owner + ".")):
                return ".".join(parts[: i + 1])
    return None


def test_every_library_module_has_a_layer():
    table = layers()
    missing = sorted(m for m in modules() if layer_of(m, table) is None)
    assert not missing, f"modules with no layer in ARCHITECTURE.md: {missing}"


def test_no_module_imports_upward():
    table, known = layers(), modules()
    upward = []
    for module, path in known.items():
        mine = layer_of(module, table)
        for line, target, _ in imports(module, path, known):
            theirs = layer_of(target, table)
            if theirs is not None and theirs > mine:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({module}, layer {mine}) imports {target} (layer {theirs})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(sorted(set(upward)))


def test_no_module_imports_another_modules_private_name():
    known = modules()
    private = []
    for module, path in known.items():
        for line, target, name in imports(module, path, known):
            where = f"{path.relative_to(ROOT)}:{line}"
            if name is not None and name.startswith("_") and not name.startswith("__"):
                private.append(f"{where} imports the private name {name} from {target}")
            hidden = _private_module(target, module)
            if hidden is not None:
                private.append(f"{where} imports from the private module {hidden}")
    assert not private, "\n".join(sorted(set(private)))


@pytest.mark.parametrize(("target", "importer", "expected"), [
    ("nmfsched.theory._namespace", "nmfsched.metrics", "nmfsched.theory._namespace"),
    ("nmfsched.theory._namespace", "nmfsched.theory.bounds", None),
    ("nmfsched._validation", "nmfsched.estimator", None),
    ("nmfsched.schedulers._checks", "nmfsched.estimator", "nmfsched.schedulers._checks"),
])
def test_a_private_module_is_private_to_its_package(target, importer, expected):
    assert _private_module(target, importer) == expected


def test_the_checks_see_an_upward_import(tmp_path, monkeypatch):
    """The layer test would fail on an upward import (it is not vacuous)."""
    path = tmp_path / "epochs.py"
    path.write_text("from .schedulers.base import Observation\nfrom . import objective\n")
    known = {"nmfsched.epochs": path, "nmfsched.objective": path}
    found = imports("nmfsched.epochs", path, known)
    assert found == [(1, "nmfsched.schedulers.base", "Observation"), (2, "nmfsched.objective", None)]
    table = layers()
    assert layer_of("nmfsched.schedulers.base", table) > layer_of("nmfsched.epochs", table)
