"""The batch contract between the sample tables and the models, plus what both models share.

The Spark side turns string ids into dense indices (0 = unknown) and writes fixed-width batches; the
models only ever see the tensors named here, so the two sides can change independently as long as this
contract holds. Item-side features are per item, not per example: the models keep them as buffers
indexed by item index (`set_item_features`), which saves repeating them in every row and lets the
exported towers look them up by item index alone.

Also here: `RecModel`, the base class that owns the embedding bookkeeping both models need (ID vs dense
parameter split for the incremental update, in-place `grow` for new users/items, item-feature buffers),
and versioned checkpoints that rebuild the right class from `{"kind", "sizes", "hyper", "state"}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import IO, Any

import torch
from torch import Tensor, nn

USER_KEYS = ("user_idx", "gender_idx", "age_idx", "region_idx", "user_dense", "hist")


@dataclass(frozen=True)
class FeatureSizes:
    """Vocabulary sizes (each counts index 0 = unknown) and dense widths of one training run."""

    n_users: int
    n_items: int
    n_categories: int
    n_authors: int
    n_genders: int
    n_ages: int
    n_regions: int
    user_dense_dim: int
    item_dense_dim: int
    hist_len: int

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < (1 if f.name.startswith("n_") else 0):
                raise ValueError(f"FeatureSizes.{f.name} = {value} is out of range")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSizes:
        return cls(**{k: int(v) for k, v in d.items()})


def random_batch(
    sizes: FeatureSizes,
    batch_size: int,
    generator: torch.Generator,
    tasks: Sequence[str] = (),
    recall: bool = False,
) -> dict[str, Tensor]:
    """A valid random batch: histories of random length, most recent first, padded with 0 at the end."""
    g, b, s = generator, batch_size, sizes

    def ints(n: int, *shape: int) -> Tensor:
        return torch.randint(0, n, shape or (b,), generator=g)

    hist = torch.randint(1, max(2, s.n_items), (b, s.hist_len), generator=g) % s.n_items
    lengths = torch.randint(0, s.hist_len + 1, (b, 1), generator=g)
    hist = torch.where(torch.arange(s.hist_len) < lengths, hist, torch.zeros_like(hist))
    batch = {
        "user_idx": ints(s.n_users),
        "gender_idx": ints(s.n_genders),
        "age_idx": ints(s.n_ages),
        "region_idx": ints(s.n_regions),
        "user_dense": torch.randn(b, s.user_dense_dim, generator=g),
        "hist": hist,
        "item_idx": ints(s.n_items),
    }
    if recall:
        batch["label"] = torch.randint(0, 2, (b,), generator=g).float()
        batch["weight"] = 0.5 + torch.rand(b, generator=g)
    for task in tasks:
        batch[f"label_{task}"] = torch.randint(0, 2, (b,), generator=g).float()
    return batch


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
        if (sizes.user_dense_dim, sizes.item_dense_dim) != (old.user_dense_dim, old.item_dense_dim):
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


def save_checkpoint(model: RecModel, f: str | IO[bytes]) -> None:
    """Everything needed to rebuild `model`: kind, sizes, hyperparameters and the state dict."""
    torch.save(
        {
            "kind": model.kind,
            "sizes": model.sizes.to_dict(),
            "hyper": model.hyper,
            "state": model.state_dict(),
        },
        f,
    )


def load_checkpoint(f: str | IO[bytes], map_location: str | torch.device = "cpu") -> RecModel:
    from .ranker import Ranker
    from .two_tower import TwoTower

    ckpt = torch.load(f, map_location=map_location, weights_only=True)
    classes: dict[str, type[RecModel]] = {"two_tower": TwoTower, "ranker": Ranker}
    if ckpt.get("kind") not in classes:
        raise ValueError(f"unknown checkpoint kind {ckpt.get('kind')!r}")
    model = classes[ckpt["kind"]](FeatureSizes.from_dict(ckpt["sizes"]), **ckpt["hyper"])
    model.load_state_dict(ckpt["state"])
    return model
