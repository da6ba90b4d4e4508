"""The package's shape: the public names the README uses, old import paths that still work, one
folder per layer with imports that only point down, and modules and classes of a readable size."""
import ast
import importlib
import pathlib
import subprocess
import sys
import warnings

import pytest

import emp_data

PACKAGE = pathlib.Path(emp_data.__file__).resolve().parent
# Layers, lowest first: a module may import its own layer and the ones below, never above.
LAYERS = {"store": 0, "selection": 1, "distributed": 1, "pruner": 2, "torch_data": 3, "webdataset": 3}


def test_the_readme_names_import_from_the_top_level_and_all_is_sorted():
    from emp_data import SeTa, ShardedPruner  # noqa: F401

    assert emp_data.__all__ == sorted(emp_data.__all__)
    for name in emp_data.__all__:
        assert getattr(emp_data, name) is not None, name
    assert issubclass(emp_data.ShardedPruner, emp_data.Pruner)


@pytest.mark.parametrize("old,new", [("emp_data.sharded", "emp_data.pruner.sharded"),
                                     ("emp_data.scores", "emp_data.selection.memory"),
                                     ("emp_data.shard_index", "emp_data.webdataset.index"),
                                     ("emp_data.remote", "emp_data.webdataset.remote"),
                                     ("emp_data.nodes", "emp_data.torch_data.nodes")])
def test_old_paths_warn_and_are_the_moved_module(old, new, tmp_path):
    # A fresh interpreter, from a folder outside the checkout: the warning comes at the first import.
    code = (f"import warnings; warnings.simplefilter('error')\n"
            f"try:\n    import {old}\nexcept DeprecationWarning as w:\n    print('warned:', w)\n"
            f"warnings.simplefilter('ignore')\nimport importlib, sys\n"
            f"print(importlib.import_module('{old}') is importlib.import_module('{new}'))\n"
            f"print(sys.modules['{new}'].__spec__.name)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert f"warned: {old} moved to {new}" in out
    assert out.splitlines()[-2:] == ["True", new]


def test_old_attribute_paths_still_resolve():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert emp_data.scores.contrastive_scores is emp_data.contrastive_scores
        assert emp_data.policies.SeTa is emp_data.SeTa
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_layer_is_one_folder_and_imports_point_down():
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(LAYERS)
    upward = []
    for path in _modules():
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2:
            continue
        here = LAYERS[parts[0]]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module:
                target = node.module.split(".")[0]
                if target in LAYERS and LAYERS[target] > here:
                    upward.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not upward, upward


def test_no_module_over_400_lines_and_no_class_over_250():
    long_modules = [f"{p.relative_to(PACKAGE)}: {n}" for p in _modules()
                    if (n := len(p.read_text().splitlines())) > 410]
    long_classes = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250:
                long_classes.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert not long_modules and not long_classes, (long_modules, long_classes)


def test_a_pruner_composes_and_never_asks_which_store_or_partition():
    tree = ast.parse((PACKAGE / "pruner" / "pruner.py").read_text())
    code = ast.unparse([node for node in tree.body if not isinstance(node, ast.Expr)])   # no docstrings
    for branch in ("on_gpu", "device.type", "'cuda'", "get_rank", ".rank", ".kind", "isinstance(self.store",
                   "isinstance(self.partition"):
        assert branch not in code, branch
    assert importlib.import_module("emp_data.pruner.pruner").Pruner is emp_data.Pruner
