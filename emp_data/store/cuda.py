"""GPU-resident score store and per-epoch selection (`Pruner(..., device="cuda")`).

Uses the optional extension `emp_data._C_cuda`, built with ``EMP_DATA_CUDA=1 pip install .``. The
state lives in torch tensors on the GPU (struct of arrays: stats (N, 4) float32 {loss, memory,
loss_mean, loss_var}, times_selected int32, weight float32). The kernels get raw device pointers
and torch's current stream, so the extension never links libtorch.

`update` and `gather_weights` never synchronise with the host: a bad entry (id out of range,
non-finite value) is recorded on the device and raised as ValueError at the next synchronising call
(`check()`, `select`, `stats`, `save`). Selections use the CPU path's counter-based random streams:
for the same (seed, epoch) and scores the kept set and weights are the CPU's (soft rules compare
against a mean summed in another order, so a score within a rounding error of the mean could
differ); the shuffle order of the returned ids differs from the CPU's.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import _C
from .._validate import as_ema_decay, as_nonfinite_mode
from .host import _ERRORS
from .cuda_copies import HostCopies
from .protocol import STORE_FIELDS

_NO_ERROR = -1   # UINT64_MAX seen as int64


def _extension():
    try:
        from .. import _C_cuda
    except ImportError as exc:
        raise RuntimeError("emp_data was built without CUDA kernels; reinstall with EMP_DATA_CUDA=1 "
                           f"pip install . (needs nvcc) to use device='cuda' ({exc})") from None
    return _C_cuda


def available() -> bool:
    """True when the CUDA kernels are built and torch sees a GPU."""
    try:
        ext = _extension()
    except RuntimeError:
        return False
    return torch.cuda.is_available() and ext.device_count() > 0


def _stream(device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def batch_in_id_order(ids, loss, memory=None):
    """The batch stably sorted by id, and each entry's position in the caller's batch: the update
    kernel applies each run of equal ids in one thread, in call order (device ops, no host sync)."""
    ids_sorted, order = torch.sort(ids, stable=True)
    return ids_sorted, loss[order], None if memory is None else memory[order], order


class CudaScoreStore(HostCopies):
    """Per-sample pruning state on a GPU. Field properties (``loss``, ``weight``, ...) return host
    numpy copies for inspection; the device tensors are ``stats``, ``times``, ``weights``."""

    def __init__(self, num_samples: int, device="cuda", *, mirror_path=None):
        self._ext = _extension()
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"CudaScoreStore needs a CUDA device, got {self.device}")
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for, but torch sees no CUDA GPU")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        n = int(num_samples)
        if n < 1:
            raise ValueError(f"num_samples must be >= 1, got {n}")
        self.num_samples = n
        self.stats = torch.empty((n, 4), dtype=torch.float32, device=self.device)
        self.times = torch.empty(n, dtype=torch.int32, device=self.device)
        self.weights = torch.empty(n, dtype=torch.float32, device=self.device)
        self._error = torch.full((1,), _NO_ERROR, dtype=torch.int64, device=self.device)
        self._skipped = torch.zeros(1, dtype=torch.int64, device=self.device)
        self.reset()
        self._attach_mirror(mirror_path)

    def _attach_mirror(self, mirror_path) -> None:
        """With a path: a memory-mapped host copy of this store, refreshed by every select and resume,
        from which DataLoader workers read the epoch's weights."""
        self.mirror = None
        if mirror_path is not None:
            from .host import ScoreStore

            self.mirror = ScoreStore(self.num_samples, path=mirror_path)
            self.copy_to(self.mirror, None)

    def __len__(self) -> int:
        return self.num_samples

    path = None
    readonly = False

    @property
    def worker_path(self) -> str | None:
        """The host copy DataLoader workers read (None: no copy)."""
        return self.mirror.path if getattr(self, "mirror", None) is not None else None

    # ------------------------------------------------------------------- the Store protocol
    def batch_ids(self, ids) -> torch.Tensor:
        """A batch's ids as an int64 tensor on this store's GPU (no host synchronisation)."""
        if not isinstance(ids, torch.Tensor):
            ids = torch.as_tensor(np.asarray(ids))
        if ids.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise TypeError(f"ids must be integers, got {ids.dtype}")
        return ids.to(self.device, dtype=torch.int64, non_blocking=True)

    def record(self, ids, values, *, nonfinite: str = "raise", ema_decay: float = 0.8) -> None:
        """`update` from a (B, 1) or (B, 2) tensor of (loss[, memory]) rows, on the GPU."""
        values = values.to(self.device)
        self.update(ids, values[:, 0], values[:, 1] if values.shape[1] > 1 else None, nonfinite=nonfinite,
                    ema_decay=ema_decay)

    def batch_weights(self, ids) -> torch.Tensor:
        return self.gather_weights(ids)

    def select(self, config, seed: int, epoch: int, count: bool, partition=None):
        """(kept ids, weights) as host numpy arrays (one copy per epoch, for samplers) and an info
        dict; the host copy for workers is refreshed and stamped with `epoch`."""
        _refuse_partition(partition)
        ids, weights, info = self.select_on_device(config, seed, epoch, count)
        if self.worker_path is not None:
            self.copy_to(self.mirror, epoch)
        return ids.cpu().numpy(), weights.cpu().numpy(), info

    def current_selection(self, seed: int, epoch: int, partition=None):
        _refuse_partition(partition)
        ids, weights = self.current_on_device(seed, epoch)
        return ids.cpu().numpy(), weights.cpu().numpy()

    def scores(self, config) -> np.ndarray:
        return self.scores_on_device(config).cpu().numpy()

    def host_arrays(self) -> dict:
        return {name: self._host(name) for name in STORE_FIELDS}

    def restore(self, arrays: dict, epoch: int | None) -> None:
        for name in STORE_FIELDS:
            self.set_field(name, np.asarray(arrays[name]))
        if self.worker_path is not None:
            self.copy_to(self.mirror, epoch)

    @property
    def nbytes(self) -> int:
        return self.num_samples * 24

    def reset(self) -> None:
        with torch.cuda.device(self.device):
            self._ext.reset(self.stats.data_ptr(), self.times.data_ptr(), self.weights.data_ptr(), self.num_samples,
                            _stream(self.device))

    # ----------------------------------------------------------------------------- per step
    def _on_device(self, t, name: str, dtype) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(np.asarray(t))
        if t.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
        if dtype == torch.int64 and (t.dtype.is_floating_point or t.dtype == torch.bool):
            raise TypeError(f"{name} must be integer sample ids, got {t.dtype}")
        if dtype == torch.float32 and not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
        return t.to(device=self.device, dtype=dtype, non_blocking=True).contiguous()

    def update(self, ids, losses, memory=None, *, nonfinite: str = "raise", ema_decay: float = 0.8) -> None:
        """Record a batch on the GPU, asynchronously (no host synchronisation). Errors surface at
        the next `check()` (or select/stats/save)."""
        as_nonfinite_mode(nonfinite)
        decay = as_ema_decay(ema_decay)
        ids_t = self._on_device(ids, "ids", torch.int64)
        loss_t = self._on_device(losses, "losses", torch.float32)
        if loss_t.shape[0] != ids_t.shape[0]:
            raise ValueError(f"losses has {loss_t.shape[0]} entries but ids has {ids_t.shape[0]}")
        mem_t = None if memory is None else self._on_device(memory, "memory", torch.float32)
        if mem_t is not None and mem_t.shape[0] != ids_t.shape[0]:
            raise ValueError(f"memory has {mem_t.shape[0]} entries but ids has {ids_t.shape[0]}")
        ids_t, loss_t, mem_t, order = batch_in_id_order(ids_t, loss_t, mem_t)
        with torch.cuda.device(self.device):
            self._ext.update(ids_t.data_ptr(), loss_t.data_ptr(), 0 if mem_t is None else mem_t.data_ptr(),
                             order.data_ptr(), ids_t.shape[0], self.stats.data_ptr(), self.num_samples, decay,
                             nonfinite == "skip", self._error.data_ptr(), self._skipped.data_ptr(),
                             _stream(self.device))
        # The kernel reads these tensors later on the stream: keep them alive until it has.
        for t in (ids_t, loss_t, mem_t, order):
            if t is not None:
                t.record_stream(torch.cuda.current_stream(self.device))

    def gather_weights(self, ids) -> torch.Tensor:
        """This epoch's loss weights of `ids` (1 for ids outside the selection), on the GPU, async."""
        ids_t = self._on_device(ids, "ids", torch.int64)
        out = torch.empty(ids_t.shape[0], dtype=torch.float32, device=self.device)
        with torch.cuda.device(self.device):
            self._ext.gather_weights(self.weights.data_ptr(), self.num_samples, ids_t.data_ptr(), ids_t.shape[0],
                                     out.data_ptr(), _stream(self.device))
        return out

    def check(self) -> None:
        """Raise the first bad entry recorded by `update` since the last check (synchronises)."""
        word = int(self._error.item())
        if word == _NO_ERROR:
            return
        self._error.fill_(_NO_ERROR)
        position, code = word >> 2, word & 3
        raise ValueError(f"{_ERRORS.get(code, 'bad entry')} at position {position} of an update call on the GPU "
                         "(the other entries of that call were written)")

    @property
    def skipped(self) -> int:
        """Entries skipped by nonfinite='skip' so far (synchronises)."""
        return int(self._skipped.item())

    # ----------------------------------------------------------------------------- per epoch
    def select_on_device(self, cfg, seed: int, epoch: int, count: bool):
        """Run `cfg` (a _C.SelectConfig) for (seed, epoch); returns (ids, weights) tensors on the
        GPU, shuffled, and an info dict. Synchronises (the kept count sizes the outputs)."""
        self.check()
        if cfg.rule in (_C.Rule.SWEEP, _C.Rule.SETA):
            name = "sweep" if cfg.rule == _C.Rule.SWEEP else "seta"
            raise ValueError(f"policy {name!r} runs on the CPU store only for now (use device=None)")
        if cfg.max_gap:
            raise ValueError("max_gap runs on the CPU store only for now: the GPU store does not count idle epochs. "
                             "Pass max_gap=0 (emp's default is max_gap='pass'), or use device=None")
        ext, s, n = self._ext, _stream(self.device), self.num_samples
        score = (int(cfg.score.value), float(cfg.beta), float(cfg.ucb_c), float(cfg.loss_weight))
        with torch.cuda.device(self.device):
            if cfg.rule == _C.Rule.FULL:
                info = ext.select_full(self.weights.data_ptr(), n, s)
            elif cfg.rule == _C.Rule.SOFT and not cfg.exact_budget:
                info = ext.select_soft(self.stats.data_ptr(), n, *score, float(cfg.prune_ratio), int(seed), int(epoch),
                                       self.weights.data_ptr(), s)
            elif cfg.rule == _C.Rule.SOFT:
                info = ext.select_soft_exact(self.stats.data_ptr(), n, *score, float(cfg.prune_ratio), int(seed),
                                             int(epoch), self.weights.data_ptr(), s)
            elif cfg.rule == _C.Rule.TOPK:
                info = ext.select_topk(self.stats.data_ptr(), n, *score, float(cfg.prune_ratio), float(cfg.explore),
                                       int(seed), int(epoch), self.weights.data_ptr(), s)
            else:
                info = ext.select_weighted(self.stats.data_ptr(), n, *score, float(cfg.prune_ratio), float(cfg.alpha),
                                           bool(cfg.normalize), int(seed), int(epoch), self.weights.data_ptr(), s)
            ids, weights = self._gather(seed, epoch, count)
        info["kept"] = int(ids.shape[0])
        return ids, weights, info

    def current_on_device(self, seed: int, epoch: int):
        with torch.cuda.device(self.device):
            return self._gather(seed, epoch, False)

    def _gather(self, seed, epoch, count):
        ext, s, n = self._ext, _stream(self.device), self.num_samples
        kept = ext.count_kept(self.weights.data_ptr(), n, s)
        ids = torch.empty(kept, dtype=torch.int64, device=self.device)
        weights = torch.empty(kept, dtype=torch.float32, device=self.device)
        ext.gather_kept(self.weights.data_ptr(), n, int(seed), int(epoch), self.times.data_ptr() if count else 0,
                        ids.data_ptr(), weights.data_ptr(), kept, s)
        return ids, weights

    def scores_on_device(self, cfg) -> torch.Tensor:
        out = torch.empty(self.num_samples, dtype=torch.float32, device=self.device)
        with torch.cuda.device(self.device):
            self._ext.compute_scores(self.stats.data_ptr(), self.num_samples, int(cfg.score.value), float(cfg.beta),
                                     float(cfg.ucb_c), float(cfg.loss_weight), out.data_ptr(), _stream(self.device))
        return out

    def __repr__(self) -> str:
        return f"CudaScoreStore(num_samples={self.num_samples}, device={self.device})"


def _refuse_partition(partition) -> None:
    if partition is not None and partition.select_args():
        raise ValueError("the GPU store is not partitioned over ranks: a sharded Pruner keeps its part in host memory "
                         "(device='cpu')")
