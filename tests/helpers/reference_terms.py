"""The per-sample terms `Pruner.loss` records, in float64 numpy, from their definitions:

- prediction entropy H(softmax(z)), divided by log C when normalised;
- the mutual-information share KL(softmax(z) || p_bar) with p_bar the running mean prediction:
  p_bar starts uniform and each batch moves it to decay * p_bar + (1 - decay) * mean softmax;
- SimCLR's NT-Xent per sample (the mean of its two anchors' cross-entropies over the other 2B-1
  embeddings, cosine similarity / temperature), the entropy of those rows / log(2B-1), and the
  InfoNCE bound (log K - loss) / log K clipped to [0, 1];
- CLIP's symmetric InfoNCE per pair (image->texts, text->images), the entropy of both rows /
  log(candidates), and the same bound;
- the store's running loss mean and variance (exponentially weighted, West 1979).
"""
from __future__ import annotations

import math

import numpy as np


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def entropy(logits: np.ndarray, normalize: bool = True) -> np.ndarray:
    logp = log_softmax(logits.astype(np.float64))
    h = -(np.exp(logp) * logp).sum(axis=1)
    c = logits.shape[1]
    return h / math.log(c) if normalize and c > 1 else h


def mi(logits: np.ndarray, marginal: np.ndarray, normalize: bool = True) -> np.ndarray:
    logp = log_softmax(logits.astype(np.float64))
    kl = (np.exp(logp) * (logp - np.log(np.maximum(marginal, 1e-12)))).sum(axis=1)
    c = logits.shape[1]
    return kl / math.log(c) if normalize and c > 1 else kl


def marginal_after(batches, classes: int, decay: float = 0.99) -> list[np.ndarray]:
    """p_bar after each batch of logits."""
    p = np.full(classes, 1.0 / classes)
    out = []
    for z in batches:
        p = decay * p + (1 - decay) * np.exp(log_softmax(z.astype(np.float64))).mean(axis=0)
        out.append(p.copy())
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _row_terms(sim: np.ndarray, positive: np.ndarray):
    """(cross-entropy of each row's positive, entropy of each row) of softmax rows over `sim`
    (-inf entries excluded)."""
    logp = log_softmax(sim)
    p = np.exp(logp)
    ent = -np.where(np.isinf(sim), 0.0, p * logp).sum(axis=1)
    return -logp[np.arange(len(sim)), positive], ent


def contrastive(z1: np.ndarray, z2: np.ndarray, temperature: float, normalize_entropy: bool = True):
    """(loss, memory, mi) per sample of a SimCLR batch."""
    b = len(z1)
    z = _unit(np.concatenate([z1, z2]))
    sim = z @ z.T / temperature
    np.fill_diagonal(sim, -np.inf)
    positive = (np.arange(2 * b) + b) % (2 * b)
    ce, ent = _row_terms(sim, positive)
    loss = 0.5 * (ce[:b] + ce[b:])
    k = math.log(2 * b - 1)
    ent = ent / k if normalize_entropy else ent
    return loss, 0.5 * (ent[:b] + ent[b:]), np.clip((k - loss) / k, 0.0, 1.0)


def clip(img: np.ndarray, txt: np.ndarray, scale: float, all_img=None, all_txt=None, offset: int = 0):
    """(loss, memory, mi) per pair of a CLIP batch, candidates `all_*` (default: the batch)."""
    all_img = img if all_img is None else all_img
    all_txt = txt if all_txt is None else all_txt
    i, t, ai, at = _unit(img), _unit(txt), _unit(all_img), _unit(all_txt)
    positive = np.arange(len(img)) + offset
    ce_i, ent_i = _row_terms(scale * i @ at.T, positive)
    ce_t, ent_t = _row_terms(scale * t @ ai.T, positive)
    loss = 0.5 * (ce_i + ce_t)
    k = math.log(len(all_img))
    return loss, 0.5 * (ent_i + ent_t) / k, np.clip((k - loss) / k, 0.0, 1.0)


def running_moments(mean: float, var: float, x: float, decay: float):
    """The running loss mean and variance after one more value x (NaN mean: the first)."""
    if math.isnan(mean):
        return x, 0.0
    d = x - mean
    alpha = 1.0 - decay
    return mean + alpha * d, decay * (var + alpha * d * d)
