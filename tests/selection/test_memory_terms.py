"""EMP's memory terms and score weights: the mutual-information term KL(p(y|x) || p_bar) against a
naive reference, its running marginal, the contrastive InfoNCE bound, loss_weight = 0 (the memory
term alone ranks samples) and a negative beta."""
import math

import numpy as np
import pytest
import torch

from emp_data import Pruner
from emp_data import MarginalPrediction, contrastive_scores, prediction_entropy, prediction_mi


def test_prediction_mi_matches_a_naive_kl():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g) * 3
    marginal = torch.softmax(torch.randn(5, generator=g), 0)
    got = prediction_mi(logits, marginal, normalize=False)
    for i in range(6):
        p = torch.softmax(logits[i].double(), 0)
        want = float((p * (p.log() - marginal.double().log())).sum())
        assert float(got[i]) == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert torch.allclose(prediction_mi(logits, marginal), got / math.log(5))
    # Against a uniform marginal it is log(C) minus the entropy: the two readings rank oppositely.
    uniform = torch.full((5,), 0.2)
    assert torch.allclose(prediction_mi(logits, uniform) + prediction_entropy(logits), torch.ones(6), atol=1e-5)
    assert not prediction_mi(logits.requires_grad_(), uniform).requires_grad
    with pytest.raises(ValueError, match=r"marginal must be a \(5,\) tensor"):
        prediction_mi(logits, torch.ones(4))


def test_marginal_prediction_is_a_running_mean_of_batch_predictions():
    m = MarginalPrediction(decay=0.5)
    a, b = torch.tensor([[10.0, 0.0]]), torch.tensor([[0.0, 10.0]])
    first = m.update(a).clone()
    assert torch.allclose(first, 0.5 * torch.tensor([0.5, 0.5]) + 0.5 * torch.softmax(a[0], 0))
    second = m.update(b)
    assert torch.allclose(second, 0.5 * first + 0.5 * torch.softmax(b[0], 0))
    restored = MarginalPrediction(decay=0.5)
    restored.load(m.state())
    assert torch.equal(restored.value, m.value)
    with pytest.raises(ValueError, match="decay"):
        MarginalPrediction(decay=1.0)


def test_pruner_records_the_mi_term_and_checkpoints_its_marginal(tmp_path):
    g = torch.Generator().manual_seed(1)
    pruner = Pruner(40, policy="emp", memory="mi", prune_ratio=0.5, seed=0)
    pruner.select(0)
    logits = torch.randn(40, 4, generator=g)
    pruner.loss(torch.rand(40, generator=g), torch.arange(40), logits=logits)
    marginal = 0.99 * torch.full((4,), 0.25) + 0.01 * torch.softmax(logits, 1).mean(0)
    want = prediction_mi(logits, marginal)
    assert np.allclose(pruner.store.memory, want.numpy(), atol=1e-6)
    pruner.save(tmp_path / "p.emp")
    restored = Pruner.load(tmp_path / "p.emp")
    assert torch.allclose(restored._marginal.value, pruner._marginal.value)
    entropy = Pruner(40, policy="emp", prune_ratio=0.5)
    entropy.select(0)
    entropy.loss(torch.rand(40), torch.arange(40), logits=logits)
    assert np.allclose(entropy.store.memory, prediction_entropy(logits).numpy())
    with pytest.raises(ValueError, match="memory must be one of"):
        Pruner(10, policy="emp", memory="kl")


def test_loss_weight_zero_ranks_by_the_memory_term_alone():
    n = 1000
    rng = np.random.default_rng(0)
    loss, mem = rng.gamma(2, 1, n).astype(np.float32), rng.random(n).astype(np.float32)
    pruner = Pruner(n, policy="emp", mode="topk", prune_ratio=0.8, beta=1.0, loss_weight=0.0)
    pruner.store.update(np.arange(n), loss, mem)
    ids, _ = pruner.select(0)
    assert set(ids.tolist()) == set(np.argsort(-mem)[:200].tolist())
    assert np.allclose(pruner.scores(), mem)
    # Soft rule: the mean threshold on the memory term, exactly as infobatch on a loss equal to it.
    soft = Pruner(n, policy="emp", prune_ratio=0.8, beta=2.0, loss_weight=0.0, exact_budget=True, seed=3)
    soft.store.update(np.arange(n), loss, mem)
    ref = Pruner(n, policy="infobatch", prune_ratio=0.8, exact_budget=True, seed=3)
    ref.store.update(np.arange(n), 2.0 * mem)
    a, b = soft.select(0), ref.select(0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_a_negative_beta_prefers_a_low_memory_term():
    n = 500
    mem = np.linspace(0, 1, n, dtype=np.float32)
    pruner = Pruner(n, policy="emp", mode="topk", prune_ratio=0.9, beta=-1.0, loss_weight=0.0)
    pruner.store.update(np.arange(n), np.ones(n, np.float32), mem)
    assert set(pruner.select(0)[0].tolist()) == set(range(50))
    with pytest.raises(ValueError, match="loss_weight must be"):
        Pruner(10, policy="emp", loss_weight=-1.0)


def test_contrastive_mi_is_the_per_sample_infonce_bound():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    out = contrastive_scores(z1, z2, 0.5)
    k = math.log(31)
    assert torch.allclose(out.mi, ((k - out.loss.detach()) / k).clamp(0, 1))
    assert not out.mi.requires_grad and float(out.mi.min()) >= 0 and float(out.mi.max()) <= 1
    aligned = contrastive_scores(z1, z1 + 1e-3 * z2, 0.1)             # views that agree: a high bound
    assert float(aligned.mi.mean()) > float(out.mi.mean())
