"""The one table of model classes: checkpoint `kind` -> class (the models' `kind` attributes)."""

from __future__ import annotations

from recsys_spark.train.base import RecModel
from recsys_spark.train.ranker import Ranker
from recsys_spark.train.two_tower import TwoTower

MODEL_CLASSES: dict[str, type[RecModel]] = {TwoTower.kind: TwoTower, Ranker.kind: Ranker}
