"""The host side of the GPU store: copies of its fields as numpy arrays, writes from host values
(a resume), and the copy into a CPU ScoreStore (the memory-mapped file DataLoader workers read)
that checkpoints are saved from. Uses only the tensors `stats`, `times`, `weights`."""
from __future__ import annotations

import numpy as np
import torch

# Columns of the GPU store's (N, 4) stats tensor.
_FIELDS = {"loss": 0, "memory": 1, "loss_mean": 2, "loss_var": 3}


class HostCopies:
    """CudaScoreStore's host copies (a part of that class, kept apart from the kernels)."""

    def _host(self, name: str) -> np.ndarray:
        if name in _FIELDS:
            return self.stats[:, _FIELDS[name]].cpu().numpy()
        if name == "times_selected":
            return _as_count16(self.times.cpu().numpy())
        if name == "idle":
            # The kernels do not count idle epochs (max_gap runs on the CPU store only): never idle.
            return np.zeros(self.num_samples, np.uint16)
        if name == "weight":
            return self.weights.cpu().numpy()
        raise KeyError(name)

    loss = property(lambda self: self._host("loss"), doc="host copy of the last loss per sample")
    memory = property(lambda self: self._host("memory"), doc="host copy of the memory terms")
    loss_mean = property(lambda self: self._host("loss_mean"), doc="host copy of the running loss means")
    loss_var = property(lambda self: self._host("loss_var"), doc="host copy of the running loss variances")
    times_selected = property(lambda self: self._host("times_selected"), doc="host copy of times selected")
    idle = property(lambda self: self._host("idle"), doc="zeros: the GPU store does not count idle epochs")
    weight = property(lambda self: self._host("weight"), doc="host copy of this epoch's weights")

    @property
    def keep(self) -> np.ndarray:
        return self._host("weight") > 0

    def set_field(self, name: str, values: np.ndarray) -> None:
        """Overwrite one field from host values (resume)."""
        values = np.asarray(values)
        if values.shape != (self.num_samples,):
            raise ValueError(f"{name} must have shape ({self.num_samples},), got {values.shape}")
        if name in _FIELDS:
            self.stats[:, _FIELDS[name]] = torch.from_numpy(values.astype(np.float32)).to(self.device)
        elif name == "times_selected":
            self.times.copy_(torch.from_numpy(values.astype(np.int32)).to(self.device))
        elif name == "idle":
            pass    # not kept on the GPU (see _host)
        elif name == "weight":
            self.weights.copy_(torch.from_numpy(values.astype(np.float32)).to(self.device))
        else:
            raise KeyError(name)

    def copy_to(self, host, epoch: int | None = None) -> None:
        """Write this state into a CPU ScoreStore of the same size (e.g. the memory-mapped file
        DataLoader workers read): one device-to-host copy per array, then one write of the host
        arrays under the store's epoch stamp (`epoch`), so a reader never sees a mix. Synchronises."""
        if len(host) != self.num_samples:
            raise ValueError(f"host store has {len(host)} samples, this one {self.num_samples}")
        self.check()
        stats = self.stats.cpu().numpy()
        times = _as_count16(self.times.cpu().numpy())
        weights = self.weights.cpu().numpy()
        with host.writing_weights(epoch):
            for name, column in _FIELDS.items():
                getattr(host, name)[:] = stats[:, column]
            host.times_selected[:] = times
            host.idle[:] = 0
            host.weight[:] = weights

    def to_host(self):
        """A CPU ScoreStore holding a copy of this state."""
        from .host import ScoreStore

        host = ScoreStore(self.num_samples)
        self.copy_to(host)
        return host

    def save(self, path, metadata: bytes = b"") -> None:
        self.to_host().save(path, metadata=metadata)


def _as_count16(times: np.ndarray) -> np.ndarray:
    """The device's int32 selection counts as the host store's uint16, saturating as the CPU does."""
    return np.minimum(times.view(np.uint32), 0xFFFF).astype(np.uint16)
