"""The C++ key table: dense stable ids, collision handling, file checks, concurrent processes."""
import multiprocessing as mp
import os
import sys

import pytest

from emp_data.webdataset import KeyTable

sys.path.insert(0, os.path.dirname(__file__))
import _training_jobs as jobs  # noqa: E402


def test_ids_are_dense_in_order_of_first_appearance():
    table = KeyTable(10)
    assert [table.id_of("a.tar", k) for k in ("x", "y", "x", "z")] == [0, 1, 0, 2]
    assert table.id_of("b.tar", "x") == 3          # same key in another shard: another sample
    assert len(table) == 4 and table.key_of(2) == "z" and table.find("a.tar", "y") == 1
    assert table.find("a.tar", "nope") == -1
    with pytest.raises(IndexError, match="not in the key table"):
        table.key_of(4)


def test_more_samples_than_the_pruner_is_a_clear_error():
    table = KeyTable(3)
    for k in "abc":
        table.id_of("u", k)
    with pytest.raises(ValueError, match="more distinct samples than the pruner's 3"):
        table.id_of("u", "d")
    assert table.id_of("u", "b") == 1 and len(table) == 3


def test_colliding_hashes_are_kept_apart_and_counted():
    # 3 hash bits: 2000 keys share 7 hash values (0 is reserved), so almost every key collides.
    table = KeyTable(2000, _hash_bits=3)
    keys = [f"k{i}" for i in range(2000)]
    ids = [table.id_of("u", k) for k in keys]
    assert ids == list(range(2000))
    assert [table.id_of("u", k) for k in keys[::7]] == ids[::7]
    assert [table.key_of(i) for i in range(0, 2000, 97)] == keys[::97]
    assert table.collisions == 2000 - 7
    assert KeyTable(100).collisions == 0


def test_file_table_persists_and_refuses_bad_files(tmp_path):
    path = tmp_path / "t.keys"
    table = KeyTable(100, path)
    ids = [table.id_of("shard-0.tar", f"k{i}") for i in range(50)]
    del table
    reopened = KeyTable(100, path)
    assert len(reopened) == 50 and [reopened.find("shard-0.tar", f"k{i}") for i in range(50)] == ids
    assert reopened.id_of("shard-1.tar", "k0") == 50
    with pytest.raises(ValueError, match="numbers 100 samples, not 99"):
        KeyTable(99, path)
    raw = bytearray(path.read_bytes())
    raw[40] ^= 0xFF
    (tmp_path / "corrupt.keys").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt header"):
        KeyTable(100, tmp_path / "corrupt.keys")
    (tmp_path / "short.keys").write_bytes(bytes(raw[:5000]))
    with pytest.raises(ValueError, match="corrupt header|truncated"):
        KeyTable(100, tmp_path / "short.keys")
    (tmp_path / "foreign.keys").write_bytes(b"\0" * 8192)
    with pytest.raises(ValueError, match="not an emp_data key table"):
        KeyTable(100, tmp_path / "foreign.keys")
    with pytest.raises(ValueError, match="cannot be sent to another process"):
        import pickle

        pickle.dumps(KeyTable(5))


def test_concurrent_processes_agree_on_every_id(tmp_path):
    """Four processes insert overlapping key sets in different orders into one file at once. The
    table uses 10 hash bits, so most keys also collide and take the collision path under races."""
    path = str(tmp_path / "shared.keys")
    KeyTable(50_000, path, _hash_bits=10)       # create; the processes open it
    universe = [(f"shard-{i % 7}.tar", f"sample{i:06d}") for i in range(12000)]
    ctx = mp.get_context("spawn")
    queues, procs = [], []
    for p in range(4):
        mine = universe[p::2] + universe[::3]               # overlaps with every other process
        mine = mine[::-1] if p % 2 else mine
        q = ctx.Queue()
        proc = ctx.Process(target=jobs.stream_key_table_inserts, args=(path, mine, q))
        proc.start()
        queues.append((q, mine))
        procs.append(proc)
    seen = {}
    for q, mine in queues:
        for key, sid in zip(mine, q.get(timeout=120)):
            assert seen.setdefault(key, sid) == sid      # one id per key across processes
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    table = KeyTable(50_000, path)
    assert len(table) == len(seen) == len(set(seen.values()))
    assert sorted(seen.values()) == list(range(len(seen)))   # dense
    assert all(table.find(u, k) == sid for (u, k), sid in list(seen.items())[::50])
    assert table.collisions == len(seen) - 1023    # every key but the first of each hash value
