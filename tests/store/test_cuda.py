"""The CUDA path. Without a GPU (or without the EMP_DATA_CUDA=1 build) only the error paths run;
on a GPU every test compares the GPU store and selections with the CPU path."""
import numpy as np
import pytest
import torch

from emp_data import Pruner, ScoreStore
from emp_data.store import cuda as emp_cuda

gpu = pytest.mark.skipif(not emp_cuda.available(), reason="needs a CUDA GPU and the EMP_DATA_CUDA=1 build")


@pytest.mark.skipif(emp_cuda.available(), reason="checks the error without a usable GPU")
def test_cuda_device_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="EMP_DATA_CUDA=1|no CUDA GPU"):
        Pruner(100, policy="infobatch", device="cuda")


def test_device_argument_is_checked():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        Pruner(10, device="meta")
    assert isinstance(Pruner(10, device="cpu").store, ScoreStore)


def random_batches(n, steps, batch, seed, with_memory):
    """Batches without repeated ids inside one call (the GPU applies duplicates in any order)."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        ids = rng.choice(n, size=batch, replace=False).astype(np.int64)
        loss = rng.gamma(2.0, 0.5, size=batch).astype(np.float32)
        mem = rng.random(batch).astype(np.float32) if with_memory else None
        yield ids, loss, mem


@gpu
def test_update_is_bit_identical_to_cpu():
    n = 50_000
    cpu, dev = ScoreStore(n), emp_cuda.CudaScoreStore(n)
    for ids, loss, mem in random_batches(n, 30, 4096, seed=0, with_memory=True):
        cpu.update(ids, loss, mem, ema_decay=0.7)
        dev.update(torch.from_numpy(ids).cuda(), torch.from_numpy(loss).cuda(), torch.from_numpy(mem).cuda(),
                   ema_decay=0.7)
    dev.check()
    for name in ("loss", "memory", "loss_mean", "loss_var"):
        assert np.array_equal(getattr(dev, name), getattr(cpu, name), equal_nan=True), name


@gpu
def test_bad_entries_surface_at_check():
    dev = emp_cuda.CudaScoreStore(100)
    ids = torch.tensor([1, 2, 500, 3], device="cuda")
    dev.update(ids, torch.ones(4, device="cuda"))
    with pytest.raises(ValueError, match="id out of range at position 2"):
        dev.check()
    dev.check()   # cleared
    dev.update(torch.arange(3, device="cuda"), torch.tensor([1.0, float("nan"), 1.0], device="cuda"))
    with pytest.raises(ValueError, match="non-finite loss at position 1"):
        dev.check()
    dev.update(torch.arange(3, device="cuda"), torch.tensor([1.0, float("inf"), 1.0], device="cuda"), nonfinite="skip")
    dev.check()
    assert dev.skipped == 1


def gpu_and_cpu_pruners(policy, **options):
    n = 40_000
    pruners = [Pruner(n, policy=policy, prune_ratio=0.7, seed=9, device=d, **options) for d in ("cpu", "cuda")]
    return n, pruners


@gpu
@pytest.mark.parametrize("policy,options", [
    ("full", {}), ("infobatch", {}), ("emp", {"max_gap": 0, "exact_budget": False, "beta": 1.5}),
    ("emp", {"max_gap": 0, "mode": "topk", "epsilon": 0.2}),
    ("ucb", {"c": 0.5}), ("epsilon_greedy", {"epsilon": 0.3}), ("random", {}),
    ("infobatch", {"exact_budget": True}), ("emp", {"max_gap": 0, "beta": 1.5, "exact_budget": True}),
    ("emp", {"max_gap": 0, "loss_weight": 0.0, "exact_budget": True}),
    ("emp", {"max_gap": 0, "loss_weight": 0.5, "beta": -1.0, "mode": "topk"})])
def test_selections_match_cpu(policy, options):
    n, (cpu, dev) = gpu_and_cpu_pruners(policy, **options)
    for epoch in range(3):
        cpu_ids, cpu_w = cpu.select(epoch)
        dev_ids, dev_w = dev.select(epoch)
        assert len(np.unique(dev_ids)) == len(dev_ids)              # a permutation of the kept set
        order_c, order_d = np.argsort(cpu_ids), np.argsort(dev_ids)
        assert np.array_equal(cpu_ids[order_c], dev_ids[order_d])   # the same kept set
        assert np.array_equal(cpu_w[order_c], dev_w[order_d])       # with the same weights
        for ids, loss, mem in random_batches(n, 5, 8192, seed=epoch, with_memory=True):
            cpu.loss(torch.from_numpy(loss), ids, memory=torch.from_numpy(mem))
            dev.loss(torch.from_numpy(loss).cuda(), torch.from_numpy(ids).cuda(), memory=torch.from_numpy(mem).cuda())
    assert np.array_equal(cpu.store.times_selected, dev.store.times_selected)
    assert np.array_equal(cpu.scores(), dev.scores(), equal_nan=True)


@gpu
def test_loss_never_synchronises_with_the_host():
    n = 10_000
    pruner = Pruner(n, policy="emp", prune_ratio=0.5, seed=1, max_gap=0, device="cuda")
    pruner.select(0)
    ids = torch.randperm(n, device="cuda")[:512]
    per_sample = torch.rand(512, device="cuda", requires_grad=True)
    logits = torch.randn(512, 10, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = pruner.loss(per_sample, ids, logits=logits)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    loss.backward()
    assert per_sample.grad is not None
    assert pruner.stats()["seen"] == 512


@gpu
def test_state_moves_between_cpu_and_gpu(tmp_path):
    n = 5000
    dev = Pruner(n, policy="infobatch", prune_ratio=0.5, seed=2, device="cuda")
    dev.select(0)
    for ids, loss, _ in random_batches(n, 4, 1000, seed=3, with_memory=False):
        dev.loss(torch.from_numpy(loss).cuda(), torch.from_numpy(ids).cuda())
    dev.save(tmp_path / "p.emp")
    cpu = Pruner.load(tmp_path / "p.emp")
    again = Pruner.load(tmp_path / "p.emp", device="cuda")
    for p in (cpu, again):
        assert np.array_equal(p.store.loss_mean, dev.store.loss_mean, equal_nan=True)
    a, b = dev.select(1), cpu.select(1)
    assert np.array_equal(np.sort(a[0]), np.sort(b[0]))


@gpu
@pytest.mark.parametrize("options", [{}, {"alpha": 2.0, "normalize": False}])
def test_weighted_rule_matches_cpu_statistics(options):
    """Same exponential keys from the same stream; the device log may round differently in the last
    bit, so allow a handful of boundary swaps, and weights equal to float precision."""
    n, (cpu, dev) = gpu_and_cpu_pruners("weighted", **options)
    for ids, loss, _ in random_batches(n, 3, 10_000, seed=7, with_memory=False):
        cpu.store.update(ids, loss)
        dev.store.update(torch.from_numpy(ids).cuda(), torch.from_numpy(loss).cuda())
    cpu_ids, cpu_w = cpu.select(1)
    dev_ids, dev_w = dev.select(1)
    assert len(cpu_ids) == len(dev_ids) == round(0.3 * n)
    common = np.intersect1d(cpu_ids, dev_ids)
    assert len(common) >= len(cpu_ids) - 5
    w_cpu = dict(zip(cpu_ids.tolist(), cpu_w.tolist()))
    w_dev = dict(zip(dev_ids.tolist(), dev_w.tolist()))
    assert max(abs(w_cpu[i] / w_dev[i] - 1) for i in common.tolist()) < 1e-4


@gpu
@pytest.mark.parametrize("policy,options", [
    ("ucb", {"c": 0.5}), ("epsilon_greedy", {"epsilon": 0.3}), ("random", {}),
    ("infobatch", {"exact_budget": True})])
def test_multi_pass_radix_selection_matches_cpu(policy, options):
    """300k samples, none seen at epoch 0: every top-k key then shares its top 32 bits, so the
    device selection needs several histogram passes before it can gather (n > 64Ki)."""
    n = 300_000
    cpu, dev = (Pruner(n, policy=policy, prune_ratio=0.6, seed=4, device=d, **options) for d in ("cpu", "cuda"))
    for epoch in range(2):
        cpu_ids, cpu_w = cpu.select(epoch)
        dev_ids, dev_w = dev.select(epoch)
        order_c, order_d = np.argsort(cpu_ids), np.argsort(dev_ids)
        assert np.array_equal(cpu_ids[order_c], dev_ids[order_d])
        assert np.array_equal(cpu_w[order_c], dev_w[order_d])
        # half the samples seen, with many equal losses (ties settled by the tie-break draw)
        ids = np.arange(0, n, 2, dtype=np.int64)
        loss = np.round(np.random.default_rng(epoch).gamma(2.0, 0.5, len(ids)), 1).astype(np.float32)
        cpu.store.update(ids, loss)
        dev.store.update(torch.from_numpy(ids).cuda(), torch.from_numpy(loss).cuda())


@gpu
def test_gpu_shuffle_is_uniform():
    """Full selection of 4096 ids (4 shuffle buckets): over 400 epochs, the position of a few ids
    falls evenly into 8 position bins (chi-square, 7 degrees of freedom each)."""
    n, epochs, bins = 4096, 400, 8
    pruner = Pruner(n, policy="full", seed=5, device="cuda")
    tracked = [0, 1000, 4095]
    hits = np.zeros((len(tracked), bins))
    for epoch in range(epochs):
        ids, w = pruner.select(epoch)
        assert np.array_equal(np.sort(ids), np.arange(n)) and np.all(w == 1)
        pos = np.empty(n, np.int64)
        pos[ids] = np.arange(n)
        for row, i in enumerate(tracked):
            hits[row, pos[i] * bins // n] += 1
    expected = epochs / bins
    chi2 = ((hits - expected) ** 2 / expected).sum()
    assert chi2 < 55, hits   # 21 degrees of freedom in all; P(chi2 > 55) < 1e-4


@gpu
def test_host_copy_for_workers_follows_each_select(tmp_path):
    pruner = Pruner(20_000, policy="ucb", prune_ratio=0.5, seed=6, device="cuda", store_path=tmp_path / "s.emp")
    for epoch in range(2):
        pruner.store.update(torch.arange(20_000, device="cuda"), torch.rand(20_000, device="cuda"))
        pruner.select(epoch)
        mirror = ScoreStore.open(tmp_path / "s.emp")
        assert np.array_equal(mirror.weight, pruner.store.weight)
        assert np.array_equal(mirror.loss, pruner.store.loss)


@gpu
@pytest.mark.parametrize("policy,options", [
    ("random", {}), ("infobatch", {}), ("infobatch", {"exact_budget": True}), ("epsilon_greedy", {"epsilon": 0.2}),
    ("ucb", {"c": 0.5}), ("emp", {"max_gap": 0, "exact_budget": False, "beta": -1.0}),
    ("emp", {"max_gap": 0, "beta": 0.5, "loss_weight": 1.0, "exact_budget": True}),
    ("emp", {"max_gap": 0, "mode": "topk", "epsilon": 0.1}), ("weighted", {"alpha": 2.0})])
def test_gpu_selection_matches_the_numpy_reference(policy, options):
    """The CUDA kernels against the independent reference (tests/helpers/reference_selection.py), on a
    store with never-seen samples, ties and scores of both signs."""
    import reference_selection as ref

    n = 20_000
    rng = np.random.default_rng(3)
    pruner = Pruner(n, policy=policy, prune_ratio=0.7, seed=1, device="cuda", **options)
    ids = rng.permutation(n)[: int(0.9 * n)].astype(np.int64)
    loss = (rng.normal(0, 2, ids.size)).astype(np.float32)
    loss[::7] = np.round(loss[::7])                                     # ties
    mem = rng.random(ids.size).astype(np.float32)
    pruner.store.update(torch.from_numpy(ids).cuda(), torch.from_numpy(loss).cuda(), torch.from_numpy(mem).cuda())
    cpu = Pruner(n, policy=policy, prune_ratio=0.7, seed=1)
    cpu.store.update(ids, loss, mem)
    state = ref.State.of(cpu.store)
    kept, weights = pruner.select(0)
    ref.assert_matches(ref.expected(state, policy, 0.7, 0, **options), kept, weights, n, f"cuda {policy} {options}")
