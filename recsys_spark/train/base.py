"""What both models share: `RecModel` (embedding bookkeeping) and the small layers both build from.

`RecModel` owns the ID vs dense parameter split for the incremental update, in-place `grow` for new
users/items and the item-feature buffers; the batch it reads is defined in `train.features`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor, nn

from recsys_spark.train.features import FeatureSizes


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None = None) -> nn.Sequential:
    """Linear+ReLU per hidden width, then a plain Linear to `out_dim` if given."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of `x` [B, N, D] over positions where `mask` [B, N]; all-masked rows give zeros."""
    total = torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x)).sum(1)
    return total / mask.sum(1, keepdim=True).clamp_min(1).to(x.dtype)


class RecModel(nn.Module):
    """Embedding tables, item-feature buffers, parameter split and `grow`, shared by both models.

    Subclasses set `kind` and `_VOCAB` (embedding attribute -> `FeatureSizes` field) and create their
    tables with `_embedding`, which initialises N(0, emb_std²) like `grow` does for new rows.
    """

    kind = ""
    _VOCAB: tuple[tuple[str, str], ...] = ()

    def __init__(self, sizes: FeatureSizes, hyper: dict[str, Any]) -> None:
        super().__init__()
        self.sizes = sizes
        self.hyper = dict(hyper)
        self.emb_std = float(hyper["emb_std"])
        self.register_buffer("item_category", torch.zeros(sizes.n_items, dtype=torch.int64))
        self.register_buffer("item_author", torch.zeros(sizes.n_items, dtype=torch.int64))
        self.register_buffer("item_dense", torch.zeros(sizes.n_items, sizes.item_dense_dim))

    def _embedding(self, n: int, dim: int) -> nn.Embedding:
        table = nn.Embedding(n, dim)
        nn.init.normal_(table.weight, std=self.emb_std)
        return table

    def set_item_features(self, category: Tensor, author: Tensor, dense: Tensor) -> None:
        """Per-item features indexed by item index ([n_items], [n_items], [n_items, item_dense_dim])."""
        s = self.sizes
        category, author = torch.as_tensor(category).long(), torch.as_tensor(author).long()
        dense = torch.as_tensor(dense, dtype=self.item_dense.dtype)
        if category.shape != (s.n_items,) or author.shape != (s.n_items,):
            raise ValueError(f"item category/author must have shape [{s.n_items}]")
        if dense.shape != (s.n_items, s.item_dense_dim):
            raise ValueError(f"item dense must have shape [{s.n_items}, {s.item_dense_dim}]")
        for t, n, name in ((category, s.n_categories, "category"), (author, s.n_authors, "author")):
            if t.numel() and (t.min() < 0 or t.max() >= n):
                raise ValueError(f"item {name} index out of range [0, {n})")
        with torch.no_grad():
            self.item_category.copy_(category)
            self.item_author.copy_(author)
            self.item_dense.copy_(dense)

    def id_embedding_parameters(self) -> list[nn.Parameter]:
        """The user-id and item-id tables: all the incremental update trains."""
        return [self.user_emb.weight, self.item_emb.weight]

    def dense_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.id_embedding_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def grow(self, sizes: FeatureSizes, seed: int = 0) -> RecModel:
        """Enlarge vocabularies in place; existing rows stay bit-identical, new ones are N(0, emb_std²).

        Replaces the tables' Parameter objects, so build optimizers after growing. New items get
        unknown (0) item features until `set_item_features` is called again.
        """
        old = self.sizes
        for f in fields(FeatureSizes):
            if f.name.startswith("n_") and getattr(sizes, f.name) < getattr(old, f.name):
                raise ValueError(
                    f"cannot shrink {f.name} from {getattr(old, f.name)} to {getattr(sizes, f.name)}"
                )
        widths = ("user_dense_dim", "item_dense_dim", "pair_dense_dim")
        if any(getattr(sizes, w) != getattr(old, w) for w in widths):
            raise ValueError("dense feature widths cannot change when growing a model")
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for attr, field in self._VOCAB:
                table: nn.Embedding = getattr(self, attr)
                extra = getattr(sizes, field) - table.num_embeddings
                if extra > 0:
                    w = table.weight
                    new = torch.randn(extra, w.shape[1], generator=g).mul_(self.emb_std)
                    table.weight = nn.Parameter(torch.cat([w, new.to(w)]), requires_grad=w.requires_grad)
                    table.num_embeddings = w.shape[0] + extra
            extra = sizes.n_items - old.n_items
            for name in ("item_category", "item_author", "item_dense"):
                buf = getattr(self, name)
                setattr(self, name, torch.cat([buf, buf.new_zeros((extra, *buf.shape[1:]))]))
        self.sizes = sizes
        return self
