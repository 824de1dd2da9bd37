"""The similarity algorithms' typed parameters, defaults and help written once (docs/similarity.md).

`SimilarityConfig` (the `similarity` job) is built on them; `itemcf_similarity`, `swing_similarity`
and `usercf_similarity` take them.
"""

from __future__ import annotations

from dataclasses import dataclass

from recsys_spark.config import option


@dataclass
class SimilarityParams:
    top_k: int = option(100, "Neighbours kept per item (per user for usercf).", minimum=1)
    alpha1: float = option(15.0, "Swing: w_u = (alpha1 + |I_u|)^(-beta).")
    alpha2: float = option(0.0, "Swing: smoothing added to |I_u ∩ I_v| in the denominator.")
    beta: float = option(0.3, "Swing: exponent of the user activity weight.")
    max_users_per_item: int = option(
        1000, "All algos: an item pairs only its this many most recent users (latest ts, then user_id)."
    )
    min_user_items: int = option(2, "Swing: ignore users with fewer items than this.")
    max_user_items: int = option(1000, "All algos: ignore users with more items than this (bots).")
    block_size: int = option(
        256,
        "Skew guard: lists longer than this are paired block by block on separate tasks "
        "(at most size² pairs each).",
    )
    pair_partitions: int = option(
        0, "Partitions the pairing step spreads (blocks of) lists over; 0 = spark.sql.shuffle.partitions."
    )
