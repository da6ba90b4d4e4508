"""Per-sample score terms computed from a batch's model outputs (vectorised torch).

The score-function contract: a memory term is a (B,) float tensor, one value per sample of the
batch, larger meaning "keep this sample more"; it is detached (it steers selection, never the
gradient). `Pruner.loss(per_sample_loss, ids, memory=...)` takes any such term:
`prediction_entropy` or `prediction_mi` (supervised), `contrastive_scores(...).memory` or
`.mi` (SSL), `clip_scores(...)` (image-text), or your own.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch


def _check_matrix(t, name: str, shape: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D {shape}, got shape {tuple(t.shape)}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {t.dtype}")


def prediction_entropy(logits: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """EMP's supervised memory term: entropy of softmax(logits) per row, detached.

    With ``normalize=True`` it is divided by log(C), so it lies in [0, 1] for any class count C
    and beta means the same across tasks.
    """
    _check_matrix(logits, "logits", "(batch, classes)")
    with torch.no_grad():
        logp = torch.log_softmax(logits.detach().float(), dim=1)
        ent = -(logp.exp() * logp).sum(dim=1)
        classes = logits.shape[1]
        if normalize and classes > 1:
            ent = ent / math.log(classes)
    return ent


def prediction_mi(logits: torch.Tensor, marginal: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """EMP's mutual-information memory term: each row's share of I(X; Y_hat), detached.

    I(X; Y_hat) = H(Y_hat) - H(Y_hat | X) = E_x KL(p(y|x) || p_bar), with p_bar the marginal
    prediction; sample i's share is KL(softmax(logits_i) || marginal). It is large for a prediction
    the model has committed to (far from what it predicts on average) and small for a generic one.
    With ``normalize=True`` it is divided by log(C): log(C) is its value for a one-hot prediction
    against a uniform marginal, so it is comparable to the normalised entropy (a skewed marginal can
    take it above 1). ``marginal`` is a (C,) probability vector (see `MarginalPrediction`).
    """
    _check_matrix(logits, "logits", "(batch, classes)")
    if not isinstance(marginal, torch.Tensor) or marginal.shape != (logits.shape[1],):
        raise ValueError(f"marginal must be a ({logits.shape[1]},) tensor, got "
                         f"{tuple(marginal.shape) if isinstance(marginal, torch.Tensor) else type(marginal).__name__}")
    with torch.no_grad():
        logp = torch.log_softmax(logits.detach().float(), dim=1)
        log_marginal = marginal.detach().float().to(logp.device).clamp_min(1e-12).log()
        kl = (logp.exp() * (logp - log_marginal)).sum(dim=1)
        classes = logits.shape[1]
        if normalize and classes > 1:
            kl = kl / math.log(classes)
    return kl


class MarginalPrediction:
    """The running mean prediction p_bar that `prediction_mi` measures against: an exponential mean
    of each batch's mean softmax (``decay`` per batch, so roughly the last 1 / (1 - decay)
    batches), started uniform. It stays on the logits' device and is updated with tensor ops only,
    so it costs no host synchronisation."""

    def __init__(self, decay: float = 0.99):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.value: torch.Tensor | None = None

    def update(self, logits: torch.Tensor) -> torch.Tensor:
        """Folds this batch into p_bar and returns p_bar (a (C,) float32 tensor on logits' device)."""
        _check_matrix(logits, "logits", "(batch, classes)")
        with torch.no_grad():
            mean = torch.softmax(logits.detach().float(), dim=1).mean(dim=0)
            if self.value is None or self.value.shape != mean.shape:
                self.value = torch.full_like(mean, 1.0 / mean.shape[0])
            self.value = self.value.to(mean.device)
            self.value.mul_(self.decay).add_(mean, alpha=1.0 - self.decay)
        return self.value

    def state(self) -> list | None:
        return None if self.value is None else self.value.detach().cpu().double().tolist()

    def load(self, values) -> None:
        self.value = None if values is None else torch.tensor(values, dtype=torch.float32)


class ContrastiveScores(NamedTuple):
    """Per-sample outputs of :func:`contrastive_scores` (all shape (B,))."""

    loss: torch.Tensor     # NT-Xent loss per sample, mean of its two anchors; keeps the graph
    memory: torch.Tensor   # entropy of the anchors' softmax rows, mean of the two views; detached
    mi: torch.Tensor       # the InfoNCE bound on I(view1; view2) per sample, / log(candidates); detached


def contrastive_scores(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5,
                       normalize_entropy: bool = True) -> ContrastiveScores:
    """EMP's self-supervised score terms for a SimCLR-style (NT-Xent / InfoNCE) batch.

    z1, z2: (B, D) embeddings of the two views of the same B samples (row i of each is sample i).
    The 2B embeddings are L2-normalised; every anchor takes a softmax over its cosine similarities
    (divided by ``temperature``) to the other 2B-1 embeddings, and its positive is the other view
    of the same sample. Sample i's ``loss`` is the mean of its two anchors' cross-entropies, so
    ``loss.mean()`` equals SimCLR's NT-Xent loss; pass ``loss`` and ``memory`` to
    ``Pruner.loss(loss, ids, memory=memory)``.

    ``memory`` is the entropy of those same softmax rows (mean over the two views), the SSL memory
    term: high when an anchor cannot tell its sample apart from the rest of the batch. With
    ``normalize_entropy`` it is divided by log(2B-1), the largest entropy a row can have, so it lies
    in [0, 1] like the supervised term. Everything is computed with log-softmax (log-sum-exp), so
    small temperatures do not overflow.

    ``mi`` is the mutual-information reading: the InfoNCE bound I(view1; view2) >= log(K) - L_NCE
    (van den Oord et al. 2018) taken per sample, (log(2B-1) - loss) / log(2B-1), clipped to [0, 1]
    (K = 2B-1 candidates). Within a batch it is an affine function of the loss, so it can change a
    selection only through its sign and weight against the loss (see README).
    """
    _check_matrix(z1, "z1", "(batch, dim)")
    _check_matrix(z2, "z2", "(batch, dim)")
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.device != z2.device:
        raise ValueError(f"z1 and z2 are on different devices ({z1.device} and {z2.device})")
    batch = z1.shape[0]
    if batch < 2:
        raise ValueError(f"a contrastive batch needs at least 2 samples (negatives), got {batch}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")

    # Low-precision embeddings (fp16/bf16 autocast) are promoted: the logits reach 1/temperature.
    dtype = torch.promote_types(z1.dtype, torch.float32)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]).to(dtype), dim=1)
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    # An anchor never competes with itself: -inf gives it probability exactly 0.
    logp = torch.log_softmax(logits.masked_fill(self_mask, float("-inf")), dim=1)
    positive = torch.arange(2 * batch, device=z.device).roll(batch)   # i <-> i + B
    anchor_loss = -logp.gather(1, positive[:, None]).squeeze(1)
    loss = 0.5 * (anchor_loss[:batch] + anchor_loss[batch:])
    with torch.no_grad():
        plogp = torch.where(self_mask, torch.zeros((), dtype=dtype, device=z.device), logp.exp() * logp)
        entropy = -plogp.sum(dim=1)
        if normalize_entropy:
            entropy = entropy / math.log(2 * batch - 1)
        memory = 0.5 * (entropy[:batch] + entropy[batch:])
        log_candidates = math.log(2 * batch - 1)
        mi = ((log_candidates - loss.detach()) / log_candidates).clamp(0.0, 1.0)
    return ContrastiveScores(loss, memory, mi)


class ClipScores(NamedTuple):
    """Per-sample outputs of :func:`clip_scores` (all shape (B,), this rank's samples)."""

    loss: torch.Tensor     # mean of the image->text and text->image InfoNCE terms; keeps the graph
    memory: torch.Tensor   # entropy of the two softmax rows, mean of the directions, / log(candidates); detached
    mi: torch.Tensor       # the InfoNCE bound per sample, (log(candidates) - loss) / log(candidates), in [0, 1]


def clip_scores(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale, *,
                all_image_emb: torch.Tensor | None = None, all_text_emb: torch.Tensor | None = None,
                offset: int = 0) -> ClipScores:
    """EMP's score terms for a CLIP batch (symmetric InfoNCE over image-text pairs), per sample.

    image_emb, text_emb: (B, D) embeddings of this rank's B pairs (row i of each is pair i); they are
    L2-normalised here (a no-op for features that already are). logit_scale: the temperature's
    inverse as CLIP learns it (open_clip passes ``model.logit_scale.exp()``), a positive float or a
    0-d tensor, which keeps its gradient. Sample i's image is scored against every candidate text and
    its text against every candidate image; ``loss`` is the mean of the two cross-entropies, so with
    no gathering ``loss.mean()`` is the standard CLIP loss.

    Under DDP with open_clip's ``gather_with_grad``, pass the gathered embeddings of every rank as
    ``all_image_emb`` / ``all_text_emb`` (B_total x D) and this rank's first row in them as ``offset``:
    the candidates are then all B_total pairs, and the values returned are still this rank's B
    samples (the rows of open_clip's ``local_loss=True`` form; their mean over all ranks is its
    global loss). ``memory`` is the entropy of each softmax row (image->texts and text->images, mean
    of the two) divided by log(B_total), as in `contrastive_scores`: high when the pair cannot be
    told apart from the others. ``mi`` is the per-sample InfoNCE bound on I(image; text).
    """
    _check_matrix(image_emb, "image_emb", "(batch, dim)")
    _check_matrix(text_emb, "text_emb", "(batch, dim)")
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb and text_emb must have the same shape, got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}")
    if image_emb.device != text_emb.device:
        raise ValueError(f"image_emb and text_emb are on different devices ({image_emb.device} and {text_emb.device})")
    if (all_image_emb is None) != (all_text_emb is None):
        raise ValueError("give both all_image_emb and all_text_emb (the gathered candidates), or neither")
    batch = image_emb.shape[0]
    if all_image_emb is None:
        all_image_emb, all_text_emb = image_emb, text_emb
        if offset != 0:
            raise ValueError("offset is this rank's first row in the gathered embeddings: give them too")
    else:
        _check_matrix(all_image_emb, "all_image_emb", "(total, dim)")
        _check_matrix(all_text_emb, "all_text_emb", "(total, dim)")
        if all_image_emb.shape != all_text_emb.shape or all_image_emb.shape[1] != image_emb.shape[1]:
            raise ValueError(f"the gathered embeddings must both be (total, {image_emb.shape[1]}), got "
                             f"{tuple(all_image_emb.shape)} and {tuple(all_text_emb.shape)}")
        if not (isinstance(offset, int) and 0 <= offset <= all_image_emb.shape[0] - batch):
            raise ValueError(f"offset must be an int in [0, {all_image_emb.shape[0] - batch}] (this rank's first row "
                             f"among {all_image_emb.shape[0]}), got {offset!r}")
    total = all_image_emb.shape[0]
    if total < 2:
        raise ValueError(f"a CLIP batch needs at least 2 pairs (negatives), got {total}: drop partial batches "
                         "(wds.batched(batch_size, partial=False) in the pipeline, or DataLoader(drop_last=True))")
    if isinstance(logit_scale, torch.Tensor):
        # Its value is not checked: reading a device tensor would synchronise every training step.
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}")
    elif not (isinstance(logit_scale, (int, float)) and math.isfinite(logit_scale) and logit_scale > 0):
        raise ValueError(f"logit_scale must be a positive finite number or 0-d tensor, got {logit_scale!r}")

    dtype = torch.promote_types(image_emb.dtype, torch.float32)
    norm = torch.nn.functional.normalize
    img, txt = norm(image_emb.to(dtype), dim=1), norm(text_emb.to(dtype), dim=1)
    all_img, all_txt = norm(all_image_emb.to(dtype), dim=1), norm(all_text_emb.to(dtype), dim=1)
    scale = logit_scale.to(dtype=dtype, device=img.device).reshape(()) if isinstance(logit_scale, torch.Tensor) \
        else float(logit_scale)
    positive = torch.arange(batch, device=img.device) + offset
    logp_i2t = torch.log_softmax(scale * img @ all_txt.T, dim=1)      # (B, total)
    logp_t2i = torch.log_softmax(scale * txt @ all_img.T, dim=1)
    rows = torch.arange(batch, device=img.device)
    loss = -0.5 * (logp_i2t[rows, positive] + logp_t2i[rows, positive])
    with torch.no_grad():
        log_candidates = math.log(total)
        entropy = -0.5 * ((logp_i2t.exp() * logp_i2t).sum(1) + (logp_t2i.exp() * logp_t2i).sum(1))
        memory = entropy / log_candidates
        mi = ((log_candidates - loss.detach()) / log_candidates).clamp(0.0, 1.0)
    return ClipScores(loss, memory, mi)
