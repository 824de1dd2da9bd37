"""Multi-task ranking model: a history reader, a feature crossing and task heads over shared embeddings.

Ranking scores a few hundred recalled candidates per request, so it can afford what recall cannot:
features of the (user, item) pair together. DIN weighs each history item by its relevance to the
candidate instead of averaging the history; the DCN-v2 cross network learns explicit feature crosses
next to a plain deep MLP; MMoE lets click and like share experts while each task gates them its own way,
so a sparse task (like) borrows from a dense one (click) without forcing one shared representation.
That default (`arch="dcn_v2"`, `tasks_arch="mmoe"`) is one point of a zoo behind two options: `arch`
picks the history reader and the crossing (fm, wide_deep, deepfm, dcn_v2, din, dien:
`train/interest.py`, `train/interactions.py`), `tasks_arch` the heads (mmoe, ple, esmm:
`train/multitask.py`); every combination trains, exports and serves the same way.

References
----------
G. Zhou, X. Zhu, C. Song, Y. Fan, H. Zhu, X. Ma, Y. Yan, J. Jin, H. Li, K. Gai. "Deep Interest
Network for Click-Through Rate Prediction." KDD 2018 (DIN).
R. Wang, R. Shivanna, D. Cheng, S. Jain, D. Lin, L. Hong, E. Chi. "DCN V2: Improved Deep & Cross
Network and Practical Lessons for Web-scale Learning to Rank Systems." WWW 2021 (DCN-v2).
J. Ma, Z. Zhao, X. Yi, J. Chen, L. Hong, E. Chi. "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts." KDD 2018 (MMoE).
"""

from __future__ import annotations

import math
from typing import IO

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import RecModel
from .features import PAIR_KEY, USER_KEYS, FeatureSizes
from .interactions import ARCH_INTEREST, CrossNetwork, Interaction
from .interest import DienInterest, interest_reader
from .multitask import MMoE, task_heads

__all__ = ["CrossNetwork", "MMoE", "Ranker"]
# Checkpoints saved before the zoo named the default's parts at the top level.
_LEGACY_PREFIXES = {"attn.": "interest.attn.", "cross.": "interaction.cross.", "deep.": "interaction.deep.",
                    "mmoe.": "heads."}  # fmt: skip


class Ranker(RecModel):
    """Logits for every task of (user, candidate item) pairs.

    DIN attention pools the history against the candidate, a DCN-v2 cross network and a deep MLP
    run side by side on all features, and MMoE gives each task its own mixture of shared experts.

    Parameters
    ----------
    sizes : FeatureSizes
        Vocabulary sizes and dense widths of the training store.
    emb_dim : int
        Width of every embedding (16).
    attn_hidden : tuple of int
        DIN attention MLP ((32,)).
    cross_layers : int
        DCN-v2 cross layers (2).
    deep : tuple of int
        MLP beside the cross network ((128, 64)).
    experts, expert_hidden, expert_dim, tower_hidden
        MMoE sizes (4, (64,), 32, (32,)).
    tasks : tuple of str
        Task names, non-empty and distinct (("click", "like")).
    emb_std : float
        Embedding init std (0.05).
    arch : str
        History reader and crossing: fm, wide_deep, deepfm, dcn_v2 (default), din, dien.
    tasks_arch : str
        Task heads: mmoe (default), ple, esmm (two tasks: click, then a conversion).
    negative_keep : float
        Share r of the all-negative rows the training store kept (1.0): `score_logits` adds log r, the
        logit form of the recalibration p = q / (q + (1 − q) / r), so every output is calibrated.
    """

    kind = "ranker"
    _VOCAB = (
        ("user_emb", "n_users"),
        ("item_emb", "n_items"),
        ("category_emb", "n_categories"),
        ("author_emb", "n_authors"),
        ("gender_emb", "n_genders"),
        ("age_emb", "n_ages"),
        ("region_emb", "n_regions"),
    )

    def __init__(
        self,
        sizes: FeatureSizes,
        *,
        emb_dim: int = 16,
        attn_hidden: tuple[int, ...] = (32,),
        cross_layers: int = 2,
        deep: tuple[int, ...] = (128, 64),
        experts: int = 4,
        expert_hidden: tuple[int, ...] = (64,),
        expert_dim: int = 32,
        tower_hidden: tuple[int, ...] = (32,),
        tasks: tuple[str, ...] = ("click", "like"),
        emb_std: float = 0.05,
        arch: str = "dcn_v2",
        tasks_arch: str = "mmoe",
        negative_keep: float = 1.0,
        aux_weight: float = 1.0,
    ) -> None:
        attn_hidden, deep, expert_hidden = tuple(attn_hidden), tuple(deep), tuple(expert_hidden)
        tower_hidden, tasks = tuple(tower_hidden), tuple(tasks)
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be non-empty and distinct: {tasks}")
        super().__init__(
            sizes,
            dict(
                emb_dim=emb_dim,
                attn_hidden=attn_hidden,
                cross_layers=cross_layers,
                deep=deep,
                experts=experts,
                expert_hidden=expert_hidden,
                expert_dim=expert_dim,
                tower_hidden=tower_hidden,
                tasks=tasks,
                emb_std=emb_std,
                arch=arch,
                tasks_arch=tasks_arch,
                negative_keep=negative_keep,
                aux_weight=aux_weight,
            ),
        )
        self.aux_weight = float(aux_weight)  # dien only: the weight α of its next-click loss
        if not 0 < negative_keep <= 1:
            raise ValueError(f"negative_keep must be in (0, 1], got {negative_keep}")
        self.log_keep = math.log(negative_keep)  # a plain float: the TorchScript export reads it
        if arch not in ARCH_INTEREST:
            raise ValueError(f"unknown ranker arch {arch!r}; known {tuple(ARCH_INTEREST)}")
        if tasks_arch == "esmm" and (len(tasks) != 2 or tasks[0] != "click"):
            raise ValueError(f"tasks_arch esmm needs the tasks (click, <conversion>), got {tasks}")
        s = sizes
        self.tasks = tasks
        for attr, field in self._VOCAB:
            setattr(self, attr, self._embedding(getattr(s, field), emb_dim))
        item_dim = 2 * emb_dim  # an item is its id and category embeddings, in history and as target
        self.interest = interest_reader(ARCH_INTEREST[arch], item_dim, attn_hidden)
        # A plain int, not `sizes`: the TorchScript export reads it.
        self.pair_dense_dim = int(s.pair_dense_dim)
        in_dim = 7 * emb_dim + s.user_dense_dim + s.item_dense_dim + s.pair_dense_dim + item_dim + 2
        self.interaction = Interaction(arch, in_dim, emb_dim, len(tasks), deep, cross_layers)
        self.heads = task_heads(
            tasks_arch, self.interaction.out_dim, len(tasks), experts, expert_hidden, expert_dim, tower_hidden
        )
        self._register_load_state_dict_pre_hook(_rename_legacy_keys)

    def _item_rep(self, idx: Tensor) -> Tensor:
        return torch.cat([self.item_emb(idx), self.category_emb(self.item_category[idx])], dim=-1)

    def _interest(self, hist: Tensor, target: Tensor) -> Tensor:
        """The arch's history reader (`train/interest.py`); all-padding history gives zeros."""
        return self.interest(self._item_rep(hist), target, hist != 0)

    def _affinity(self, hist: Tensor, item_idx: Tensor) -> Tensor:
        """Share of the (non-padding) history in the target's category and by its author: [B, 2].

        The explicit form of the user-category cross that the attention would otherwise have to
        discover from few examples; cheap, and exact for every history length.
        """
        mask = (hist != 0).to(self.item_dense.dtype)
        length = mask.sum(1).clamp_min(1.0)
        same_category = (self.item_category[hist] == self.item_category[item_idx].unsqueeze(1)).to(mask.dtype)
        same_author = (self.item_author[hist] == self.item_author[item_idx].unsqueeze(1)).to(mask.dtype)
        return torch.stack(
            [(same_category * mask).sum(1) / length, (same_author * mask).sum(1) / length], dim=1
        )

    def _hidden(
        self,
        user_idx: Tensor,
        gender_idx: Tensor,
        age_idx: Tensor,
        region_idx: Tensor,
        user_dense: Tensor,
        hist: Tensor,
        item_idx: Tensor,
        pair_dense: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The arch's crossing of every feature: the heads' input and the per-task logit bias."""
        if pair_dense is None:
            if self.pair_dense_dim > 0:
                raise ValueError("this ranker was trained with pair_dense (the pair features): pass them")
            pair_dense = user_dense.new_zeros((user_dense.shape[0], 0))
        elif pair_dense.shape[1] < self.pair_dense_dim:
            raise ValueError("pair_dense is narrower than the ranker was trained with")
        else:  # inputs are only appended (samples.features.PAIR_DENSE): read the prefix it knows
            pair_dense = pair_dense[:, : self.pair_dense_dim]
        target = self._item_rep(item_idx)
        user, author = self.user_emb(user_idx), self.author_emb(self.item_author[item_idx])
        gender, age, region = self.gender_emb(gender_idx), self.age_emb(age_idx), self.region_emb(region_idx)
        interest = self._interest(hist, target)
        x = torch.cat(
            [
                user,
                target,
                author,
                gender,
                age,
                region,
                user_dense,
                self.item_dense[item_idx],
                pair_dense,
                interest,
                self._affinity(hist, item_idx),
            ],
            dim=1,
        )
        d = user.shape[1]
        # The FM fields: every embedding of width d (target and interest are [item, category] each).
        fields = torch.stack(
            [
                user,
                target[:, :d],
                target[:, d:],
                author,
                gender,
                age,
                region,
                interest[:, :d],
                interest[:, d:],
            ],
            dim=1,
        )
        return self.interaction(x, fields)

    @torch.jit.export
    def score_logits(
        self,
        user_idx: Tensor,
        gender_idx: Tensor,
        age_idx: Tensor,
        region_idx: Tensor,
        user_dense: Tensor,
        hist: Tensor,
        item_idx: Tensor,
        pair_dense: Tensor | None = None,
    ) -> Tensor:
        """Logits of (user, candidate) pairs.

        Parameters
        ----------
        user_idx, gender_idx, age_idx, region_idx : Tensor
            `(batch,)` int64 indices (0 = unknown).
        user_dense : Tensor
            `(batch, user_dense_dim)` float user features.
        hist : Tensor
            `(batch, hist_len)` int64 item indices of the last clicks, 0 = padding.
        item_idx : Tensor
            `(batch,)` int64 candidate item indices.
        pair_dense : Tensor, optional
            `(batch, pair_dense_dim)` float features of the pair: required when `pair_dense_dim > 0`,
            None for a model without them.

        Returns
        -------
        Tensor
            `(batch, n_tasks)` logits in `tasks` order.
        """
        hidden, bias = self._hidden(
            user_idx, gender_idx, age_idx, region_idx, user_dense, hist, item_idx, pair_dense
        )
        return self.heads(hidden, bias) + self.log_keep

    def _args(self, batch: dict[str, Tensor]) -> list[Tensor | None]:
        # A model saved before pair_dense existed (width 0) scores new rows by not reading it.
        pair = batch.get(PAIR_KEY) if self.pair_dense_dim > 0 else None
        if self.pair_dense_dim > 0 and pair is None:
            raise ValueError(
                f"this ranker was trained with {PAIR_KEY} ({self.pair_dense_dim} pair "
                "features), which the batch lacks"
            )
        return [*[batch[k] for k in (*USER_KEYS, "item_idx")], pair]

    @torch.jit.unused
    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """`score_logits` on a batch dict, split by task.

        Parameters
        ----------
        batch : dict of str to Tensor
            `USER_KEYS` tensors and `item_idx` (see `score_logits`), plus `pair_dense` for a model
            with `pair_dense_dim > 0` (a model without it ignores the key).

        Returns
        -------
        dict of str to Tensor
            Task -> `(batch,)` logits.
        """
        logits = self.score_logits(*self._args(batch))
        return {task: logits[:, k] for k, task in enumerate(self.tasks)}

    def gate_weights(self, batch: dict[str, Tensor]) -> Tensor:
        """MMoE gate weights.

        Parameters
        ----------
        batch : dict of str to Tensor
            As for `forward`.

        Returns
        -------
        Tensor
            `(batch, n_tasks, n_experts)`.
        """
        return self.heads.gate_weights(self._hidden(*self._args(batch))[0])

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Σ over tasks of the mean binary cross-entropy against `label_<task>`, plus, for `dien`,
        `aux_weight` times its next-click loss (`DienInterest.auxiliary_loss`).

        Parameters
        ----------
        batch : dict of str to Tensor
            As for `forward`, plus float `label_<task>` `(batch,)` per task.

        Returns
        -------
        Tensor
            Scalar loss.
        """
        logits = self(batch)
        loss = sum(F.binary_cross_entropy_with_logits(logits[t], batch[f"label_{t}"]) for t in self.tasks)
        if isinstance(self.interest, DienInterest) and self.aux_weight > 0:
            hist = batch["hist"]
            drawn = row_draws(hist, batch["user_idx"], batch["item_idx"], self.sizes.n_items)
            loss = loss + self.aux_weight * self.interest.auxiliary_loss(
                self._item_rep(hist), hist != 0, self._item_rep(drawn)
            )
        return loss

    @torch.no_grad()
    def predict(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Probabilities per task, without gradients.

        Parameters
        ----------
        batch : dict of str to Tensor
            As for `forward`.

        Returns
        -------
        dict of str to Tensor
            Task -> `(batch,)` probabilities.
        """
        return {task: torch.sigmoid(logit) for task, logit in self(batch).items()}

    def export_scorer(self, f: str | IO[bytes]) -> None:
        """Save the scorer as TorchScript for online serving.

        Parameters
        ----------
        f : str or binary file
            Destination.

        Returns
        -------
        None
            The saved module's `forward(user_idx, gender_idx, age_idx, region_idx, user_dense, hist,
            item_idx, pair_dense=None)` returns probabilities `(batch, n_tasks)` in `tasks` order
            (`pair_dense` is required when the model has `pair_dense_dim > 0`).
        """
        torch.jit.save(torch.jit.script(_Scorer(self)), f)


def _rename_legacy_keys(state_dict, prefix, *args) -> None:
    """Load a checkpoint saved before the zoo (its default's parts at the top level) into the default."""
    for key in list(state_dict):
        rest = key[len(prefix) :]
        for old, new in _LEGACY_PREFIXES.items():
            if key.startswith(prefix) and rest.startswith(old):
                state_dict[prefix + new + rest[len(old) :]] = state_dict.pop(key)
                break


def row_draws(hist: Tensor, user_idx: Tensor, item_idx: Tensor, n_items: int) -> Tensor:
    """Items drawn (near-)uniformly from 1 .. n_items − 1 per history position, as a hash of the row.

    A hash of (user, candidate, position, click), not a random generator, so every data-parallel split
    of a batch draws the same items as the whole batch would (2 ranks equal 1 process). A draw equal
    to the click itself (about 1 / n_items) is left in, as DIEN's own sampler does.

    Parameters
    ----------
    hist : Tensor
        `(batch, N)` int64 history indices.
    user_idx, item_idx : Tensor
        `(batch,)` int64.
    n_items : int
        Item vocabulary size (index 0 is padding).

    Returns
    -------
    Tensor
        `(batch, N)` int64 in [1, n_items − 1] (all 1 when n_items ≤ 2).
    """
    position = torch.arange(hist.shape[1], device=hist.device).unsqueeze(0)
    x = hist * 1_000_003 + user_idx.unsqueeze(1) * 7_919 + item_idx.unsqueeze(1) * 104_729 + position
    for multiplier in (0x9E3779B97F4A7C15 - (1 << 64), 0xBF58476D1CE4E5B9 - (1 << 64)):  # splitmix64
        x = x ^ (x >> 31)
        x = x * multiplier  # int64 products wrap, which is the point
    return (x & ((1 << 62) - 1)) % max(1, n_items - 1) + 1


class _Scorer(nn.Module):
    def __init__(self, model: Ranker) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        user_idx: Tensor,
        gender_idx: Tensor,
        age_idx: Tensor,
        region_idx: Tensor,
        user_dense: Tensor,
        hist: Tensor,
        item_idx: Tensor,
        pair_dense: Tensor | None = None,
    ) -> Tensor:
        return torch.sigmoid(
            self.model.score_logits(
                user_idx, gender_idx, age_idx, region_idx, user_dense, hist, item_idx, pair_dense
            )
        )
