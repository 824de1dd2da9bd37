"""How the two-tower's user tower reads the last-N clicks: one vector from a padded, ordered history.

The history is the item embeddings `e_1..e_N` of the last clicks, most recent first, padded with
index 0 at the end (`mask` marks the real ones). Three readers, chosen by `train --history-encoder`:

- `mean`: the masked mean, order-free (the default; no parameters).
- `gru`: a GRU over the clicks oldest to newest (padding zeroed and put first, so the last step is
  the newest click); the final hidden state.
- `attention`: attention pooling with a learned query over the embeddings plus a position
  embedding of each click's recency, `a = softmax_mask(q · tanh(W (e_n + p_n)) / √d)`, `Σ a_n e_n`.

A user without history gets zeros from every reader, as from the mean.

References
----------
B. Hidasi, A. Karatzoglou, L. Baltrunas, D. Tikk. "Session-based Recommendations with Recurrent
Neural Networks." ICLR 2016 (GRU over a click sequence).
Z. Yang, D. Yang, C. Dyer, X. He, A. Smola, E. Hovy. "Hierarchical Attention Networks for Document
Classification." NAACL 2016 (attention pooling with a learned context vector).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recsys_spark.catalog import HISTORY_ENCODERS

from .base import masked_mean


class MeanHistory(nn.Module):
    """The masked mean of the history's embeddings."""

    def forward(self, emb: Tensor, mask: Tensor) -> Tensor:
        """Parameters: `emb` (batch, N, d), `mask` (batch, N) bool. Returns (batch, d)."""
        return masked_mean(emb, mask)


class GruHistory(nn.Module):
    """The last hidden state of a GRU run over the clicks from oldest to newest."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, dim, batch_first=True)

    def forward(self, emb: Tensor, mask: Tensor) -> Tensor:
        """Parameters: `emb` (batch, N, d), `mask` (batch, N) bool. Returns (batch, d)."""
        # Most recent first with padding last; flipped, the padding (zeroed) leads and the newest ends.
        steps = torch.flip(emb * mask.unsqueeze(-1).to(emb.dtype), [1])
        _, last = self.gru(steps)
        return torch.where(mask.any(1, keepdim=True), last[0], torch.zeros_like(last[0]))


class AttentionHistory(nn.Module):
    """Attention pooling: a learned query scores each click (embedding + recency position)."""

    def __init__(self, dim: int, length: int, std: float) -> None:
        super().__init__()
        self.position = nn.Embedding(length, dim)
        nn.init.normal_(self.position.weight, std=std)
        self.key = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.randn(dim) * std)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, emb: Tensor, mask: Tensor) -> Tensor:
        """Parameters: `emb` (batch, N, d), `mask` (batch, N) bool. Returns (batch, d)."""
        n = emb.shape[1]
        keys = torch.tanh(self.key(emb + self.position(torch.arange(n, device=emb.device))[None]))
        scores = (keys @ self.query) * self.scale
        scores = scores.masked_fill(~mask, -1e9)
        weights = torch.softmax(scores, dim=1) * mask.to(emb.dtype)  # all-masked rows: zeros
        return (weights.unsqueeze(-1) * emb).sum(1)


def history_encoder(kind: str, dim: int, length: int, std: float) -> nn.Module:
    """The reader named `kind` (one of `HISTORY_ENCODERS`) for `dim`-wide embeddings of `length` clicks.

    Parameters
    ----------
    kind : str
        `mean`, `gru` or `attention`.
    dim : int
        Item embedding width d.
    length : int
        History length N (positions of the attention reader).
    std : float
        Init std of the attention reader's position embeddings and query.

    Returns
    -------
    torch.nn.Module
        `forward(emb (batch, N, d), mask (batch, N)) -> (batch, d)`.
    """
    if kind == "mean":
        return MeanHistory()
    if kind == "gru":
        return GruHistory(dim)
    if kind == "attention":
        return AttentionHistory(dim, length, std)
    raise ValueError(f"unknown history encoder {kind!r}; known {HISTORY_ENCODERS}")
