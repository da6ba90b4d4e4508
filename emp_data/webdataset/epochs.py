"""How a copy of a stream knows its epoch: the warnings for an unusual `set_epoch`, the check that
a stream numbered by its key table has as many samples as its Pruner, and, in a DataLoader
worker, the epoch read from the shared store's stamp."""
from __future__ import annotations

import warnings

from ..store.host import ScoreStore
from .epoch_weights import EpochWeights
from .reports import passes_done


class EpochChecks:
    """What the training process's stream remembers between epochs to warn about, or refuse, an
    epoch sequence that would not train what the user means."""

    def __init__(self):
        self.last_set = None           # the highest epoch given to set_epoch
        self.warned: set[str] = set()  # each warning is given once
        self.numbered_at_select = None  # key-table ids numbered when the last epoch was selected

    def on_set_epoch(self, epoch: int, planned: int | None) -> None:
        """Going back to an earlier epoch, or past the pruner's `epochs`, is allowed and warned about once."""
        if planned is not None and epoch >= planned and "past" not in self.warned:
            self.warned.add("past")
            warnings.warn(f"set_epoch({epoch}) is past the pruner's epochs={planned}: epochs from {planned} on are "
                          "annealing epochs, which train every sample at weight 1", stacklevel=3)
        last = self.last_set
        if last is not None and epoch < last and "back" not in self.warned:
            self.warned.add("back")
            warnings.warn(f"set_epoch({epoch}) after set_epoch({last}): epoch {epoch} is selected again from the "
                          "scores recorded since, so it keeps other samples than it did the first time",
                          stacklevel=3)
        self.last_set = epoch if last is None else max(last, epoch)

    def check_numbered_all(self, numbered: int, read_a_pass: bool, num_samples: int) -> None:
        """Without an index the stream numbers samples as it meets them, so the Pruner's size is a
        guess. Once a whole pass is known to be over (this process read one to its end, or an epoch
        went by without a new key), the count is the data's: ids the data never reaches would count
        as never seen and take the budget, so a Pruner larger than the data is refused here."""
        before = self.numbered_at_select
        self.numbered_at_select = numbered
        whole_pass = read_a_pass or (before is not None and before == numbered and numbered > 0)
        if whole_pass and numbered < num_samples:
            raise ValueError(f"the Pruner has {num_samples} samples, but a whole pass of the stream numbered "
                             f"{numbered} (stream.samples_seen): the {num_samples - numbered} ids the data never "
                             "reaches would count as never seen and take the budget. Create the Pruner with "
                             f"num_samples={numbered} (keep the key table, delete the store), or build an index "
                             "(build_index) to know the count before training")


def worker_weights(store_path: str | None, epoch: int, fresh_start: bool, finished: int | None,
                   workers: int) -> EpochWeights:
    """The weights a DataLoader worker reads: always from the shared store file (a forked copy of an
    in-memory store would be a snapshot that silently goes stale in persistent workers), under the
    epoch of the store's stamp, so persistent workers follow `set_epoch` and a resume made in the
    training process. Warns when a fresh pass reads a selection that was already read whole."""
    if store_path is None:
        raise ValueError("DataLoader workers cannot see an in-memory store: create the Pruner with "
                         "store_path= so its keep flags are shared through a memory-mapped file")
    store = ScoreStore.open(store_path, readonly=True)
    stamp = store.epoch_stamp()
    if stamp is None:
        raise ValueError(f"no epoch is selected in the store '{store_path}': call stream.set_epoch(epoch) "
                         "(or pruner.select(epoch)) in the training process before iterating")
    if stamp == epoch and fresh_start and (finished == stamp or passes_done(store_path, stamp) >= workers):
        warnings.warn(f"epoch {stamp} is read a second time, with the same selection: the store holds no newer "
                      f"epoch. To train the next one, call stream.set_epoch({stamp + 1}) first", stacklevel=4)
    return EpochWeights(stamp, store=store)
