"""How the ranker reads the history against the candidate: one interest vector per (user, candidate).

`h_1..h_N` are the item representations of the last clicks (most recent first, padding last,
`mask` marks the real ones), `t` the candidate's. An all-padding history gives zeros in every reader.

- `MeanInterest` (archs fm, wide_deep, deepfm): the masked mean of h, candidate-blind.
- `DinInterest` (din, dcn_v2): `a_n = softmax_mask(MLP([h_n, t, h_n − t, h_n ⊙ t]))`, `Σ a_n h_n`.
- `DienInterest` (dien): interest extraction `z_n = GRU(h)` over the clicks oldest to newest, then
  interest evolution by an AUGRU whose update gate is scaled by the DIN attention of each z_n to t:
  `u'_n = a_n u_n`, `s_n = (1 − u'_n) ⊙ s_{n−1} + u'_n ⊙ s̃_n`; the last state. In training the
  extracted interests also get DIEN's auxiliary next-click loss (`DienInterest.auxiliary_loss`):
  each z_n must tell the next click h_{n+1} from a uniformly drawn item ĥ_{n+1},
  `L_aux = −mean_rows Σ_n [log σ(z_n · h_{n+1}) + log(1 − σ(z_n · ĥ_{n+1}))]` over each row's
  consecutive pairs of real clicks, added to the click loss with weight α (`Ranker(aux_weight=α)`, 1
  as in the paper).

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


def oldest_first(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's real steps (a prefix of `x`, most recent first) reversed in place, padding behind.

    Parameters
    ----------
    x : Tensor
        `(batch, N, D)`, real steps first, most recent first.
    mask : Tensor
        `(batch, N)` bool, True on a prefix of each row.

    Returns
    -------
    tuple of Tensor
        `(batch, N, D)` oldest to newest then zeros, and its `(batch, N)` mask.
    """
    n = x.shape[1]
    lengths = mask.sum(1, keepdim=True)
    position = torch.arange(n, device=x.device).unsqueeze(0)
    valid = position < lengths
    order = torch.where(valid, lengths - 1 - position, position)
    steps = x.gather(1, order.unsqueeze(-1).expand_as(x)).masked_fill(~valid.unsqueeze(-1), 0.0)
    return steps, valid


class DienInterest(nn.Module):
    """DIEN: a GRU extracts interests from the clicks, an attention-gated GRU (AUGRU) evolves them."""

    def __init__(self, dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.extract = nn.GRU(dim, dim, batch_first=True)
        self.attn = mlp(4 * dim, hidden, 1)
        self.gates = nn.Linear(2 * dim, 2 * dim)  # update and reset gates from [z_n, s_{n-1}]
        self.candidate = nn.Linear(2 * dim, dim)  # s̃_n from [z_n, r ⊙ s_{n-1}]

    def _extracted(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Padding goes behind the clicks, not before them: a GRU's state moves even on zero inputs
        # (its biases), so padding run first would make the interests depend on the history's length.
        steps, valid = oldest_first(h, mask)
        z, _ = self.extract(steps)
        return steps, valid, z * valid.unsqueeze(-1).to(z.dtype)

    def forward(self, h: Tensor, t: Tensor, mask: Tensor) -> Tensor:
        """`h` (batch, N, D), `t` (batch, D), `mask` (batch, N) -> (batch, D)."""
        _, valid, z = self._extracted(h, mask)
        a = masked_softmax(self.attn(din_features(z, t)).squeeze(-1), valid)  # (batch, N)
        s = torch.zeros_like(t)
        for n in range(z.shape[1]):
            zn = z[:, n]
            gates = torch.sigmoid(self.gates(torch.cat([zn, s], dim=1)))
            update, reset = gates.chunk(2, dim=1)
            proposal = torch.tanh(self.candidate(torch.cat([zn, reset * s], dim=1)))
            update = a[:, n : n + 1] * update  # 0 on padding: the state stays
            s = (1.0 - update) * s + update * proposal
        return s

    @torch.jit.unused
    def auxiliary_loss(self, h: Tensor, mask: Tensor, negatives: Tensor) -> Tensor:
        """DIEN's next-click loss of the extracted interests.

        Parameters
        ----------
        h : Tensor
            `(batch, N, D)` history representations, most recent first (as for `forward`).
        mask : Tensor
            `(batch, N)` bool, the real clicks.
        negatives : Tensor
            `(batch, N, D)` representations of drawn items, aligned with `h`.

        Returns
        -------
        Tensor
            Scalar: Σ over each row's consecutive pairs of real clicks (oldest to newest) of
            −log σ(z_n · h_{n+1}) − log(1 − σ(z_n · ĥ_{n+1})), averaged over the rows (DIEN's eq. 5;
            per row, not per pair, so equal splits of a batch average to the whole batch's loss).
        """
        steps, valid, z = self._extracted(h, mask)
        drawn, _ = oldest_first(negatives, mask)
        pairs = (valid[:, :-1] & valid[:, 1:]).to(z.dtype)  # z_n predicts step n + 1
        positive = (z[:, :-1] * steps[:, 1:]).sum(-1)
        negative = (z[:, :-1] * drawn[:, 1:]).sum(-1)
        per_pair = nn.functional.softplus(-positive) + nn.functional.softplus(negative)
        return (per_pair * pairs).sum(1).mean()


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
