"""How the ranker crosses its features (`train --arch`): a hidden vector for the task heads, and a
per-task bias added to their logits (the linear and factorization-machine terms).

Inputs: `x` `(batch, in_dim)`, every feature side by side, and `fields` `(batch, F, d)`, the F
embedding fields (user, item, category, author, gender, age, region and the interest's two halves).

| arch | hidden | bias per task k |
|---|---|---|
| `fm` | the bi-interaction `Σ_{i<j} v_i ⊙ v_j` (d wide) | `w_k · x + b_k + Σ_{i<j} <v_i, v_j>` |
| `wide_deep` | `deep(x)` | `w_k · x + b_k` (the wide part) |
| `deepfm` | `deep(x)` | `w_k · x + b_k + Σ_{i<j} <v_i, v_j>` |
| `dcn_v2` | `[cross(x), deep(x)]`, cross `x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l` | 0 |
| `din`, `dien` | `deep(x)` (their interest readers differ) | 0 |

with `Σ_{i<j} v_i ⊙ v_j = ((Σ_i v_i)² − Σ_i v_i²) / 2` (elementwise), whose sum over d is the FM term.

References
----------
S. Rendle. "Factorization Machines." ICDM 2010 (FM).
X. He, T.-S. Chua. "Neural Factorization Machines for Sparse Predictive Analytics." SIGIR 2017
(bi-interaction pooling).
H.-T. Cheng et al. "Wide & Deep Learning for Recommender Systems." DLRS 2016.
H. Guo, R. Tang, Y. Ye, Z. Li, X. He. "DeepFM: A Factorization-Machine based Neural Network for CTR
Prediction." IJCAI 2017.
R. Wang et al. "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale Learning to
Rank Systems." WWW 2021.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import mlp

ARCH_INTEREST = {
    "fm": "mean",
    "wide_deep": "mean",
    "deepfm": "mean",
    "dcn_v2": "din",
    "din": "din",
    "dien": "dien",
}  # the history reader of each arch (train/interest.py)


def bi_interaction(fields: Tensor) -> Tensor:
    """`Σ_{i<j} v_i ⊙ v_j` over the fields `(batch, F, d)` -> `(batch, d)`."""
    total = fields.sum(1)
    return 0.5 * (total * total - (fields * fields).sum(1))


class CrossNetwork(nn.Module):
    """DCN-v2 full-rank cross layers: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l.

    Parameters
    ----------
    dim : int
        Input width (every layer keeps it).
    layers : int
        Number of cross layers.
    """

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, x0: Tensor) -> Tensor:
        """`(batch, dim)` -> `(batch, dim)`."""
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class Interaction(nn.Module):
    """One arch's crossing: `forward(x, fields) -> (hidden (batch, out_dim), bias (batch, n_tasks))`.

    Parameters
    ----------
    arch : str
        One of `ARCH_INTEREST`.
    in_dim : int
        Width of `x`.
    field_dim : int
        Width d of each field.
    n_tasks : int
        Tasks (bias columns).
    deep : tuple of int
        Deep MLP widths.
    cross_layers : int
        DCN-v2 cross layers.
    """

    def __init__(
        self, arch: str, in_dim: int, field_dim: int, n_tasks: int, deep: tuple[int, ...], cross_layers: int
    ) -> None:
        super().__init__()
        if arch not in ARCH_INTEREST:
            raise ValueError(f"unknown ranker arch {arch!r}; known {tuple(ARCH_INTEREST)}")
        self.n_tasks = n_tasks
        self.use_fm = arch in ("fm", "deepfm")
        self.use_linear = arch in ("fm", "wide_deep", "deepfm")
        self.use_cross = arch == "dcn_v2"
        self.use_deep = arch != "fm"
        # Unused parts stay empty modules, so TorchScript compiles every branch.
        self.linear = nn.Linear(in_dim, n_tasks) if self.use_linear else nn.Identity()
        self.cross = CrossNetwork(in_dim, cross_layers if self.use_cross else 0)
        self.deep = mlp(in_dim, deep if self.use_deep else ())
        deep_out = (deep[-1] if deep else in_dim) if self.use_deep else 0
        self.out_dim = (in_dim if self.use_cross else 0) + deep_out + (field_dim if arch == "fm" else 0)

    def forward(self, x: Tensor, fields: Tensor) -> tuple[Tensor, Tensor]:
        """`x` (batch, in_dim), `fields` (batch, F, d) -> hidden (batch, out_dim), bias (batch, n_tasks)."""
        parts: list[Tensor] = []
        if self.use_cross:
            parts.append(self.cross(x))
        if self.use_deep:
            parts.append(self.deep(x))
        bias = x.new_zeros((x.shape[0], self.n_tasks))
        if self.use_fm:
            pairs = bi_interaction(fields)
            bias = bias + pairs.sum(1, keepdim=True)
            if not self.use_deep:
                parts.append(pairs)
        if self.use_linear:
            bias = bias + self.linear(x)
        return torch.cat(parts, dim=1), bias
