"""A/B buckets: every user hashed into `buckets` buckets per experiment layer, variants as bucket ranges.

    bucket(u, layer) = pmod(xxhash64(salt(layer), layer, u), buckets)

`xxhash64` is Spark's built-in XXH64 (seed 42; several arguments are chained, each one's hash seeding
the next, nulls skipped; strings hashed as their UTF-8 bytes). It is a function of the row's values
only: the same on every run, under any partitioning or executor count, and across Spark versions
since 3.0, which all ship the same XXH64 (tests/test_experiments.py pins known values so a change
would show). Layers are independent because their salts differ: with good mixing, a user's bucket in
one layer tells nothing about its bucket in another (Tang et al.'s overlapping layers: every user is
in one variant of each layer at once). Within a layer the holdout range gets variant `holdout` (users
kept out of every experiment of the layer: they get the production default), each variant its
ranges, and any bucket left over the layer's `default` variant (`control` unless named).

A spec (`--experiments FILE`, JSON; `DEFAULT_SPEC` when not given):

    {"layers": [{"layer": "rerank", "salt": "rerank", "holdout": [[0, 9]],
                 "variants": {"mmr": [[10, 54]], "dpp": [[55, 99]]}, "default": "control"}]}

Ranges are inclusive `[first, last]` bucket numbers within `[0, buckets)`, never overlapping within a
layer. A file may give `"buckets": N`; it must then equal `--buckets`.

References
----------
R. Kohavi, R. Longbotham, D. Sommerfield, R. M. Henne. "Controlled experiments on the web: survey and
practical guide." Data Mining and Knowledge Discovery 18(1), 140–181, 2009 (randomisation by a hash
of the user id, holdouts, A/A checks).
D. Tang, A. Agarwal, D. O'Brien, M. Meyer. "Overlapping Experiment Infrastructure: More, Better,
Faster Experimentation." KDD 2010 (layers with independent hashes; variants as bucket ranges).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.catalog import AB_BUCKETS
from recsys_spark.config import GatedConfig, option
from recsys_spark.errors import UsageError

HOLDOUT = "holdout"
ALL = "all"  # business_metrics' name for "every user": no variant may be called so
UNASSIGNED = "unassigned"  # business_metrics' name for active users without a bucket row
RESERVED = (HOLDOUT, ALL, UNASSIGNED)
BUCKET_COLUMNS = ("user_id", "layer", "bucket", "variant")

DEFAULT_SPEC: dict[str, Any] = {
    "layers": [
        {
            "layer": "rerank",
            "salt": "rerank",
            "holdout": [[0, 9]],
            "variants": {"mmr": [[10, 54]], "dpp": [[55, 99]]},
            "default": "control",
        }
    ]
}


@dataclass(frozen=True)
class Layer:
    """One experiment layer: its salt, holdout ranges and variants as bucket ranges.

    Parameters
    ----------
    name : str
        The layer's name (`ab_buckets.layer`).
    salt : str
        Mixed into the hash: a new salt reshuffles the layer's users, independent of every other layer.
    holdout : tuple of (int, int)
        Inclusive bucket ranges whose users get variant `holdout`.
    variants : tuple of (str, tuple of (int, int))
        Variant name and its inclusive bucket ranges, in the spec's order.
    default : str
        Variant of the buckets no range covers.
    """

    name: str
    salt: str
    holdout: tuple[tuple[int, int], ...] = ()
    variants: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = ()
    default: str = "control"

    def variant_of_bucket(self, bucket: int) -> str:
        """The variant of one bucket (the reference the Spark expression follows).

        Parameters
        ----------
        bucket : int
            A bucket number in `[0, buckets)`.

        Returns
        -------
        str
            `holdout`, a variant's name, or `default`.
        """
        if any(lo <= bucket <= hi for lo, hi in self.holdout):
            return HOLDOUT
        for name, ranges in self.variants:
            if any(lo <= bucket <= hi for lo, hi in ranges):
                return name
        return self.default


@dataclass(frozen=True)
class ExperimentSpec:
    """Every layer's assignment rule and the number of buckets per layer.

    Parameters
    ----------
    buckets : int
        Buckets per layer (the hash is taken modulo this).
    layers : tuple of Layer
        The layers, names unique.
    """

    buckets: int = 100
    layers: tuple[Layer, ...] = field(default_factory=tuple)

    def layer(self, name: str) -> Layer:
        """The layer called `name`.

        Parameters
        ----------
        name : str
            Layer name.

        Returns
        -------
        Layer
            The layer; UsageError when the spec has none of that name.
        """
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise UsageError(f"no experiment layer {name!r}; the spec has {[x.name for x in self.layers]}")

    def to_json(self) -> str:
        """The spec as the JSON a `--experiments` file holds (recorded in each commit's metadata).

        Returns
        -------
        str
            Compact JSON with `buckets` and `layers`.
        """
        return json.dumps(
            {
                "buckets": self.buckets,
                "layers": [
                    {
                        "layer": x.name,
                        "salt": x.salt,
                        "holdout": [list(r) for r in x.holdout],
                        "variants": {n: [list(r) for r in rs] for n, rs in x.variants},
                        "default": x.default,
                    }
                    for x in self.layers
                ],
            },
            separators=(",", ":"),
        )


def _ranges(raw: Any, where: str) -> tuple[tuple[int, int], ...]:
    if raw is None:
        return ()
    # [lo, hi] alone is one range; [[lo, hi], ...] several
    items = (
        [raw]
        if (isinstance(raw, Sequence) and len(raw) == 2 and all(isinstance(x, int) for x in raw))
        else raw
    )
    out = []
    for item in items:
        if not (isinstance(item, Sequence) and len(item) == 2 and all(isinstance(x, int) for x in item)):
            raise UsageError(f"{where}: a range is [first, last] (two integers), got {item!r}")
        out.append((int(item[0]), int(item[1])))
    return tuple(out)


def parse_spec(raw: Mapping[str, Any], buckets: int = 100) -> ExperimentSpec:
    """An `ExperimentSpec` from its JSON form, checked: ranges inside `[0, buckets)`, no overlap within
    a layer, unique layer names, no variant called holdout/all/unassigned.

    Parameters
    ----------
    raw : Mapping
        `{"layers": [...], "buckets": N (optional)}` as in the module docstring.
    buckets : int, default 100
        Buckets per layer (`--buckets`); a `buckets` key in `raw` must equal it.

    Returns
    -------
    ExperimentSpec
        The checked spec; `UsageError` naming the problem otherwise.
    """
    if buckets < 1:
        raise UsageError(f"--buckets must be >= 1, got {buckets}")
    if "buckets" in raw and int(raw["buckets"]) != buckets:
        raise UsageError(f"the experiments spec says buckets={raw['buckets']} but --buckets is {buckets}")
    layers: list[Layer] = []
    for number, entry in enumerate(raw.get("layers") or [], 1):
        name = entry.get("layer") or entry.get("name")
        if not name:
            raise UsageError(f"experiments spec: layer {number} has no name ('layer')")
        where = f"experiments spec, layer {name!r}"
        holdout = _ranges(entry.get("holdout"), where)
        variants_raw = entry.get("variants") or {}
        if not isinstance(variants_raw, Mapping):
            raise UsageError(f"{where}: variants is an object {{name: ranges}}")
        variants = tuple((str(v), _ranges(r, f"{where}, variant {v!r}")) for v, r in variants_raw.items())
        default = str(entry.get("default", "control"))
        for variant in [v for v, _ in variants] + [default]:
            if variant in RESERVED:
                raise UsageError(
                    f"{where}: {variant!r} is reserved ({', '.join(RESERVED)}); rename the variant"
                )
        taken: dict[int, str] = {}
        for owner, ranges in [(HOLDOUT, holdout), *variants]:
            for lo, hi in ranges:
                if not 0 <= lo <= hi < buckets:
                    raise UsageError(
                        f"{where}: range [{lo}, {hi}] of {owner} is not within [0, {buckets - 1}]"
                    )
                for b in range(lo, hi + 1):
                    if b in taken:
                        raise UsageError(f"{where}: bucket {b} is in both {taken[b]} and {owner}")
                    taken[b] = owner
        layers.append(Layer(str(name), str(entry.get("salt", name)), holdout, variants, default))
    names = [x.name for x in layers]
    if not layers:
        raise UsageError("experiments spec: no layers")
    if len(set(names)) != len(names):
        raise UsageError(f"experiments spec: layer names repeat: {names}")
    if len({x.salt for x in layers}) != len(layers):
        raise UsageError("experiments spec: two layers share a salt, so their assignments would be the same")
    return ExperimentSpec(buckets=buckets, layers=tuple(layers))


def load_spec(path: str | None, buckets: int = 100) -> ExperimentSpec:
    """The spec in JSON file `path`, or `DEFAULT_SPEC` when `path` is None or empty.

    Parameters
    ----------
    path : str or None
        The `--experiments` file.
    buckets : int, default 100
        Buckets per layer (`--buckets`).

    Returns
    -------
    ExperimentSpec
        The checked spec.
    """
    if not path:
        return parse_spec(DEFAULT_SPEC, buckets)
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"--experiments {path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"--experiments {path}: not JSON: {exc}") from exc
    return parse_spec(raw, buckets)


def recorded_spec(lake, experiments: str | None, buckets: int = 100) -> tuple[ExperimentSpec, str]:
    """The spec users are bucketed under: the one `ab_buckets` was last written with, else `experiments`.

    Serving (`rerank --variant-by`) and measuring (`evaluate --variant-by`) both call this, so they
    split users the same way as the published `ab_buckets`.

    Parameters
    ----------
    lake : Lake
        The lake.
    experiments : str or None
        A `--experiments` JSON file, used when `ab_buckets` does not exist (None: `DEFAULT_SPEC`).
    buckets : int
        Buckets per layer for that fallback.

    Returns
    -------
    tuple of (ExperimentSpec, str)
        The spec and where it came from (`ab_buckets`, the file, or `the default spec`).
    """
    if lake.exists(AB_BUCKETS):
        recorded = lake.history(AB_BUCKETS, 1)[0].get("experiments")
        if recorded:
            raw = json.loads(recorded)
            return parse_spec(raw, int(raw.get("buckets", buckets))), AB_BUCKETS
    return load_spec(experiments, buckets), experiments or "the default spec"


_M64 = (1 << 64) - 1
_P1, _P2, _P3 = 11400714785074694791, 14029467366897019727, 1609587929392839161
_P4, _P5 = 9650029242287828579, 2870177450012600261


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & _M64, 31) * _P1) & _M64


def _xxh64(data: bytes, seed: int) -> int:
    """XXH64 of `data` (the reference algorithm, as Spark's `xxhash64` runs it), unsigned."""
    seed &= _M64
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _M64, (seed + _P2) & _M64, seed, (seed - _P1) & _M64]
        while i + 32 <= n:
            for k in range(4):
                v[k] = _round(v[k], int.from_bytes(data[i + 8 * k : i + 8 * k + 8], "little"))
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M64
        for lane in v:
            h = ((h ^ _round(0, lane)) * _P1 + _P4) & _M64
    else:
        h = (seed + _P5) & _M64
    h = (h + n) & _M64
    while i + 8 <= n:
        h = (_rotl(h ^ _round(0, int.from_bytes(data[i : i + 8], "little")), 27) * _P1 + _P4) & _M64
        i += 8
    if i + 4 <= n:
        h = (_rotl(h ^ (int.from_bytes(data[i : i + 4], "little") * _P1 & _M64), 23) * _P2 + _P3) & _M64
        i += 4
    while i < n:
        h = (_rotl(h ^ (data[i] * _P5 & _M64), 11) * _P1) & _M64
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P3) & _M64
    return h ^ (h >> 32)


def bucket_of(user_id: str, layer: Layer, buckets: int) -> int:
    """The bucket of one user without Spark (e.g. in an online service): equal to `bucket_column`'s.

    Spark's `xxhash64(a, b, c)` is XXH64 chained: seed 42 hashes a's UTF-8 bytes, that hash seeds b's,
    and so on; the result is read as a signed long, and pmod maps it to a bucket.

    Parameters
    ----------
    user_id : str
        The user.
    layer : Layer
        Its salt and name go into the hash.
    buckets : int
        Buckets per layer.

    Returns
    -------
    int
        The bucket in `[0, buckets)`.
    """
    h = 42
    for part in (layer.salt, layer.name, user_id):
        h = _xxh64(part.encode("utf-8"), h)
    signed = h - (1 << 64) if h >= 1 << 63 else h
    return signed % buckets  # Python's % of a positive modulus is pmod


def bucket_column(user_id, layer: Layer, buckets: int):
    """Spark column: `pmod(xxhash64(salt, layer, user_id), buckets)` as int.

    Parameters
    ----------
    user_id : Column
        The user id (string).
    layer : Layer
        Its salt and name go into the hash.
    buckets : int
        Buckets per layer.

    Returns
    -------
    Column
        An int column in `[0, buckets)`.
    """
    hashed = F.xxhash64(F.lit(layer.salt), F.lit(layer.name), user_id.cast("string"))
    # pmod, not %: the hash is a signed long and a negative remainder is not a bucket. The bias of
    # 2^64 mod buckets is below 1e-17 per bucket.
    return F.pmod(hashed, F.lit(buckets).cast("long")).cast("int")


def variant_column(bucket, layer: Layer):
    """Spark column: the variant of `bucket` in `layer` (what `Layer.variant_of_bucket` returns).

    Parameters
    ----------
    bucket : Column
        The bucket number.
    layer : Layer
        Its holdout, variants and default.

    Returns
    -------
    Column
        A string column.
    """
    out = F.lit(layer.default)
    for name, ranges in reversed(layer.variants):
        for lo, hi in ranges:
            out = F.when(bucket.between(lo, hi), F.lit(name)).otherwise(out)
    for lo, hi in layer.holdout:
        out = F.when(bucket.between(lo, hi), F.lit(HOLDOUT)).otherwise(out)
    return out


def variant_of(users_df: DataFrame, spec: ExperimentSpec | Mapping[str, Any]) -> DataFrame:
    """`(user_id, layer, bucket, variant)`: every distinct user of `users_df` in every layer of `spec`.

    A pure row-wise function of (spec, user_id): no shuffle but the distinct, no state, so serving
    (`recommend --variant-by LAYER`) and the `buckets` job always agree.

    Parameters
    ----------
    users_df : DataFrame
        Any frame with a `user_id` column (duplicates are dropped).
    spec : ExperimentSpec or Mapping
        The layers; a mapping is parsed with `parse_spec` (its `buckets` key, else 100).

    Returns
    -------
    DataFrame
        `ab_buckets` rows: one per (user_id, layer); bucket int in `[0, buckets)`; variant string.
    """
    if not isinstance(spec, ExperimentSpec):
        spec = parse_spec(spec, int(spec.get("buckets", 100)))
    users = users_df.select(F.col("user_id").cast("string").alias("user_id")).filter(
        F.col("user_id").isNotNull()
    )
    users = users.distinct()
    frames = []
    for layer in spec.layers:
        bucket = bucket_column(F.col("user_id"), layer, spec.buckets)
        frames.append(
            users.select("user_id", F.lit(layer.name).alias("layer"), bucket.alias("bucket")).withColumn(
                "variant", variant_column(F.col("bucket"), layer)
            )
        )
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out.select(*BUCKET_COLUMNS)


@dataclass
class BucketsConfig(GatedConfig):
    """Assigns every user (of the users table, and of events up to --date) a bucket and a variant in each
    experiment layer; replaces ab_buckets whole, recording --date and the spec in the commit. See
    docs/experiments.md."""

    buckets: int = option(
        100, "Buckets per layer: bucket = pmod(xxhash64(salt, layer, user_id), buckets).", minimum=1
    )
    experiments: str | None = option(
        None,
        "JSON spec of the layers (salt, holdout and variant bucket ranges); default one layer 'rerank': "
        "holdout 0-9, mmr 10-54, dpp 55-99.",
    )


def run(cfg: BucketsConfig, spark, lake) -> int:
    """Write `ab_buckets` (job entry; see the config's docstring)."""
    spec = load_spec(cfg.experiments, cfg.buckets)
    if cfg.date is None:
        raise ValueError("buckets needs a date (the CLI fills in the latest day of events)")
    started = time.time()
    sources = []
    if lake.exists("events"):
        sources.append(lake.read("events").filter(F.col("dt") <= F.lit(cfg.date)).select("user_id"))
    if lake.exists("users"):
        sources.append(lake.read("users").select("user_id"))
    if not sources:
        raise UsageError(f"buckets needs users or events in lake {lake.root}")
    users = sources[0]
    for more in sources[1:]:
        users = users.unionByName(more)
    assignment = variant_of(users, spec)
    meta = {"recsys.job": "buckets", "date": str(cfg.date), "experiments": spec.to_json()}
    version = lake.overwrite(AB_BUCKETS, assignment, metadata=meta)
    counts = (
        lake.read(AB_BUCKETS).groupBy("layer", "variant").count().orderBy("layer", "variant").collect()
    )  # one row per (layer, variant)
    took = time.time() - started
    shown = ", ".join(f"{r['layer']}/{r['variant']} {r['count']}" for r in counts)
    print(f"buckets {cfg.date}: {AB_BUCKETS} version {version}: {shown} in {took:.1f}s")
    return 0
