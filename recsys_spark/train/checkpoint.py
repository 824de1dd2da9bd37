"""Versioned model checkpoints: `{"kind", "sizes", "hyper", "state"}`, rebuilt as the right class."""

from __future__ import annotations

from typing import IO

import torch

from recsys_spark.train.base import RecModel
from recsys_spark.train.features import FeatureSizes
from recsys_spark.train.models import MODEL_CLASSES


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
    ckpt = torch.load(f, map_location=map_location, weights_only=True)
    if ckpt.get("kind") not in MODEL_CLASSES:
        raise ValueError(f"unknown checkpoint kind {ckpt.get('kind')!r}")
    model = MODEL_CLASSES[ckpt["kind"]](FeatureSizes.from_dict(ckpt["sizes"]), **ckpt["hyper"])
    model.load_state_dict(ckpt["state"])
    return model
