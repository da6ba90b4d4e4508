"""The per-sample terms against their float64 definitions (reference_terms.py): what the score
functions return and what `Pruner.loss` records in the store, over hypothesis-drawn batches (sizes,
class counts, logit scales up to 1e3, temperatures, gathered candidates)."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference_terms as ref
from emp_data import Pruner
from emp_data import clip_scores, contrastive_scores, prediction_entropy, prediction_mi

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
SCALES = st.sampled_from([1e-3, 0.1, 1.0, 10.0, 100.0, 1000.0])


def close(got, want, what, rtol=1e-4, atol=1e-4):
    got = got.detach().double().numpy() if isinstance(got, torch.Tensor) else np.asarray(got, np.float64)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def normal(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


@SETTINGS
@given(st.integers(1, 33), st.integers(1, 50), SCALES, st.integers(0, 2**16), st.booleans())
def test_entropy_and_mi_match_their_definitions(batch, classes, scale, seed, normalize):
    z = normal((batch, classes), seed, scale)
    close(prediction_entropy(torch.from_numpy(z), normalize=normalize), ref.entropy(z, normalize), "entropy")
    marginal = np.random.default_rng(seed + 1).dirichlet(np.ones(classes)).astype(np.float32)
    close(prediction_mi(torch.from_numpy(z), torch.from_numpy(marginal), normalize=normalize),
          ref.mi(z, marginal.astype(np.float64), normalize), "mi", atol=1e-4 * max(1.0, scale))


@SETTINGS
@given(st.integers(2, 24), st.integers(1, 16), st.sampled_from([0.05, 0.1, 0.5, 1.0, 5.0]), st.integers(0, 2**16),
       st.booleans())
def test_contrastive_terms_match_their_definitions(batch, dim, temperature, seed, normalize):
    z1, z2 = normal((batch, dim), seed), normal((batch, dim), seed + 1)
    out = contrastive_scores(torch.from_numpy(z1), torch.from_numpy(z2), temperature, normalize_entropy=normalize)
    loss, memory, mi = ref.contrastive(z1, z2, temperature, normalize)
    tol = 1e-4 / min(temperature, 1.0)
    close(out.loss, loss, "contrastive loss", atol=tol)
    close(out.memory, memory, "contrastive memory", atol=tol)
    close(out.mi, mi, "contrastive mi", atol=tol)


@SETTINGS
@given(st.integers(2, 24), st.integers(1, 16), st.sampled_from([1.0, 14.3, 100.0]), st.integers(0, 2**16),
       st.integers(1, 3))
def test_clip_terms_match_their_definitions_with_gathered_candidates(batch, dim, scale, seed, world):
    total = batch * world
    img, txt = normal((total, dim), seed), normal((total, dim), seed + 1)
    rank = seed % world
    rows = slice(rank * batch, (rank + 1) * batch)
    kwargs = {} if world == 1 else {"all_image_emb": torch.from_numpy(img), "all_text_emb": torch.from_numpy(txt),
                                    "offset": rank * batch}
    out = clip_scores(torch.from_numpy(img[rows]), torch.from_numpy(txt[rows]), scale, **kwargs)
    loss, memory, mi = ref.clip(img[rows], txt[rows], scale, img, txt, rank * batch)
    tol = 1e-5 * scale + 1e-5
    close(out.loss, loss, "clip loss", atol=tol)
    close(out.memory, memory, "clip memory", atol=tol)
    close(out.mi, mi, "clip mi", atol=tol)


@pytest.mark.parametrize("memory", ["entropy", "mi"])
def test_pruner_loss_records_the_reference_terms_and_moments(memory):
    """Several batches with repeated ids (within and across batches): the store holds each sample's
    last loss and memory term and running moments over every value it saw."""
    n, classes, decay = 30, 7, 0.8
    rng = np.random.default_rng(0)
    pruner = Pruner(n, policy="emp", memory=memory, prune_ratio=0.5, seed=0, ema_decay=decay)
    pruner.select(0)
    batches = [(rng.integers(0, n, 12), normal((12, classes), b, 3.0), rng.gamma(2, 1, 12).astype(np.float32))
               for b in range(6)]
    marginals = ref.marginal_after([z for _, z, _ in batches], classes)
    want_loss, want_mem = np.full(n, np.nan), np.full(n, np.nan)
    want_mean, want_var = np.full(n, np.nan), np.full(n, np.nan)
    for (ids, z, loss), marginal in zip(batches, marginals):
        pruner.loss(torch.from_numpy(loss), torch.from_numpy(ids), logits=torch.from_numpy(z))
        mem = ref.entropy(z) if memory == "entropy" else ref.mi(z, marginal)
        for i, x, m in zip(ids, loss.astype(np.float64), mem):
            want_loss[i], want_mem[i] = x, m
            want_mean[i], want_var[i] = ref.running_moments(want_mean[i], want_var[i], x, decay)
    seen = ~np.isnan(want_loss)
    assert 0 < seen.sum() < n and np.isnan(pruner.store.loss[~seen]).all()
    close(pruner.store.loss[seen], want_loss[seen], "loss", rtol=1e-6, atol=0)
    close(pruner.store.memory[seen], want_mem[seen], f"memory ({memory})", atol=1e-5)
    close(pruner.store.loss_mean[seen], want_mean[seen], "loss_mean", rtol=1e-5, atol=1e-6)
    close(pruner.store.loss_var[seen], want_var[seen], "loss_var", rtol=1e-4, atol=1e-5)
    if memory == "mi":
        close(pruner._marginal.value, marginals[-1], "p_bar", rtol=1e-5, atol=1e-7)
