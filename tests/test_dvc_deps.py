"""dvc.yaml lists every project file each stage's command imports, transitively, so editing any
of them makes `dvc status` report the stage as changed (DVC cannot see imports by itself)."""
from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("stages", "medseg", "models")
MODULE_NAME = re.compile(r"^(?:%s)(?:\.\w+)*$" % "|".join(PACKAGES))


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The file of project module `name` (a package's __init__.py), or None if it is not one."""
    base = root / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_names(path: Path) -> set[str]:
    """Modules `path` imports anywhere (top level or inside a function), plus project module
    names in string literals: the registries import their modules by name (importlib)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_NAME.match(node.value):
            names.add(node.value)
    return names


def import_closure(module: str, root: Path = REPO) -> set[Path]:
    """Every project file that `python -m module` loads: the module, what it imports, their
    packages' __init__.py files, transitively."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            path = module_file(".".join(parts[:i]), root)
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(n for n in imported_names(path) if n.split(".")[0] in PACKAGES)
    return seen


def stage_commands() -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (module run by its cmd, its file and folder deps), as DVC resolves dvc.yaml."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        out = {}
        for stage in repo.index.stages:
            words = shlex.split(stage.cmd if isinstance(stage.cmd, str) else " ".join(stage.cmd))
            module = words[words.index("-m") + 1]
            deps = [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)]
            out[stage.addressing] = (module, deps)
        return out


def missing_deps(module: str, deps: list[str], root: Path = REPO) -> list[str]:
    """Files of the import closure of `module` that no dep (file or folder) covers."""
    listed = [root / d for d in deps]
    return sorted(str(p.relative_to(root)) for p in import_closure(module, root)
                  if not any(p == d or d in p.parents for d in listed))


STAGES = stage_commands()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_every_imported_project_file(stage):
    module, deps = STAGES[stage]
    missing = missing_deps(module, deps)
    assert not missing, f"dvc.yaml stage {stage}: deps lack {', '.join(missing)} (imported by {module})"


def test_the_check_sees_a_removed_dep_and_lazy_imports():
    module, deps = STAGES["train_unet"]
    closure = {str(p.relative_to(REPO)) for p in import_closure(module)}
    # lazy imports and registries count: the model builders (importlib by name), the loss registry
    assert {"models/unet.py", "medseg/losses.py", "medseg/metrics.py", "medseg/model_card.py"} <= closure
    assert missing_deps(module, [d for d in deps if d != "medseg/metrics.py"]) == ["medseg/metrics.py"]
    assert "medseg/fetch/__init__.py" in {str(p.relative_to(REPO)) for p in import_closure("stages.download")}
