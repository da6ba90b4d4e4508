"""The host side of the GPU path, run without a GPU: `CudaScoreStore`'s own Python code (copies,
fields, persistence) over CPU tensors, with only its kernel calls replaced by the CPU core. This
checks the Pruner's device="cuda" branches (loss, select, stats, save/load, state dicts) and the
memory-mapped host copy that feeds DataLoader workers; tests/store/test_cuda.py checks the kernels."""
import os

import numpy as np
import pytest
import torch

from emp_data import Pruner, ScoreStore
from emp_data.store import cuda as emp_cuda
from emp_data.webdataset import PrunedIterableDataset, build_index

from shards import PER_SHARD, SHARDS, write_shards


class KernelsOnCpu(emp_cuda.CudaScoreStore):
    """A CudaScoreStore whose tensors live on the CPU and whose kernel calls run the CPU core on a
    copy of them. Everything else (copy_to, to_host, set_field, save, field views) is the real code."""

    def __init__(self, num_samples, device="cuda", *, mirror_path=None):
        n = int(num_samples)
        self.device = torch.device("cpu")
        self.num_samples = n
        self.stats = torch.empty((n, 4), dtype=torch.float32)
        self.times = torch.empty(n, dtype=torch.int32)
        self.weights = torch.empty(n, dtype=torch.float32)
        self._skipped_count = 0
        self.reset()
        self._attach_mirror(mirror_path)

    def _core(self):
        """A CPU store holding the tensors' state (the 'device' memory)."""
        return self.to_host()

    def _load(self, core):
        for name in ("loss", "memory", "loss_mean", "loss_var", "times_selected", "weight"):
            self.set_field(name, getattr(core, name))

    def reset(self):
        self._load(ScoreStore(self.num_samples))

    def update(self, ids, losses, memory=None, *, nonfinite="raise", ema_decay=0.8):
        core = self._core()
        as_np = (lambda t: None if t is None else (t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)))
        self._skipped_count += core.update(as_np(ids), as_np(losses), as_np(memory), nonfinite=nonfinite,
                                           ema_decay=ema_decay)
        self._load(core)

    def check(self):
        pass

    @property
    def skipped(self):
        return self._skipped_count

    def gather_weights(self, ids):
        w = self.weights[torch.as_tensor(ids)]
        return torch.where(w > 0, w, torch.ones_like(w))

    def select_on_device(self, cfg, seed, epoch, count):
        core = self._core()
        ids, weights, info = core._core.select(cfg, seed, epoch, count)
        self._load(core)
        return torch.from_numpy(ids), torch.from_numpy(weights), dict(info)

    def current_on_device(self, seed, epoch):
        ids, weights = self._core()._core.current_selection(seed, epoch)
        return torch.from_numpy(ids), torch.from_numpy(weights)

    def scores_on_device(self, cfg):
        return torch.from_numpy(self._core()._core.scores(cfg))


@pytest.fixture
def kernels_on_cpu(monkeypatch):
    monkeypatch.setattr(emp_cuda, "CudaScoreStore", KernelsOnCpu)


def batches(n, steps, seed):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        ids = rng.choice(n, size=64, replace=False)
        yield torch.from_numpy(ids), torch.from_numpy(rng.gamma(2.0, 0.5, 64).astype(np.float32)), \
            torch.from_numpy(rng.standard_normal((64, 10)).astype(np.float32))


@pytest.mark.parametrize("policy,options", [("emp", {"beta": 1.0, "max_gap": 0, "exact_budget": False}), ("ucb", {}),
                                            ("infobatch", {"exact_budget": True}),
                                            ("emp", {"loss_weight": 0.0, "max_gap": 0, "exact_budget": False})])
def test_gpu_pruner_branches_match_the_cpu_pruner(kernels_on_cpu, tmp_path, policy, options):
    n = 2000
    cpu = Pruner(n, policy=policy, prune_ratio=0.6, epochs=4, seed=3, **options)
    dev = Pruner(n, policy=policy, prune_ratio=0.6, epochs=4, seed=3, device="cuda", **options)
    assert isinstance(dev.store, KernelsOnCpu)
    for epoch in range(3):
        (ci, cw), (di, dw) = cpu.select(epoch), dev.select(epoch)
        assert np.array_equal(ci, di) and np.array_equal(cw, dw)
        for ids, loss, logits in batches(n, 5, seed=epoch):
            a = cpu.loss(loss.clone().requires_grad_(), ids, logits=logits)
            b = dev.loss(loss.clone().requires_grad_(), ids, logits=logits)
            assert torch.equal(a.detach(), b.detach())
    s_cpu, s_dev = cpu.stats(), dev.stats()
    for key in ("kept", "sample_passes", "seen", "score_mean", "above_threshold"):
        assert s_cpu[key] == s_dev[key], key
    dev.save(tmp_path / "dev.emp")
    back = Pruner.load(tmp_path / "dev.emp", device="cuda")
    assert isinstance(back.store, KernelsOnCpu)
    assert np.array_equal(back.store.loss_mean, cpu.store.loss_mean, equal_nan=True)
    assert np.array_equal(back.select(3)[0], cpu.select(3)[0])


def test_gpu_store_host_copy_feeds_stream_workers(kernels_on_cpu, tmp_path):
    """device="cuda" with store_path: workers read each epoch's weights from the memory-mapped
    host copy that select refreshes, and follow the GPU store's score updates."""
    shards = write_shards(str(tmp_path))
    build_index(shards, out=tmp_path / "idx.empidx")
    n = SHARDS * PER_SHARD
    pruner = Pruner(n, policy="ucb", prune_ratio=0.75, seed=3, device="cuda", store_path=tmp_path / "scores.emp")
    assert pruner.store_path == str(tmp_path / "scores.emp") and pruner.store.path is None
    pruner.store.update(torch.arange(n), torch.linspace(0, 1, n))           # high ids score high
    ds = PrunedIterableDataset(shards, pruner, index=tmp_path / "idx.empidx")
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    ds.set_epoch(0)
    assert sorted(int(s["__id__"]) for s in loader) == list(range(150, 200))
    pruner.store.update(torch.arange(n), torch.linspace(1, 0, n))
    pruner.store.update(torch.arange(n), torch.linspace(1, 0, n))
    ds.set_epoch(1)
    epoch1 = sorted(int(s["__id__"]) for s in loader)
    assert epoch1 == sorted(pruner.select(1)[0].tolist()) and epoch1[0] < 50
    mirror = ScoreStore.open(tmp_path / "scores.emp")
    assert np.array_equal(mirror.weight, pruner.store.weight)
    assert np.array_equal(mirror.times_selected, pruner.store.times_selected)


def test_resumed_gpu_pruner_refreshes_its_host_copy(kernels_on_cpu, tmp_path):
    src = Pruner(500, policy="random", prune_ratio=0.5, seed=1, device="cuda")
    src.select(0)
    state = src.state_dict()
    dst = Pruner(500, policy="random", prune_ratio=0.5, seed=1, device="cuda", store_path=tmp_path / "w.emp")
    dst.load_state_dict(state)
    assert np.array_equal(ScoreStore.open(tmp_path / "w.emp").weight, src.store.weight)
    assert (src.store.weight == 0).sum() == 250


def test_gpu_pruner_refuses_to_save_over_its_host_copy_and_stamps_it(kernels_on_cpu, tmp_path):
    """Pruner.save(pruner.store_path) would rename a snapshot over the file workers have mapped;
    every select stamps the host copy with its epoch (what workers read)."""
    pruner = Pruner(300, policy="random", prune_ratio=0.5, seed=2, device="cuda", store_path=tmp_path / "w.emp")
    assert ScoreStore.open(tmp_path / "w.emp").epoch_stamp() is None
    pruner.select(4)
    assert ScoreStore.open(tmp_path / "w.emp").epoch_stamp() == 4
    os.symlink(tmp_path / "w.emp", tmp_path / "alias.emp")
    for name in (pruner.store_path, tmp_path / "alias.emp"):
        with pytest.raises(ValueError, match="live store file"):
            pruner.save(name)
    pruner.save(tmp_path / "ckpt.emp")
    assert Pruner.load(tmp_path / "ckpt.emp").epoch == 4


def test_update_batches_reach_the_kernel_sorted_by_id_in_call_order():
    """The GPU update applies each run of equal ids in one thread, in the order the runs hold: the
    batch must arrive stably sorted, with each entry's caller position for error reports."""
    ids = torch.tensor([5, 2, 5, 9, 2, 5])
    loss = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    mem = loss * 10
    s_ids, s_loss, s_mem, order = emp_cuda.batch_in_id_order(ids, loss, mem)
    assert s_ids.tolist() == [2, 2, 5, 5, 5, 9]
    assert order.tolist() == [1, 4, 0, 2, 5, 3]            # equal ids keep their call order
    assert s_loss.tolist() == [1.0, 4.0, 0.0, 2.0, 5.0, 3.0] and torch.equal(s_mem, s_loss * 10)
    # Applied run by run in that order, the result is the CPU store's (duplicates in call order).
    ref, runs = ScoreStore(10), ScoreStore(10)
    ref.update(ids.numpy(), loss.numpy(), mem.numpy())
    for value in s_ids.unique().tolist():
        at = (s_ids == value).nonzero().flatten()
        runs.update(s_ids[at].numpy(), s_loss[at].numpy(), s_mem[at].numpy())
    for field in ("loss", "memory", "loss_mean", "loss_var"):
        assert np.array_equal(getattr(ref, field), getattr(runs, field), equal_nan=True), field


@pytest.mark.parametrize("policy,options,match", [
    ("sweep", {}, "'sweep' runs on the CPU store only"), ("seta", {}, "'seta' runs on the CPU store only"),
    ("infobatch", {"max_gap": 2}, "max_gap runs on the CPU store only")])
def test_cpu_only_rules_are_refused_by_the_gpu_store_before_any_kernel(policy, options, match):
    from emp_data import make_policy

    class NoKernels:            # the real CudaScoreStore.select, on an object that has no kernels at all
        def check(self):
            pass

    cfg = make_policy(policy, **options).config(0.5)
    with pytest.raises(ValueError, match=match):
        emp_cuda.CudaScoreStore.select_on_device(NoKernels(), cfg, 0, 0, True)


def test_gpu_selection_counts_reach_the_host_store_as_saturating_uint16(kernels_on_cpu):
    store = KernelsOnCpu(4)
    store.times.copy_(torch.tensor([0, 7, 70000, -1], dtype=torch.int32))   # -1: 2^32 - 1 as the device's uint32
    host = ScoreStore(4)
    host.idle[:] = 5
    store.copy_to(host)
    assert host.times_selected.tolist() == [0, 7, 0xFFFF, 0xFFFF] and host.idle.tolist() == [0, 0, 0, 0]
