"""Every code example in an emp_data module docstring runs as written, with the README test's small
stand-ins for what the text leaves to the reader (a model, tensors, a dataset, E, data/ shards) and
the usual imports (torch, F, DataLoader, webdataset as wds, emp_data's public names). The examples
that are not Python are listed, with what they are."""
import ast
import pathlib
import sys
import textwrap

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_readme import stand_ins, write_data  # noqa: E402

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "emp_data"
NOT_PYTHON = {"cli.py": "shell commands", "wids.py": "a JSON document"}   # checked otherwise


def docstring_examples(path: pathlib.Path) -> list[str]:
    """The indented blocks of a module docstring (blank lines inside a block belong to it)."""
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    blocks, current = [], []
    for line in doc.splitlines() + ["end"]:
        if line.startswith("    ") or (current and not line.strip()):
            current.append(line)
        elif current:
            blocks.append(textwrap.dedent("\n".join(current)).strip() + "\n")
            current = []
    return blocks


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if docstring_examples(p))


def namespace_for(module: str) -> dict:
    import torch.distributed as dist
    import torch.nn.functional as F
    import webdataset as wds
    from torch.utils.data import DataLoader

    import emp_data
    from emp_data.webdataset import PrunedIterableDataset, build_index, prune

    ns = stand_ins()
    ns.update({name: getattr(emp_data, name) for name in emp_data.__all__})
    ns.update(torch=torch, F=F, dist=dist, wds=wds, DataLoader=DataLoader,
              PrunedIterableDataset=PrunedIterableDataset, build_index=build_index, prune=prune,
              x=ns["train_x"], y=ns["train_y"], my_dataset=ns["dataset"],
              urls=[f"data/train-{i:05d}.tar" for i in range(100)])
    if module in ("samplers.py",):
        ns["pruner"] = emp_data.Pruner(len(ns["dataset"]), policy="emp", prune_ratio=0.5)
    if module in ("stage.py",):
        ns["pruner"] = emp_data.Pruner(500, policy="infobatch", prune_ratio=0.5, store_path="stage.emp")
    return ns


def test_every_module_with_examples_is_checked():
    names = {p.name for p in MODULES}
    assert {"pruner.py", "sharded.py", "samplers.py", "index.py", "stage.py", "__init__.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_docstring_examples_run_as_written(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if path.name in NOT_PYTHON:
        check_other_example(path.name, docstring_examples(path))
        return
    write_data("data")
    # A one-process torch.distributed group, as torchrun would set it up, for the sharded example.
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    ns = namespace_for(path.name)
    try:
        for block in docstring_examples(path):
            try:
                exec(compile(block, f"{path.name} docstring", "exec"), ns)
            except Exception as exc:
                raise AssertionError(f"{path} docstring example fails as written:\n{block}\n-> "
                                     f"{type(exc).__name__}: {exc}") from exc
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def check_other_example(module: str, blocks) -> None:
    """The examples that are not Python still say what is true: the cli's subcommands exist, and the
    wids JSON (its '...' dropped) is an index WidsIndex reads."""
    if module == "cli.py":
        from emp_data.cli import main

        for command in {line.split()[1] for block in blocks for line in block.splitlines() if line.strip()}:
            with pytest.raises(SystemExit) as done:
                main([command, "--help"])
            assert done.value.code == 0, command
    else:
        from emp_data.webdataset import WidsIndex

        pathlib.Path("train-000000.tar").touch()
        pathlib.Path("index.json").write_text(blocks[0].replace(", ...", ""))
        assert WidsIndex.load("index.json").num_samples == 10000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

