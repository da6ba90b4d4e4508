"""The sampling benchmark's commands, as docs/benchmarks.md gives them, run at a small size from a
temp folder: each prints its table with the rows the docs describe."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "sampling_throughput.py")


def run(tmp_path, *args, script=SCRIPT):
    out = subprocess.run([sys.executable, script, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in out.stdout.splitlines()
            if line.startswith("| 1e+05") or line.startswith("| 2e+05")]


def test_the_big_store_run_times_a_jobs_first_four_selects(tmp_path):
    rows = run(tmp_path, "--big", "2e5", "--big-dir", str(tmp_path), "--repeat", "1")
    ops = [r[1] for r in rows]
    for policy in ("infobatch", "ucb", "random"):
        i = ops.index(f"select {policy}")
        assert rows[i][-1].endswith("x")                       # against the stream-read floor
        calls = rows[i + 1][2]
        assert calls.startswith("a job's first 4 selects: ") and calls.count(",") == 3
        assert rows[i][2] == calls.split(", ")[-1]             # the row's time is the fourth call
    assert not list(tmp_path.glob("big_store_*"))              # the 24n-byte file is removed


def test_the_throughput_table_has_every_select_against_its_baseline(tmp_path):
    rows = run(tmp_path, "--sizes", "1e5", "--repeat", "1", "--skip-reference")
    selects = {r[1]: r for r in rows if r[1].startswith("select ")}
    for op in ("select random", "select epsilon_greedy", "select ucb", "select emp", "select emp topk",
               "select weighted", "select sweep", "select ucb, nothing seen yet"):
        assert selects[op][5].endswith("x") and selects[op][6].endswith("x"), selects[op]
    assert any(r[1] == "update (4096-id batches)" for r in rows)


def test_interleaved_passes_follow_every_other_pass_equally_often():
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        from timing import carryover_balanced_orders
    finally:
        sys.path.remove(os.path.dirname(SCRIPT))
    for k in range(2, 8):
        orders = carryover_balanced_orders(k)
        assert all(sorted(order) == list(range(k)) for order in orders)
        follows = {}
        for order in orders:
            for before, after in zip(order, order[1:]):
                follows[before, after] = follows.get((before, after), 0) + 1
        assert len(follows) == k * (k - 1) and len(set(follows.values())) == 1, (k, follows)


def test_the_update_call_by_call_times_every_way_with_a_step_between_calls(tmp_path):
    # 3 update ways x 70 calls of 4096 ids share one store: its log (2^18 entries) fills 3 times
    rows = {r[2]: r for r in run(tmp_path, "--size", "1e5", "--ids", "4096", "--calls", "70", "--block", "10",
                                 "--step-ms", "1", script=os.path.join(ROOT, "benchmarks", "update_calls.py"))}
    ways = ("update, automatic choice", "update, one thread", "update, all threads", "numpy, 2 scatters",
            "numpy, read-modify-write of 24-byte records", "numpy, add to a 1-element array")
    for way in ways:
        assert rows[way][3] == "70" and rows[way][-1].endswith("x"), rows[way]
    assert sum(int(rows[way][4]) for way in ways[:3]) == 3 * 70 * 4096 // (1 << 18)
    from emp_data import _C

    assert rows["update, one thread"][5] == "0"
    threads = rows["update, all threads"]
    assert threads[5] == (threads[4] if _C.get_num_threads() > 1 else "0")
    assert rows["numpy, 2 scatters"][-1] == "1.00x"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (and the EMP_DATA_CUDA=1 build)")
def test_the_gpu_table_has_every_select_and_the_host_copy(tmp_path):
    rows = run(tmp_path, "--device", "cuda", "--sizes", "1e5", "--repeat", "1")
    ops = [r[1] for r in rows]
    for name in ("infobatch", "infobatch exact budget r=0.3", "weighted", "ucb (top-k)", "random"):
        row = rows[ops.index(f"select {name} [cuda]")]
        assert row[-1].endswith("x"), row
    assert any(op.startswith("host copy of 30,000 kept ids") for op in ops), ops
