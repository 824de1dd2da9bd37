"""The ranker's task heads (`train --tasks-arch`): a hidden vector in, one logit per task out.

Each head also takes the crossing's per-task bias (`train/interactions.py`: the linear and FM terms),
added to its towers' logits (for ESMM to the CTR and CVR logits, before they combine).

- `mmoe`: shared experts E_1..E_m; task k mixes them with its own softmax gate,
  `y_k = tower_k(Σ_e g_k(x)_e E_e(x))`.
- `ple`: one CGC level of PLE: task k's gate mixes its own experts and the shared ones,
  `y_k = tower_k(Σ_{e ∈ E_k ∪ S} g_k(x)_e e(x))`.
- `esmm`: two tasks, a click and a conversion (like, purchase) over the impression space: towers give
  a CTR logit a and a CVR logit b (conversion given click); the outputs are a and the logit of
  `pCTCVR = σ(a) · σ(b)`, so the loss `BCE(pCTR, click) + BCE(pCTCVR, click ∧ conversion)` trains the
  CVR tower on every impression, not only on clicked ones.

References
----------
J. Ma et al. "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts."
KDD 2018 (MMoE).
H. Tang, J. Liu, M. Zhao, X. Gong. "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
(MTL) Model for Personalized Recommendations." RecSys 2020 (CGC, PLE).
X. Ma, L. Zhao, G. Huang, Z. Wang, Z. Hu, X. Zhu, K. Gai. "Entire Space Multi-Task Model: An
Effective Approach for Estimating Post-Click Conversion Rate." SIGIR 2018 (ESMM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys_spark.catalog import TASK_ARCHS

from .base import mlp


class MMoE(nn.Module):
    """Shared expert MLPs, one softmax gate over the experts per task, one tower (-> 1 logit) per task.

    Parameters
    ----------
    in_dim : int
        Input width.
    n_tasks, n_experts : int
        Tasks (gates and towers) and shared experts.
    expert_hidden : tuple of int
        Hidden widths of each expert MLP.
    expert_dim : int
        Output width of each expert.
    tower_hidden : tuple of int
        Hidden widths of each task tower.
    """

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        n_experts: int,
        expert_hidden: tuple[int, ...],
        expert_dim: int,
        tower_hidden: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.n_tasks, self.n_experts = n_tasks, n_experts
        self.experts = nn.ModuleList(mlp(in_dim, (*expert_hidden, expert_dim)) for _ in range(n_experts))
        self.gates = nn.Linear(in_dim, n_tasks * n_experts)  # n_tasks gates, computed in one matmul
        self.towers = nn.ModuleList(mlp(expert_dim, tower_hidden, 1) for _ in range(n_tasks))

    def gate_weights(self, x: Tensor) -> Tensor:
        """`(batch, in_dim)` -> `(batch, n_tasks, n_experts)`, each task's row summing to 1."""
        return torch.softmax(self.gates(x).view(-1, self.n_tasks, self.n_experts), dim=-1)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """`x` (batch, in_dim), `bias` (batch, n_tasks) -> `(batch, n_tasks)` logits."""
        outs: list[Tensor] = []
        for expert in self.experts:
            outs.append(expert(x))
        mixed = torch.bmm(self.gate_weights(x), torch.stack(outs, dim=1))  # [B, n_tasks, expert_dim]
        logits: list[Tensor] = []
        for k, tower in enumerate(self.towers):
            logits.append(tower(mixed[:, k]))
        return torch.cat(logits, dim=1) + bias


class PLE(nn.Module):
    """One CGC level: per task, a gate over that task's own experts and the shared experts.

    Parameters
    ----------
    in_dim, n_tasks : int
        Input width and tasks.
    n_experts : int
        Experts per task and shared experts (each).
    expert_hidden, expert_dim, tower_hidden
        As for `MMoE`.
    """

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        n_experts: int,
        expert_hidden: tuple[int, ...],
        expert_dim: int,
        tower_hidden: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.n_tasks, self.per_gate = n_tasks, 2 * n_experts
        # Experts 0..n-1 are shared, then n per task: task k uses [shared, its own n].
        self.experts = nn.ModuleList(
            mlp(in_dim, (*expert_hidden, expert_dim)) for _ in range((1 + n_tasks) * n_experts)
        )
        self.n_experts = n_experts
        self.gates = nn.Linear(in_dim, n_tasks * self.per_gate)
        self.towers = nn.ModuleList(mlp(expert_dim, tower_hidden, 1) for _ in range(n_tasks))

    def gate_weights(self, x: Tensor) -> Tensor:
        """`(batch, in_dim)` -> `(batch, n_tasks, 2 · n_experts)`: weights over [shared, own]."""
        return torch.softmax(self.gates(x).view(-1, self.n_tasks, self.per_gate), dim=-1)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """`x` (batch, in_dim), `bias` (batch, n_tasks) -> `(batch, n_tasks)` logits."""
        outs: list[Tensor] = []
        for expert in self.experts:
            outs.append(expert(x))
        every = torch.stack(outs, dim=1)  # (B, (1 + n_tasks) n, expert_dim)
        gates = self.gate_weights(x)
        n = self.n_experts
        logits: list[Tensor] = []
        for k, tower in enumerate(self.towers):
            own = torch.cat([every[:, :n], every[:, n * (k + 1) : n * (k + 2)]], dim=1)
            logits.append(tower(torch.bmm(gates[:, k : k + 1], own)[:, 0]))
        return torch.cat(logits, dim=1) + bias


def ctcvr_logit(ctr_logit: Tensor, cvr_logit: Tensor) -> Tensor:
    """logit(σ(a) · σ(b)) computed in log space: log p − log(1 − p), p never rounded to 0 or 1."""
    log_p = (F.logsigmoid(ctr_logit) + F.logsigmoid(cvr_logit)).clamp(max=-1e-7)
    return log_p - torch.log(-torch.expm1(log_p))


class ESMM(nn.Module):
    """CTR and CVR towers on a shared input; outputs the CTR logit and the CTCVR logit.

    Parameters
    ----------
    in_dim : int
        Input width.
    tower_hidden : tuple of int
        Hidden widths of both towers (each an MLP with the expert widths first).
    expert_hidden : tuple of int
        Extra hidden widths in front of each tower.
    """

    def __init__(self, in_dim: int, expert_hidden: tuple[int, ...], tower_hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.ctr = mlp(in_dim, (*expert_hidden, *tower_hidden), 1)
        self.cvr = mlp(in_dim, (*expert_hidden, *tower_hidden), 1)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """`x` (batch, in_dim), `bias` (batch, 2) -> `(batch, 2)`: CTR logit, CTCVR logit."""
        a, b = self.ctr(x) + bias[:, :1], self.cvr(x) + bias[:, 1:]
        return torch.cat([a, ctcvr_logit(a, b)], dim=1)


def task_heads(
    kind: str,
    in_dim: int,
    n_tasks: int,
    n_experts: int,
    expert_hidden: tuple[int, ...],
    expert_dim: int,
    tower_hidden: tuple[int, ...],
) -> nn.Module:
    """The heads named `kind` (one of `TASK_ARCHS`); `esmm` needs exactly two tasks.

    Parameters
    ----------
    kind : str
        `mmoe`, `ple` or `esmm`.
    in_dim, n_tasks, n_experts, expert_hidden, expert_dim, tower_hidden
        Sizes (see `MMoE`).

    Returns
    -------
    torch.nn.Module
        `forward(x (batch, in_dim), bias (batch, n_tasks)) -> (batch, n_tasks)` logits.
    """
    if kind == "mmoe":
        return MMoE(in_dim, n_tasks, n_experts, expert_hidden, expert_dim, tower_hidden)
    if kind == "ple":
        return PLE(in_dim, n_tasks, n_experts, expert_hidden, expert_dim, tower_hidden)
    if kind == "esmm":
        if n_tasks != 2:
            raise ValueError(f"esmm needs two tasks (click, then a conversion), got {n_tasks}")
        return ESMM(in_dim, expert_hidden, tower_hidden)
    raise ValueError(f"unknown tasks arch {kind!r}; known {TASK_ARCHS}")
