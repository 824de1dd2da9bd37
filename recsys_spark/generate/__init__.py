"""`recsys-spark generate`: synthetic recommender data with planted, measurable structure.

See docs/generate.md for the model. Public API: `GenerateConfig`, `generate_tables`, `run`,
`expected_events`, `config_for_events`.
"""

from __future__ import annotations

from recsys_spark.generate.config import GenerateConfig, config_for_events, expected_events
from recsys_spark.generate.job import run
from recsys_spark.generate.tables import TABLES, generate_tables

__all__ = ["TABLES", "GenerateConfig", "config_for_events", "expected_events", "generate_tables", "run"]
