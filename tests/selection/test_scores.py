"""Contrastive (SSL) score terms against a naive per-anchor reference."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emp_data import Pruner
from emp_data import contrastive_scores


def naive_reference(z1, z2, temperature):
    """Per-anchor loops in float64, straight from the NT-Xent definition."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n, b = z.shape[0], z1.shape[0]
    loss, ent = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for a in range(n):
        others = [j for j in range(n) if j != a]
        sims = torch.stack([z[a] @ z[j] for j in others]) / temperature
        p = torch.exp(sims) / torch.exp(sims).sum()
        positive = others.index((a + b) % n)
        loss[a] = -math.log(p[positive])
        ent[a] = -(p * p.log()).sum()
    return 0.5 * (loss[:b] + loss[b:]), 0.5 * (ent[:b] + ent[b:])


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_matches_naive_reference(temperature):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g)
    ref_loss, ref_ent = naive_reference(z1, z2, temperature)
    out = contrastive_scores(z1, z2, temperature, normalize_entropy=False)
    assert torch.allclose(out.loss.double(), ref_loss, rtol=1e-5, atol=1e-5)
    assert torch.allclose(out.memory.double(), ref_ent, rtol=1e-5, atol=1e-5)
    normalised = contrastive_scores(z1, z2, temperature).memory
    assert torch.allclose(normalised.double(), ref_ent / math.log(23), rtol=1e-5, atol=1e-6)
    assert float(normalised.min()) >= 0 and float(normalised.max()) <= 1 + 1e-6


def test_mean_loss_is_simclr_nt_xent():
    """The usual SimCLR formulation: cross-entropy over the 2B x 2B logits with the diagonal removed."""
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / 0.2).fill_diagonal_(-1e9)
    target = torch.arange(64).roll(32)
    expected = F.cross_entropy(logits, target)
    assert contrastive_scores(z1, z2, 0.2).loss.mean().item() == pytest.approx(expected.item(), rel=1e-5)


def test_entropy_extremes():
    # All embeddings identical: every row is uniform over 2B-1 others, normalised entropy 1,
    # and the loss is log(2B-1).
    z = torch.ones(5, 3)
    out = contrastive_scores(z, z.clone(), 0.5)
    assert torch.allclose(out.memory, torch.ones(5), atol=1e-6)
    assert torch.allclose(out.loss, torch.full((5,), math.log(9)), atol=1e-5)
    # Orthogonal samples whose two views agree, tiny temperature: each row puts all its mass on
    # the positive, so loss and entropy both go to 0.
    eye = torch.eye(4)
    sharp = contrastive_scores(eye, eye.clone(), 0.01)
    assert float(sharp.loss.max()) < 1e-6 and float(sharp.memory.max()) < 1e-6


def test_stable_at_small_temperature_and_large_norms():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(64, 32, generator=g) * 1e4
    z2 = z1 + torch.randn(64, 32, generator=g) * 1e3
    out = contrastive_scores(z1, z2, temperature=1e-3)
    assert torch.isfinite(out.loss).all() and torch.isfinite(out.memory).all()
    ref_loss, _ = naive_reference(z1[:8], z2[:8], 0.05)
    # Near-zero losses here: fp32 resolves them to about 1e-6 absolute.
    assert torch.allclose(contrastive_scores(z1[:8], z2[:8], 0.05).loss.double(), ref_loss, rtol=1e-4, atol=2e-6)


def test_loss_carries_gradient_memory_is_detached():
    z1 = torch.randn(6, 4, requires_grad=True)
    z2 = torch.randn(6, 4, requires_grad=True)
    out = contrastive_scores(z1, z2)
    assert out.loss.requires_grad and not out.memory.requires_grad
    out.loss.sum().backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


def test_half_precision_inputs_are_promoted():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    full = contrastive_scores(z1, z2, 0.1)
    half = contrastive_scores(z1.bfloat16(), z2.bfloat16(), 0.1)
    assert half.loss.dtype == torch.float32
    assert torch.allclose(half.loss, full.loss, atol=0.1)


def test_bad_input_is_named():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        contrastive_scores(z, torch.randn(5, 3))
    with pytest.raises(ValueError, match="2-D"):
        contrastive_scores(torch.randn(4), torch.randn(4))
    with pytest.raises(TypeError, match="floating point"):
        contrastive_scores(torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2"):
        contrastive_scores(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="temperature"):
        contrastive_scores(z, z, temperature=0.0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        contrastive_scores(np.zeros((4, 3)), z)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)
    cpu = contrastive_scores(z1, z2)
    gpu = contrastive_scores(z1.cuda(), z2.cuda())
    assert torch.allclose(gpu.loss.cpu(), cpu.loss, atol=1e-5)
    assert torch.allclose(gpu.memory.cpu(), cpu.memory, atol=1e-5)


def test_feeds_pruner_memory_term():
    """The SSL path through the same store: EMP's score is loss + beta * contrastive entropy."""
    g = torch.Generator().manual_seed(5)
    pruner = Pruner(100, policy="emp", prune_ratio=0.5, epochs=4, beta=2.0, loss_weight=1.0, seed=0)
    ids, _ = pruner.select(0)
    batch = torch.from_numpy(ids[:20])
    z1 = torch.randn(20, 8, generator=g, requires_grad=True)
    out = contrastive_scores(z1, z1.detach() + 0.1 * torch.randn(20, 8, generator=g))
    total = pruner.loss(out.loss, batch, memory=out.memory)
    total.backward()
    assert np.allclose(pruner.store.loss[ids[:20]], out.loss.detach().numpy(), atol=1e-6)
    assert np.allclose(pruner.store.memory[ids[:20]], out.memory.numpy(), atol=1e-6)
    scores = pruner.scores()[ids[:20]]
    assert np.allclose(scores, out.loss.detach().numpy() + 2.0 * out.memory.numpy(), atol=1e-5)
