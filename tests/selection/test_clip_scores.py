"""clip_scores against a naive float64 reference and the standard CLIP loss, locally and with the
candidates gathered from several ranks (open_clip's gather_with_grad)."""
import math

import pytest
import torch
import torch.nn.functional as F

from emp_data import Pruner
from emp_data import clip_scores


def naive(img, txt, scale, all_img=None, all_txt=None, offset=0):
    """Per-sample loops in float64, straight from the symmetric InfoNCE definition."""
    all_img = img if all_img is None else all_img
    all_txt = txt if all_txt is None else all_txt
    n = lambda v: v.double() / v.double().norm()
    loss, ent = [], []
    for i in range(img.shape[0]):
        parts, ents = [], []
        for q, cands in ((img[i], all_txt), (txt[i], all_img)):
            s = torch.stack([scale * (n(q) @ n(c)) for c in cands])
            p = torch.exp(s - s.max()) / torch.exp(s - s.max()).sum()
            parts.append(-math.log(p[offset + i]))
            ents.append(float(-(p * p.log()).sum()))
        loss.append(sum(parts) / 2)
        ent.append(sum(ents) / 2 / math.log(all_img.shape[0]))
    return torch.tensor(loss, dtype=torch.float64), torch.tensor(ent, dtype=torch.float64)


def batch(b=10, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)


@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_matches_the_naive_reference_and_the_standard_clip_loss(scale):
    img, txt = batch()
    out = clip_scores(img, txt, scale)
    ref_loss, ref_mem = naive(img, txt, scale)
    assert torch.allclose(out.loss.double(), ref_loss, rtol=1e-5, atol=1e-5)
    assert torch.allclose(out.memory.double(), ref_mem, rtol=1e-5, atol=1e-6)
    # open_clip's ClipLoss: the mean of the two cross-entropies over the logits matrix.
    logits = scale * F.normalize(img, dim=1) @ F.normalize(txt, dim=1).T
    labels = torch.arange(10)
    standard = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert float(out.loss.mean()) == pytest.approx(float(standard), rel=1e-5)
    assert torch.allclose(out.mi, ((math.log(10) - out.loss.detach()) / math.log(10)).clamp(0, 1))


def test_gathered_candidates_give_this_ranks_rows_of_the_global_loss():
    world, b = 3, 8
    img, txt = batch(world * b, 6, seed=1)
    scale = torch.tensor(20.0)
    parts = [clip_scores(img[r * b:(r + 1) * b], txt[r * b:(r + 1) * b], scale, all_image_emb=img,
                         all_text_emb=txt, offset=r * b) for r in range(world)]
    whole = clip_scores(img, txt, scale)
    assert torch.allclose(torch.cat([p.loss for p in parts]), whole.loss, atol=1e-6)
    assert torch.allclose(torch.cat([p.memory for p in parts]), whole.memory, atol=1e-6)
    ref_loss, _ = naive(img[b:2 * b], txt[b:2 * b], 20.0, img, txt, offset=b)
    assert torch.allclose(parts[1].loss.double(), ref_loss, rtol=1e-5, atol=1e-5)
    # The mean over every rank's samples is the global CLIP loss on all world * b pairs.
    logits = 20.0 * F.normalize(img, dim=1) @ F.normalize(txt, dim=1).T
    labels = torch.arange(world * b)
    standard = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert float(torch.cat([p.loss for p in parts]).mean()) == pytest.approx(float(standard), rel=1e-5)


def test_loss_keeps_the_graph_to_embeddings_and_logit_scale_memory_is_detached():
    img, txt = batch()
    img.requires_grad_()
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    out = clip_scores(img, txt, log_scale.exp())
    out.loss.mean().backward()
    assert img.grad is not None and log_scale.grad is not None and float(log_scale.grad.abs()) > 0
    assert not out.memory.requires_grad and not out.mi.requires_grad
    assert float(out.memory.min()) >= 0 and float(out.memory.max()) <= 1 + 1e-6


def test_half_precision_and_extreme_scales_stay_finite():
    img, txt = batch()
    for dtype in (torch.float16, torch.bfloat16):
        out = clip_scores(img.to(dtype), txt.to(dtype), 100.0)
        assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss).all()
    assert torch.isfinite(clip_scores(img * 1e4, txt, 1e4).loss).all()


def test_bad_input_is_named():
    img, txt = batch()
    cases = [
        (lambda: clip_scores(img, txt[:5], 1.0), ValueError, "same shape"),
        (lambda: clip_scores(img, txt, 0.0), ValueError, "logit_scale must be a positive"),
        (lambda: clip_scores(img, txt, torch.tensor([1.0, 2.0])), ValueError, "logit_scale must be a scalar"),
        (lambda: clip_scores(img, txt, 1.0, all_image_emb=img), ValueError, "give both"),
        (lambda: clip_scores(img, txt, 1.0, offset=2), ValueError, "offset is this rank's first row"),
        (lambda: clip_scores(img, txt, 1.0, all_image_emb=img, all_text_emb=txt, offset=1), ValueError,
         r"offset must be an int in \[0, 0\]"),
        (lambda: clip_scores(img[:1], txt[:1], 1.0), ValueError, r"at least 2 pairs .*partial=False"),
        (lambda: clip_scores(img.long(), txt.long(), 1.0), TypeError, "floating point"),
    ]
    for call, err, match in cases:
        with pytest.raises(err, match=match):
            call()


def test_feeds_the_pruner_memory_term():
    img, txt = batch(12)
    pruner = Pruner(12, policy="emp", prune_ratio=0.5, beta=1.0)
    pruner.select(0)
    out = clip_scores(img, txt, 10.0)
    pruner.loss(out.loss, torch.arange(12), memory=out.memory)
    assert torch.allclose(torch.from_numpy(pruner.store.memory), out.memory)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu():
    img, txt = batch()
    cpu = clip_scores(img, txt, 30.0)
    gpu = clip_scores(img.cuda(), txt.cuda(), torch.tensor(30.0, device="cuda"))
    assert torch.allclose(gpu.loss.cpu(), cpu.loss, atol=1e-5) and torch.allclose(gpu.memory.cpu(), cpu.memory, atol=1e-5)
