"""Two-tower recall model: user and item vectors whose dot product ranks the whole catalogue.

The towers only meet in a dot product, so item vectors can be computed once for the catalogue and
searched with an ANN index while the user tower runs online (it is exported as TorchScript). The pooled
click history reuses the item-id table, so a user's history and the items they click live in one space.
Training is an in-batch sampled softmax with logQ correction: popular items show up as in-batch
negatives far more often than uniformly sampled ones, and subtracting log q(item) removes that bias.
Optionally (`train --own-negatives`) a user's own negatives (hard negatives from the recall channels,
easy ones sampled for them), which are not in-batch samples, keep their full logit in that user's
softmax, and the training store keeps a user's rows together so that they meet their user in a batch.

References
----------
P. Covington, J. Adams, E. Sargin. "Deep Neural Networks for YouTube Recommendations." RecSys 2016
(two-stage recall then ranking, a user tower over pooled history).
X. Yi, J. Yang, L. Hong, D. Z. Cheng, L. Heldt, A. Kumthekar, Z. Zhao, L. Wei, E. Chi.
"Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations." RecSys 2019
(two towers, in-batch softmax, logQ correction).
"""

from __future__ import annotations

from typing import IO

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import RecModel, mlp
from .features import USER_KEYS, FeatureSizes
from .history import history_encoder as make_history_encoder


class TwoTower(RecModel):
    """User tower and item tower ending in L2-normalised `out_dim` vectors.

    Parameters
    ----------
    sizes : FeatureSizes
        Vocabulary sizes and dense widths of the training store.
    id_dim : int
        User/item id embedding width (32).
    side_dim : int
        Width of the gender, age, region, category and author embeddings (8).
    hidden : tuple of int
        MLP widths of each tower ((128, 64)).
    out_dim : int
        Width of both towers' output vectors (32).
    temperature : float
        Softmax temperature (0.05).
    emb_std : float
        Embedding init std (0.05).
    history_encoder : str
        How the user tower reads the last-N clicks: `mean`, `gru` or `attention` (`train.history`).
    """

    kind = "two_tower"
    _VOCAB = (
        ("user_emb", "n_users"),
        ("item_emb", "n_items"),
        ("gender_emb", "n_genders"),
        ("age_emb", "n_ages"),
        ("region_emb", "n_regions"),
        ("category_emb", "n_categories"),
        ("author_emb", "n_authors"),
    )

    def __init__(
        self,
        sizes: FeatureSizes,
        *,
        id_dim: int = 32,
        side_dim: int = 8,
        hidden: tuple[int, ...] = (128, 64),
        out_dim: int = 32,
        temperature: float = 0.05,
        emb_std: float = 0.05,
        history_encoder: str = "mean",
    ) -> None:
        hidden = tuple(hidden)
        super().__init__(
            sizes,
            dict(
                id_dim=id_dim,
                side_dim=side_dim,
                hidden=hidden,
                out_dim=out_dim,
                temperature=temperature,
                emb_std=emb_std,
                history_encoder=history_encoder,
            ),
        )
        s = sizes
        self.temperature = float(temperature)
        self.user_emb = self._embedding(s.n_users, id_dim)
        self.item_emb = self._embedding(s.n_items, id_dim)
        self.gender_emb = self._embedding(s.n_genders, side_dim)
        self.age_emb = self._embedding(s.n_ages, side_dim)
        self.region_emb = self._embedding(s.n_regions, side_dim)
        self.category_emb = self._embedding(s.n_categories, side_dim)
        self.author_emb = self._embedding(s.n_authors, side_dim)
        self.history = make_history_encoder(history_encoder, id_dim, s.hist_len, emb_std)
        self.user_mlp = mlp(2 * id_dim + 3 * side_dim + s.user_dense_dim, hidden, out_dim)
        self.item_mlp = mlp(id_dim + 2 * side_dim + s.item_dense_dim, hidden, out_dim)

    @torch.jit.export
    def encode_user(
        self,
        user_idx: Tensor,
        gender_idx: Tensor,
        age_idx: Tensor,
        region_idx: Tensor,
        user_dense: Tensor,
        hist: Tensor,
    ) -> Tensor:
        """User vectors from the user features and the history's item embeddings (read by `history`).

        Parameters
        ----------
        user_idx, gender_idx, age_idx, region_idx : Tensor
            `(batch,)` int64 indices (0 = unknown).
        user_dense : Tensor
            `(batch, user_dense_dim)` float user features.
        hist : Tensor
            `(batch, hist_len)` int64 item indices of the last clicks, 0 = padding.

        Returns
        -------
        Tensor
            `(batch, out_dim)`, L2-normalised.
        """
        pooled = self.history(self.item_emb(hist), hist != 0)
        x = torch.cat(
            [
                self.user_emb(user_idx),
                self.gender_emb(gender_idx),
                self.age_emb(age_idx),
                self.region_emb(region_idx),
                user_dense,
                pooled,
            ],
            dim=1,
        )
        return F.normalize(self.user_mlp(x), dim=1)

    @torch.jit.export
    def encode_item(self, item_idx: Tensor) -> Tensor:
        """Item vectors from the item id, category, author and dense features.

        Parameters
        ----------
        item_idx : Tensor
            `(n,)` int64 item indices.

        Returns
        -------
        Tensor
            `(n, out_dim)`, L2-normalised.
        """
        x = torch.cat(
            [
                self.item_emb(item_idx),
                self.category_emb(self.item_category[item_idx]),
                self.author_emb(self.item_author[item_idx]),
                self.item_dense[item_idx],
            ],
            dim=1,
        )
        return F.normalize(self.item_mlp(x), dim=1)

    def user_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        """`encode_user` on a batch dict.

        Parameters
        ----------
        batch : dict of str to Tensor
            Holds the `USER_KEYS` tensors (see `encode_user`).

        Returns
        -------
        Tensor
            `(batch, out_dim)`.
        """
        return self.encode_user(*(batch[k] for k in USER_KEYS))

    def item_vectors(self, item_idx: Tensor) -> Tensor:
        """`encode_item`.

        Parameters
        ----------
        item_idx : Tensor
            `(n,)` int64 item indices.

        Returns
        -------
        Tensor
            `(n, out_dim)`.
        """
        return self.encode_item(item_idx)

    @torch.no_grad()
    def all_item_vectors(self, chunk: int = 4096) -> Tensor:
        """Vectors of the whole catalogue, computed `chunk` items at a time without gradients.

        Parameters
        ----------
        chunk : int
            Items encoded per step.

        Returns
        -------
        Tensor
            `(n_items, out_dim)`, row i for item index i, row 0 being the unknown item.
        """
        n = self.sizes.n_items
        device = self.item_category.device
        return torch.cat(
            [self.encode_item(torch.arange(i, min(i + chunk, n), device=device)) for i in range(0, n, chunk)]
        )

    def loss(
        self,
        batch: dict[str, Tensor],
        log_q: Tensor,
        own_negatives: bool = False,
        uniform: Tensor | None = None,
    ) -> Tensor:
        """Weighted sampled-softmax CE of each positive over the batch's unique items (and `uniform`
        items, mixed negative sampling), logQ-corrected (with `own_negatives`, except for the user's
        own negatives).

        `log_q[i]` is the log of item i's sampling probability (e.g. its share of positives): an item
        met as another row's item is an in-batch sample, and subtracting log q removes its popularity
        bias. An item that is a negative row (label 0) of the *same user* in the batch was drawn for
        that user (a hard or easy negative of `samples`), not by the batch: it keeps its full logit,
        so the user's own negatives push on their user (the store groups a user's rows into the same
        batches, `train.data.write_store`). A batch without positives gives a zero that still depends
        on every parameter, so gradient all-reduce sees the same tensors on every rank.

        With M `uniform` items (drawn uniformly from the catalogue's N = n_items − 1 items) in the
        candidate set, an item's expected count among the B rows and the M draws is B·q_c + M/N, whose
        log replaces log q_c (a constant shift of log q when M = 0, so the same softmax).

            own(p, c) = ∃ row r: label_r = 0, user_r = user_p, item_r = c ≠ item_p
            log Q_c = log(B · q_c + M / N)
            loss = Σ_pos w · CE(softmax_c(<u, v_c> / temperature − log Q_c · [not own(p, c)]), positive)
                   / Σ_pos w

        Parameters
        ----------
        batch : dict of str to Tensor
            `USER_KEYS` tensors, `item_idx` `(batch,)`, `label` `(batch,)` (1 = positive) and
            `weight` `(batch,)`.
        log_q : Tensor
            `(n_items,)` log sampling probability per item index.
        own_negatives : bool
            Leave a user's own negatives uncorrected (own(p, c) is empty when False).
        uniform : Tensor, optional
            `(M,)` int64 item indices drawn uniformly from 1..n_items − 1, added to the candidates.

        References
        ----------
        J. Yang, X. Yi, D. Z. Cheng, L. Hong, Y. Li, S. X. Wang, T. Xu, E. H. Chi. "Mixed Negative
        Sampling for Learning Two-tower Neural Networks in Recommendations." WWW 2020.

        Returns
        -------
        Tensor
            Scalar loss.
        """
        pos = batch["label"] == 1
        if not bool(pos.any()):
            return 0.0 * sum(p.sum() for p in self.parameters())
        users = self.encode_user(*(batch[k][pos] for k in USER_KEYS))
        items = batch["item_idx"]
        pool = items if uniform is None else torch.cat([items, uniform])
        candidates, column = torch.unique(pool, return_inverse=True)
        column = column[: len(items)]
        if uniform is None:
            correction = log_q[candidates][None, :]
        else:
            expected = len(items) * log_q[candidates].exp() + len(uniform) / max(self.sizes.n_items - 1, 1)
            correction = expected.log()[None, :]
        if own_negatives:
            neg = ~pos
            same_user = (batch["user_idx"][pos][:, None] == batch["user_idx"][neg][None, :]).float()  # (P, N)
            negatives = F.one_hot(column[neg], len(candidates)).float()  # (N, C)
            own = (same_user @ negatives) > 0  # (P, C)
            own[torch.arange(len(users)), column[pos]] = False
            correction = correction * (~own).float()
        logits = users @ self.encode_item(candidates).T / self.temperature - correction
        ce = F.cross_entropy(logits, column[pos], reduction="none")
        weight = batch["weight"][pos]
        return (weight * ce).sum() / weight.sum().clamp_min(1e-12)

    def export_user_tower(self, f: str | IO[bytes]) -> None:
        """Save the user tower as TorchScript for online serving.

        Parameters
        ----------
        f : str or binary file
            Destination.

        Returns
        -------
        None
            The saved module's `forward(user_idx, gender_idx, age_idx, region_idx, user_dense, hist)`
            returns `(batch, out_dim)`.
        """
        torch.jit.save(torch.jit.script(_UserTower(self)), f)


class _UserTower(nn.Module):
    def __init__(self, model: TwoTower) -> None:
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
    ) -> Tensor:
        return self.model.encode_user(user_idx, gender_idx, age_idx, region_idx, user_dense, hist)
