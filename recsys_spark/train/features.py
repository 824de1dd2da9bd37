"""The batch contract between the sample tables and the models: tensor names, `FeatureSizes`, a random batch.

The Spark side turns string ids into dense indices (0 = unknown) and writes fixed-width batches; the
models only ever see the tensors named here, so the two sides can change independently as long as this
contract holds. Item-side features are per item, not per example: the models keep them as buffers
indexed by item index (`set_item_features`), which saves repeating them in every row and lets the
exported towers look them up by item index alone.

The rest of the models' shared code sits beside it, one concern per module, importing downwards only:
`base` (`RecModel` and the layers both models use), `ranker` / `two_tower` (the models), `models` (the
one table of model classes) and `checkpoint` (save and rebuild from `{"kind", "sizes", "hyper", "state"}`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor

USER_KEYS = ("user_idx", "gender_idx", "age_idx", "region_idx", "user_dense", "hist")
# The ranker's input beside USER_KEYS and `item_idx`: float features of the (user, item) pair, present
# in a batch only for a model with `pair_dense_dim > 0`.
PAIR_KEY = "pair_dense"


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
    # Width of the ranker's `pair_dense` input (samples.features.PAIR_DENSE). A default, so the sizes of
    # a checkpoint saved before the input existed load as 0: that model never reads `pair_dense`.
    pair_dense_dim: int = 0

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
    if s.pair_dense_dim:
        batch["pair_dense"] = torch.rand(b, s.pair_dense_dim, generator=g)
    if recall:
        batch["label"] = torch.randint(0, 2, (b,), generator=g).float()
        batch["weight"] = 0.5 + torch.rand(b, generator=g)
    for task in tasks:
        batch[f"label_{task}"] = torch.randint(0, 2, (b,), generator=g).float()
    return batch
