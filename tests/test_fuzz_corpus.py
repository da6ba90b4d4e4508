"""Replays every saved fuzz input (fuzz/corpus/<target>/, merged by `make fuzz`) and freshly made
seeds through the parsers' contract (fuzz/checks.py): each input is accepted and safe to use, or
refused with ValueError/OSError; never another exception, a crash or a hang."""
import importlib.util
import os
import pathlib

import pytest

FUZZ = pathlib.Path(__file__).resolve().parent.parent / "fuzz"


def _module(name):
    spec = importlib.util.spec_from_file_location(f"emp_fuzz_{name}", FUZZ / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checks = _module("checks")
TARGETS = sorted(checks.CHECKS)


def _corpus(target):
    folder = FUZZ / "corpus" / target
    return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds")
    _module("make_seeds").main(str(out))
    return out


@pytest.mark.parametrize("target", TARGETS)
def test_saved_fuzz_inputs_keep_the_contract(target):
    inputs = _corpus(target)
    if not inputs:
        pytest.skip(f"no saved inputs for {target} (run `make fuzz`)")
    for path in inputs:
        checks.run(target, path.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_seeds_are_accepted(target, seeds, tmp_path):
    """The seeds are files the real writers made: every one must parse (no error at all)."""
    files = sorted((seeds / target).iterdir())
    assert files
    for path in files:
        data = path.read_bytes()
        if target == "shard_index" and data[:1] == b"S":
            continue                      # fuzz-structured arrays: refusing them is the point
        folder = tmp_path / path.name
        folder.mkdir()
        checks.CHECKS[target](data, str(folder))


def test_every_target_has_a_contract_and_a_harness():
    harnesses = {p.stem[len("fuzz_"):] for p in FUZZ.glob("fuzz_*.cpp")} | {"shard_index", "wids_json"}
    assert harnesses == set(TARGETS)
    assert all(os.path.getsize(FUZZ / f"fuzz_{t}.cpp") for t in ("tar", "store", "key_table"))
