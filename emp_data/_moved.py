"""Import paths of modules that moved into the layer folders. Each old path still imports, with a
DeprecationWarning naming the new one, and gives the new module itself (patching it patches that)."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "emp_data.cuda": "emp_data.store.cuda",
    "emp_data.policies": "emp_data.selection.policies",
    "emp_data.scores": "emp_data.selection.memory",
    "emp_data.sampling": "emp_data.selection.sampling",
    "emp_data.ownership": "emp_data.distributed.ownership",
    "emp_data.sharded": "emp_data.pruner.sharded",
    "emp_data.nodes": "emp_data.torch_data.nodes",
    "emp_data.shard_index": "emp_data.webdataset.index",
    "emp_data.wids_index": "emp_data.webdataset.wids",
    "emp_data.key_table": "emp_data.webdataset.key_table",
    "emp_data.remote": "emp_data.webdataset.remote",
    "emp_data.epoch_weights": "emp_data.webdataset.epoch_weights",
    "emp_data.demo": "emp_data_quality",
}


def resolve(old: str):
    """The module that `old` moved to, after a DeprecationWarning."""
    new = MOVED[old]
    warnings.warn(f"{old} moved to {new}; import it from there (the old path will be removed)",
                  DeprecationWarning, stacklevel=3)
    return importlib.import_module(new)


_KEPT = ("__name__", "__spec__", "__loader__", "__package__", "__file__", "__path__", "__cached__")


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        module = resolve(spec.name)
        self._attrs = {name: getattr(module, name) for name in _KEPT if hasattr(module, name)}
        return module

    def exec_module(self, module):
        # The import system stamped the old name's spec on the module: give it back its own.
        for name, value in self._attrs.items():
            setattr(module, name, value)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, _Loader())
        return None


def install() -> None:
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
