"""How the ranker reads the history against the candidate: one interest vector per (user, candidate).

`h_1..h_N` are the item representations of the last clicks (most recent first, padding last,
`mask` marks the real ones), `t` the candidate's. An all-padding history gives zeros in every reader.

- `MeanInterest` (archs fm, wide_deep, deepfm): the masked mean of h, candidate-blind.
- `DinInterest` (din, dcn_v2): `a_n = softmax_mask(MLP([h_n, t, h_n − t, h_n ⊙ t]))`, `Σ a_n h_n`.
- `DienInterest` (dien): interest extraction `z_n = GRU(h)` over the clicks oldest to newest, then
  interest evolution by an AUGRU whose update gate is scaled by the DIN attention of each z_n to t:
  `u'_n = a_n u_n`, `s_n = (1 − u'_n) ⊙ s_{n−1} + u'_n ⊙ s̃_n`; the last state. (DIEN's auxiliary
  next-click loss is left out: the click labels are the only supervision.)

References
----------
G. Zhou et al. "Deep Interest Network for Click-Through Rate Prediction." KDD 2018 (DIN).
G. Zhou, N. Mou, Y. Fan, Q. Pi, W. Bian, C. Zhou, X. Zhu, K. Gai. "Deep Interest Evolution Network
for Click-Through Rate Prediction." AAAI 2019 (DIEN, AUGRU).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import masked_mean, mlp


def din_features(h: Tensor, t: Tensor) -> Tensor:
    """DIN's attention input `[h_n, t, h_n − t, h_n ⊙ t]`: `(batch, N, 4D)` from h `(batch, N, D)`, t `(batch, D)`."""
    t = t.unsqueeze(1).expand_as(h)
    return torch.cat([h, t, h - t, h * t], dim=-1)


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the real positions of `scores` `(batch, N)`: exactly 0 on padding and all-padding rows."""
    return torch.softmax(scores.masked_fill(~mask, -1e9), dim=1) * mask.to(scores.dtype)


class MeanInterest(nn.Module):
    """The masked mean of the history (no parameters)."""

    def forward(self, h: Tensor, t: Tensor, mask: Tensor) -> Tensor:
        """`h` (batch, N, D), `t` (batch, D), `mask` (batch, N) -> (batch, D)."""
        return masked_mean(h, mask)


class DinInterest(nn.Module):
    """DIN: the history weighted by an MLP's attention to the candidate."""

    def __init__(self, dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.attn = mlp(4 * dim, hidden, 1)

    def forward(self, h: Tensor, t: Tensor, mask: Tensor) -> Tensor:
        """`h` (batch, N, D), `t` (batch, D), `mask` (batch, N) -> (batch, D)."""
        h = h.masked_fill(~mask.unsqueeze(-1), 0.0)
        weights = masked_softmax(self.attn(din_features(h, t)).squeeze(-1), mask)
        return (weights.unsqueeze(-1) * h).sum(1)


class DienInterest(nn.Module):
    """DIEN: a GRU extracts interests from the clicks, an attention-gated GRU (AUGRU) evolves them."""

    def __init__(self, dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.extract = nn.GRU(dim, dim, batch_first=True)
        self.attn = mlp(4 * dim, hidden, 1)
        self.gates = nn.Linear(2 * dim, 2 * dim)  # update and reset gates from [z_n, s_{n-1}]
        self.candidate = nn.Linear(2 * dim, dim)  # s̃_n from [z_n, r ⊙ s_{n-1}]

    def forward(self, h: Tensor, t: Tensor, mask: Tensor) -> Tensor:
        """`h` (batch, N, D), `t` (batch, D), `mask` (batch, N) -> (batch, D)."""
        h = h.masked_fill(~mask.unsqueeze(-1), 0.0)
        # Oldest to newest; padding (zeros, weight 0 below) comes first and leaves the state at zero.
        steps, valid = torch.flip(h, [1]), torch.flip(mask, [1])
        z, _ = self.extract(steps)
        z = z * valid.unsqueeze(-1).to(z.dtype)
        a = masked_softmax(self.attn(din_features(z, t)).squeeze(-1), valid)  # (batch, N)
        s = torch.zeros_like(t)
        for n in range(z.shape[1]):
            zn = z[:, n]
            gates = torch.sigmoid(self.gates(torch.cat([zn, s], dim=1)))
            update, reset = gates.chunk(2, dim=1)
            proposal = torch.tanh(self.candidate(torch.cat([zn, reset * s], dim=1)))
            update = a[:, n : n + 1] * update
            s = (1.0 - update) * s + update * proposal
        return s


def interest_reader(kind: str, dim: int, hidden: tuple[int, ...]) -> nn.Module:
    """`mean`, `din` or `dien` for item representations of width `dim` (attention MLP `hidden`).

    Parameters
    ----------
    kind : str
        Reader name.
    dim : int
        Item representation width D.
    hidden : tuple of int
        Hidden widths of the attention MLP.

    Returns
    -------
    torch.nn.Module
        `forward(h (batch, N, D), t (batch, D), mask (batch, N)) -> (batch, D)`.
    """
    if kind == "mean":
        return MeanInterest()
    if kind == "din":
        return DinInterest(dim, hidden)
    if kind == "dien":
        return DienInterest(dim, hidden)
    raise ValueError(f"unknown interest reader {kind!r}")
