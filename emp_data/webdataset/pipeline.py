"""PrunedPipeline: a webdataset pipeline over a pruned stream that resumes by seeking.

`wds.DataPipeline` has no state of its own, so torchdata's StatefulDataLoader resumes it by
replaying: every sample before the checkpoint is read and decoded again. A PrunedPipeline's state is
its stream's position, so a resume restarts the stream at the next sample and the stages after it
run only on what is left.

    import webdataset as wds
    from torchdata.stateful_dataloader import StatefulDataLoader
    from emp_data import Pruner
    from emp_data.webdataset import PrunedIterableDataset, PrunedPipeline, build_index

    index = build_index("data/train-{00000..00099}.tar", out="data/index.empidx")
    pruner = Pruner(index.num_samples, policy="emp", prune_ratio=0.7, epochs=E, store_path="data/scores.emp")
    stream = PrunedIterableDataset("data/train-{00000..00099}.tar", pruner, index="data/index.empidx")
    pipeline = PrunedPipeline(stream, wds.decode(), wds.to_tuple("__id__", "npy", "cls"))
    loader = StatefulDataLoader(pipeline, batch_size=64, num_workers=2)
    for epoch in range(E):
        pipeline.set_epoch(epoch)
        for ids, x, y in loader:
            logits = model(x)
            pruner.loss(F.cross_entropy(logits, y, reduction="none"), ids, logits=logits).backward()
            state = loader.state_dict()     # saved with pruner.save(...), it resumes at the next batch

An error a stage raises about a sample names its key and shard and goes to the stream's `handler=`.

That is exact because webdataset stages are lazy generators: when a stage hands on a sample, the
stream has produced exactly the samples that went into it and into everything before it (a filter
drops samples for good, `wds.batched` groups them). A stage that holds samples back in a buffer
(`wds.shuffle`) would lose them on a resume, so it is refused: shuffle shards (the stream does, per
epoch) or samples in your own stateful code.
"""
from __future__ import annotations

import webdataset as wds

from .stream import PrunedIterableDataset

# Stages that hold samples back in a buffer: the stream's position runs ahead of what came out.
_BUFFERING = {"_shuffle"}


class PrunedPipeline(wds.DataPipeline):
    """``wds.DataPipeline(stream, *stages)`` whose ``state_dict`` is the stream's, for exact resume
    that seeks under ``StatefulDataLoader`` (each DataLoader worker's copy is saved and restored).
    ``set_epoch`` is the stream's."""

    def __init__(self, stream: PrunedIterableDataset, *stages):
        if not isinstance(stream, PrunedIterableDataset):
            raise TypeError(f"PrunedPipeline starts with a PrunedIterableDataset, got {type(stream).__name__}")
        for position, stage in enumerate(stages, start=1):
            name = getattr(getattr(stage, "f", None), "__name__", "")
            if name in _BUFFERING:
                raise ValueError(f"stage {position} ({name.lstrip('_')}) holds samples in a buffer, which a resume "
                                 "would lose; the stream already shuffles shards each epoch")
        super().__init__(stream, *stages)
        self.stream = stream

    def iterator1(self):
        """One pass. An error a stage raises about a sample (a missing field in `to_tuple`, a bad
        image in `decode`) names that sample's key and shard, and goes to the stream's `handler=` as
        a corrupt shard does: True skips the sample and goes on, False ends the pass."""
        state = {"last": None, "stream_failed": False}
        samples = self._tracked(iter(self.stream), state)   # held here: it outlives a failed stage
        failed_on = None
        while True:
            source = samples
            for stage in self.pipeline[1:]:
                source = self.invoke(stage, source)
            try:
                yield from source
                return
            except Exception as exc:  # noqa: BLE001 - a stage's error about a sample, named and handled below
                last = state["last"]
                if state["stream_failed"] or last is None or last is failed_on:
                    # The stream's own errors are named and handled already; a stage that fails again
                    # without taking a new sample is not about a sample, and skipping would never end.
                    raise
                failed_on = last
                err = ValueError(f"sample '{last.get('__key__')}' of shard '{last.get('__url__')}': "
                                 f"{type(exc).__name__}: {exc}")
                if self.stream.handler is None:
                    raise err from exc
                if not self.stream.handler(err):
                    return

    @staticmethod
    def _tracked(samples, state):
        while True:
            try:
                sample = next(samples)
            except StopIteration:
                return
            except Exception:
                state["stream_failed"] = True
                raise
            state["last"] = sample
            yield sample

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)

    def repeat(self, *args, **kwargs):
        raise TypeError("PrunedPipeline runs one epoch per pass: call set_epoch before each")

    def with_epoch(self, *args, **kwargs):
        raise TypeError("PrunedPipeline runs one epoch per pass (its length is the epoch's kept samples): call "
                        "set_epoch before each")
