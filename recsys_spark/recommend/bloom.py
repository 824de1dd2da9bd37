"""Per-user Bloom filters built and probed in Spark with built-in functions only.

A user's filter holds a set S of item ids (e.g. the items shown to them too often). It is sized from
the user's own n = |S| for a target false-positive rate p:

    m = ceil(-n · ln p / (ln 2)²)  bits,      k = max(1, round(m / n · ln 2))  hash functions,

so every user's filter has about the same false-positive rate p whatever its size (a hot user with
500 items and a light one with 2 both get ~p). Bit j of the k positions of an item is
`pmod(xxhash64(item_id, seed_j), m)` with seeds 0..k-1 (Spark's `xxhash64` over the pair: one
independent-enough hash per seed). The bits are OR-ed per (user, 64-bit word) with `bit_or` and laid
out as a dense `array<bigint>` of ceil(m / 64) words.

A member always tests positive (no false negatives); a non-member tests positive with probability
≈ (1 − e^{−k·n/m})^k ≈ p. Used as a *drop* filter, a false positive can only remove a candidate,
never let an over-exposed one through.

References
----------
Bloom, B. H. (1970). Space/time trade-offs in hash coding with allowable errors. CACM 13(7).
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

BLOOM_COLUMNS = ("user_id", "bloom_m", "bloom_k", "bloom_n", "bloom_bits")


def bloom_size(n: int, fpr: float) -> tuple[int, int]:
    """Bits m and hash count k of a filter for n members at false-positive rate `fpr` (pure Python).

    Parameters
    ----------
    n : int
        Number of members, >= 1.
    fpr : float
        Target false-positive rate, in (0, 1).

    Returns
    -------
    tuple of (int, int)
        `(m, k)`: m = ceil(-n ln p / (ln 2)^2), k = max(1, round(m / n ln 2)).
    """
    if n < 1 or not 0 < fpr < 1:
        raise ValueError(f"need n >= 1 and 0 < fpr < 1, got n={n}, fpr={fpr}")
    m = math.ceil(-n * math.log(fpr) / math.log(2) ** 2)
    return m, max(1, round(m / n * math.log(2)))


def _shl(value: Column, bits: Column) -> Column:
    # F.shiftleft takes a Python int shift only; the SQL function takes a column (lambda variables too).
    return F.call_function("shiftleft", value, bits)


def _shr(value: Column, bits: Column) -> Column:
    return F.call_function("shiftright", value, bits)


def _positions(item: Column, seed: Column, m: Column) -> Column:
    """Bit position of `item` under hash `seed` in a filter of `m` bits (a long in [0, m))."""
    return F.pmod(F.xxhash64(item, seed.cast("int")), m)


def build_bloom_filters(members: DataFrame, fpr: float) -> DataFrame:
    """One Bloom filter per user over the distinct `item_id`s of `members (user_id, item_id)`.

    Parameters
    ----------
    members : DataFrame
        `(user_id, item_id)` rows, shape (pairs, 2); duplicates count once.
    fpr : float
        Target false-positive rate p of every filter.

    Returns
    -------
    DataFrame
        `(user_id, bloom_m long, bloom_k int, bloom_n long, bloom_bits array<bigint>)`: one row per
        user with members, `bloom_bits` holding ceil(m / 64) words (bit j of the filter is bit j % 64
        of word j // 64).
    """
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    ln2 = math.log(2)
    pairs = members.select("user_id", "item_id").distinct()
    sized = (
        pairs.groupBy("user_id")
        .agg(F.count(F.lit(1)).alias("bloom_n"))
        .withColumn(
            "bloom_m", F.ceil(-F.col("bloom_n") * F.lit(math.log(fpr)) / F.lit(ln2 * ln2)).cast("long")
        )
        .withColumn(
            "bloom_k",
            F.greatest(F.lit(1), F.round(F.col("bloom_m") / F.col("bloom_n") * F.lit(ln2)).cast("int")),
        )
    )
    bits = (
        pairs.join(sized, "user_id")
        .withColumn("seed", F.explode(F.sequence(F.lit(0), F.col("bloom_k") - 1)))
        .withColumn("pos", _positions(F.col("item_id"), F.col("seed"), F.col("bloom_m")))
        .groupBy("user_id", F.shiftright(F.col("pos"), 6).cast("int").alias("word"))
        .agg(F.bit_or(_shl(F.lit(1).cast("long"), (F.col("pos") % 64).cast("int"))).alias("bits"))
        .groupBy("user_id")
        .agg(F.map_from_entries(F.collect_list(F.struct("word", "bits"))).alias("_words"))
    )
    n_words = ((F.col("bloom_m") + 63) / 64).cast("int")
    return sized.join(bits, "user_id").select(
        "user_id",
        "bloom_m",
        "bloom_k",
        "bloom_n",
        F.transform(
            F.sequence(F.lit(0), n_words - 1),
            lambda w: F.coalesce(F.element_at(F.col("_words"), w), F.lit(0).cast("long")),
        ).alias("bloom_bits"),
    )


def might_contain(item: Column, bits: Column, m: Column, k: Column) -> Column:
    """True when the filter (`bits`, `m`, `k`) may hold `item`; null when the row has no filter.

    Parameters
    ----------
    item : Column
        The item id (string) to test.
    bits, m, k : Column
        A filter's `bloom_bits`, `bloom_m`, `bloom_k` (see `build_bloom_filters`).

    Returns
    -------
    Column
        Boolean: every one of the k bits is set (never false for a member).
    """

    def bit_set(seed: Column) -> Column:
        pos = _positions(item, seed, m)
        word = F.get(bits, F.shiftright(pos, 6).cast("int"))
        return _shr(word, (pos % 64).cast("int")).bitwiseAND(F.lit(1).cast("long")) == 1

    return F.forall(F.sequence(F.lit(0), k - 1), bit_set)
