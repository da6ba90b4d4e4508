"""Every ```python block of the README and of each docs/ page runs as written, in order (one
reader's session per page), with small stand-ins for what the
text leaves to the reader: a model, an optimizer, tensors, a dataset, E, a data/ folder of
WebDataset shards, an SSL encoder. Variables carry over from block to block (a reader's session),
imports do not: each top-level block must import what it uses; a block indented under a bullet
continues the one before it. A block preceded by `<!-- readme-test: needs a GPU -->` runs only where
CUDA is; one preceded by `<!-- readme-test: torchrun -->` runs in 2 processes launched as torchrun
launches them (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment). Signatures are ```text
blocks."""
import ast
import io
import json
import multiprocessing
import os
import pathlib
import re
import sys
import tarfile

import numpy as np
import pytest
import torch
import torch.distributed.nn  # noqa: F401  before init_process_group: docs/distributed.md#an-abort-at-exit
from torch.utils.data import TensorDataset

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _http_server import ShardServer  # noqa: E402
from _worker_start import WORKER_START_OVERRIDE  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README] + sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"(?:<!-- readme-test: (?P<marker>[^>]*) -->\n)?(?P<indent>[ ]*)```python\n(?P<body>.*?)^(?P=indent)```",
                   re.S | re.M)


def readme_blocks(page=README):
    out = []
    for m in FENCE.finditer(page.read_text()):
        indent = len(m.group("indent"))
        body = "\n".join(line[indent:] for line in m.group("body").splitlines())
        out.append((m.group("marker"), body, indent > 0))
    return out


def imported_names(body):
    names = set()
    for node in ast.walk(ast.parse(body)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def write_data(folder, shards=100, per_shard=5):
    """data/train-00000..00099.tar with float32 .npy inputs and .cls labels, and a wids index."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = []
    for s in range(shards):
        url = os.path.join(folder, f"train-{s:05d}.tar")
        with tarfile.open(url, "w") as tar:
            for i in range(per_shard):
                x = rng.standard_normal(8).astype(np.float32)
                buf = io.BytesIO()
                np.save(buf, x)
                for ext, data in (("npy", buf.getvalue()), ("cls", str(int(x[0] > 0)).encode())):
                    info = tarfile.TarInfo(f"s{s:05d}_{i:03d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        entries.append({"url": os.path.basename(url), "nsamples": per_shard})
    with open(os.path.join(folder, "train.json"), "w") as f:
        json.dump({"wids_version": 1, "shardlist": entries}, f)
    write_clip_data(folder)


def write_clip_data(folder, shards=4, per_shard=40):
    """data/clip-00000..00003.tar: JPEG images with .txt captions, as LAION-style shards hold."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for s in range(shards):
        with tarfile.open(os.path.join(folder, f"clip-{s:05d}.tar"), "w") as tar:
            for i in range(per_shard):
                colour = rng.integers(0, 256, 3)
                buf = io.BytesIO()
                Image.new("RGB", (48, 40), tuple(int(c) for c in colour)).save(buf, format="JPEG")
                caption = f"a {'red' if colour[0] > 128 else 'dark'} square number {i}".encode()
                for ext, data in (("jpg", buf.getvalue()), ("txt", caption)):
                    info = tarfile.TarInfo(f"c{s:05d}_{i:03d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def stand_ins():
    torch.manual_seed(0)
    n = 512
    train_x = torch.randn(n, 8)
    train_y = (train_x[:, 0] > 0).long()
    model = torch.nn.Linear(8, 10)
    encoder, head = torch.nn.Linear(8, 16), torch.nn.Linear(16, 8)
    return {"train_x": train_x, "train_y": train_y, "model": model, "E": 2, "N": n,
            "opt": torch.optim.SGD(model.parameters(), lr=0.1), "dataset": TensorDataset(train_x, train_y),
            "encoder": encoder, "head": head, "aug": lambda x: x + 0.1 * torch.randn_like(x),
            "weights": np.random.default_rng(1).random(1000), "k": 100}


# Pages whose blocks define a transform that DataLoader workers run (_worker_start.py: the spawn override).
HANDS_WORKERS_ITS_FUNCTIONS = {"docs/self_supervised.md"}


def _name(page):
    return str(page.relative_to(ROOT))


def test_the_readme_is_a_guide_with_its_recipes():
    text = README.read_text()
    assert len(text.splitlines()) <= 350
    assert len(readme_blocks()) >= 8
    for section in ("## Two commands", "## Quick start", "## WebDataset streams", "## Benchmarks"):
        assert section in text, section
    assert text.index("## WebDataset streams") < text.index("## Map-style data")


@pytest.mark.parametrize("page", [p for p in PAGES if readme_blocks(p)], ids=_name)
def test_every_python_block_runs(page, tmp_path, monkeypatch):
    if WORKER_START_OVERRIDE == "spawn" and _name(page) in HANDS_WORKERS_ITS_FUNCTIONS:
        pytest.skip("its blocks hand DataLoader workers functions they define, which spawned workers cannot "
                    "import from an exec'd block (a script of them can)")
    monkeypatch.chdir(tmp_path)
    write_data("data")
    os.makedirs("ckpt")
    namespace = stand_ins()
    with ShardServer(str(tmp_path / "data")) as http:     # `server`: where the remote-shards block reads
        namespace["server"] = http.url
        ran = run_blocks(readme_blocks(page), namespace)
    assert ran >= 1 or not torch.cuda.is_available()


def run_blocks(blocks, namespace) -> int:
    ran, imported = 0, set()
    for marker, body, continuation in blocks:
        if (marker == "needs a GPU" and not torch.cuda.is_available()) or marker == "torchrun":
            continue
        if not continuation:
            for name in imported:                       # a new section imports for itself
                namespace.pop(name, None)
            imported = set()
        imported |= imported_names(body)
        if "for ids, x in loader:" in body:
            # The SSL block reads unlabelled batches: a loader of (ids, x) from the stream's samples.
            namespace["loader"] = [(torch.arange(8), torch.randn(8, 8)) for _ in range(2)]
        try:
            exec(compile(body, f"README block {ran}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"block fails as written:\n{body}\n-> {type(exc).__name__}: {exc}") from exc
        ran += 1
    return ran


def _torchrun_rank(rank, world, port, folder, bodies):
    """One process of a 2-process 'torchrun': the environment torchrun sets, then the blocks in order."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    os.chdir(folder)
    torch.set_num_threads(1)
    # A process torchrun starts has the platform's default start method for its DataLoader workers;
    # one that torch.multiprocessing.spawn starts inherits spawn.
    multiprocessing.set_start_method(multiprocessing.get_all_start_methods()[0], force=True)
    namespace = stand_ins()
    for n, body in enumerate(bodies):
        try:
            exec(compile(body, f"README torchrun block {n}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"README block fails under torchrun:\n{body}\n-> {type(exc).__name__}: {exc}") from exc
    import torch.distributed as dist

    dist.destroy_process_group()


def test_readme_torchrun_blocks_run_in_two_processes(tmp_path, monkeypatch):
    import socket

    assert not [p for p in PAGES[1:] if any(m == "torchrun" for m, _, _ in readme_blocks(p))], \
        "torchrun blocks live in the README (its sharded recipes), run here"
    bodies = [body for marker, body, _ in readme_blocks() if marker == "torchrun"]
    assert len(bodies) >= 2
    monkeypatch.chdir(tmp_path)
    write_data("data")
    os.makedirs("ckpt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_torchrun_rank, args=(2, port, str(tmp_path), bodies), nprocs=2, join=True)
    assert (tmp_path / "ckpt" / "pruner").exists() and (tmp_path / "scores.rank1.emp").exists()
