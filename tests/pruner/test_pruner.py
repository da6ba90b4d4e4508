import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emp_data.pruner import checkpoint
from emp_data import Pruner
from emp_data import prediction_entropy


def test_prediction_entropy_matches_definition():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    p = torch.softmax(logits, 1)
    expected = -(p * p.log()).sum(1) / math.log(4)
    assert torch.allclose(prediction_entropy(logits), expected, atol=1e-6)
    assert prediction_entropy(logits)[0] == pytest.approx(1.0)
    assert prediction_entropy(logits, normalize=False)[0] == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="2-D"):
        prediction_entropy(torch.zeros(3))


def test_loss_records_scores_and_applies_weights():
    torch.manual_seed(0)
    pruner = Pruner(100, policy="emp", prune_ratio=0.5, beta=1.0)
    pruner.store.update(np.arange(100), np.linspace(0, 2, 100).astype(np.float32))
    ids, weights = pruner.select(0)
    batch = torch.from_numpy(ids[:16])
    logits = torch.randn(16, 5, requires_grad=True)
    target = torch.randint(0, 5, (16,))
    per_sample = F.cross_entropy(logits, target, reduction="none")
    out = pruner.loss(per_sample, batch, logits=logits)
    expected = (per_sample * torch.from_numpy(weights[:16])).mean()
    assert torch.allclose(out, expected)
    out.backward()
    assert logits.grad is not None
    assert np.allclose(pruner.store.loss[ids[:16]], per_sample.detach().numpy())
    assert np.allclose(pruner.store.memory[ids[:16]], prediction_entropy(logits).numpy(), atol=1e-6)


def test_emp_requires_memory_and_accepts_it_directly():
    pruner = Pruner(10, policy="emp")
    with pytest.raises(ValueError, match="needs the memory term: pass logits="):
        pruner.loss(torch.ones(2), [0, 1])
    pruner.loss(torch.ones(2), [0, 1], memory=torch.tensor([0.25, 0.5]))
    assert pruner.store.memory[:2].tolist() == [0.25, 0.5]
    Pruner(10, policy="infobatch").loss(torch.ones(2), [0, 1])   # no memory needed


def test_ids_outside_selection_get_weight_one():
    pruner = Pruner(10, policy="random", prune_ratio=0.5)
    ids, _ = pruner.select(0)
    pruned = np.setdiff1d(np.arange(10), ids)
    loss = pruner.loss(torch.full((len(pruned),), 2.0), torch.from_numpy(pruned))
    assert loss.item() == 2.0


@pytest.mark.parametrize("args,err,match", [
    ((torch.ones(2, 2), [0, 1]), ValueError, "per_sample_loss must be 1-D"),
    ((torch.ones(2), [0, 1, 2]), ValueError, "per_sample_loss has 2 entries but ids has 3"),
    ((torch.ones(2, dtype=torch.int64), [0, 1]), TypeError, "per_sample_loss must be floating point"),
    ((np.ones(2), [0, 1]), TypeError, "per_sample_loss must be a torch.Tensor"),
    ((torch.tensor([1.0, float("nan")]), [0, 1]), ValueError, "non-finite loss"),
    ((torch.ones(2), [0, 10]), ValueError, "id out of range"),
    ((torch.ones(2), torch.tensor([0.0, 1.0])), TypeError, "integer tensor"),
])
def test_loss_bad_input(args, err, match):
    with pytest.raises(err, match=match):
        Pruner(10, policy="infobatch").loss(*args)


def test_nonfinite_skip_mode_counts():
    pruner = Pruner(10, policy="infobatch", nonfinite="skip")
    pruner.loss(torch.tensor([1.0, float("inf"), 2.0]), [0, 1, 2])
    assert pruner.stats()["nonfinite_skipped"] == 1 and np.isnan(pruner.store.loss[1])


def _train(pruner, epochs, start=0, seed=0):
    """A fake training run: loss of id i at epoch e is a deterministic function."""
    seen = []
    for epoch in range(start, start + epochs):
        ids, _ = pruner.select(epoch)
        seen.append(ids.copy())
        for chunk in np.array_split(ids, 4):
            loss = torch.from_numpy(np.sin(chunk * 0.37 + epoch).astype(np.float32) ** 2 + 0.1)
            mem = torch.from_numpy(np.cos(chunk * 0.11).astype(np.float32) ** 2)
            pruner.loss(loss, chunk, memory=mem)
    return seen


@pytest.mark.parametrize("policy", ["infobatch", "emp", "ucb", "epsilon_greedy", "weighted"])
def test_resume_from_state_dict_and_file_is_bit_identical(policy, tmp_path):
    kwargs = dict(policy=policy, prune_ratio=0.6, epochs=10, seed=5)
    reference = Pruner(3000, **kwargs)
    full_run = _train(reference, 6)

    first = Pruner(3000, **kwargs)
    _train(first, 3)
    state = first.state_dict()
    first.save(tmp_path / "ckpt" / "pruner.emp")                 # its folder is created

    from_state = Pruner(3000, **kwargs)
    from_state.load_state_dict(state)
    from_file = Pruner.load(tmp_path / "ckpt" / "pruner.emp")
    for resumed in (from_state, from_file):
        rest = _train(resumed, 3, start=3)
        for a, b in zip(full_run[3:], rest):
            assert np.array_equal(a, b)
        assert np.array_equal(resumed.store.times_selected, reference.store.times_selected)
        assert resumed.stats()["sample_passes"] == reference.stats()["sample_passes"]


def test_state_and_file_errors(tmp_path):
    pruner = Pruner(100, policy="infobatch")
    with pytest.raises(ValueError, match="state is for 100 samples, this Pruner has 50"):
        Pruner(50).load_state_dict(pruner.state_dict())
    with pytest.raises(ValueError, match="not a Pruner state"):
        pruner.load_state_dict({"state_version": 99})
    pruner.store.save(tmp_path / "bare.emp")
    with pytest.raises(ValueError, match="without Pruner state"):
        Pruner.load(tmp_path / "bare.emp")
    meta = checkpoint.meta(pruner)
    meta["state_version"] = 2
    pruner.store.save(tmp_path / "newer.emp", metadata=json.dumps(meta).encode())
    with pytest.raises(ValueError, match="Pruner state version 2"):
        Pruner.load(tmp_path / "newer.emp")


def test_steps_per_epoch_and_mapped_store(tmp_path):
    pruner = Pruner(1000, policy="random", prune_ratio=0.7, store_path=tmp_path / "live.emp")
    pruner.select(0)
    assert pruner.steps_per_epoch(64) == math.ceil(300 / 64)
    assert pruner.steps_per_epoch(64, drop_last=True) == 300 // 64
    from emp_data import ScoreStore
    worker_view = ScoreStore.open(tmp_path / "live.emp", readonly=True)
    assert worker_view.keep.sum() == 300


def test_the_default_prune_ratio_means_what_it_says_and_stats_say_which_budget():
    """Pruner(N, prune_ratio=r) trains exactly round((1 - r) N) per pruned epoch (emp's exact budget),
    from the first epoch on; InfoBatch's soft rule, asked for by name, keeps more, and stats() says so."""
    rng = np.random.default_rng(0)
    n, r = 1000, 0.7
    default = Pruner(n, prune_ratio=r, epochs=8, seed=1)
    soft = Pruner(n, policy="infobatch", prune_ratio=r, epochs=8, seed=1)
    for epoch in range(3):
        for pruner in (default, soft):
            ids, _ = pruner.select(epoch)
            logits = torch.from_numpy(rng.normal(size=(len(ids), 5)).astype(np.float32))
            pruner.loss(torch.from_numpy(rng.gamma(2.0, 0.5, len(ids)).astype(np.float32)), ids, logits=logits)
        assert default.kept_count() == round((1 - r) * n)
        assert soft.kept_count() > round((1 - r) * n)
    assert default.stats()["budget"] == "exact" and soft.stats()["budget"] == "soft"
    assert default.stats()["effective_prune_ratio"] == pytest.approx(r, abs=1e-3)
    assert soft.stats()["effective_prune_ratio"] < r - 0.05
    assert Pruner(10, policy="full").stats()["budget"] == "full"
