"""A/B readout of the served lists: every top-K metric per variant, with 95% bootstrap intervals.

For one experiment layer, the evaluated users are split by their variant (`experiments.buckets`,
the spec `ab_buckets` was written with). For each variant v with users U_v and a per-user metric
m_u (recall@K, NDCG@K, HitRate@K of the `final` lists, `metrics.user_topk_metrics`):

- mean_v = (1/|U_v|) Σ_{u ∈ U_v} m_u;
- its 95% interval: the 2.5% and 97.5% percentiles of the means of B resamples of U_v drawn with
  replacement (percentile bootstrap over users; users, not impressions, are the randomisation unit);
- against the reference variant r (the layer's holdout, else its default): diff = mean_v − mean_r,
  with the percentiles of B differences of independently resampled means; significant when that
  interval excludes 0 (a two-sided test at 5%).

Resamples are drawn by `numpy.random.default_rng(seed)` (reproducible); memory is B means per metric,
the users' values are those `evaluate` already holds (at most `--max-users`).

References
----------
B. Efron, R. Tibshirani. "An Introduction to the Bootstrap." Chapman & Hall, 1993 (percentile
intervals). R. Kohavi et al. "Controlled experiments on the web: survey and practical guide."
Data Mining and Knowledge Discovery 18(1), 2009 (users as the unit, significance of the difference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recsys_spark.evaluate.metrics import user_topk_metrics


def bootstrap_means(values: Sequence[float], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `resamples` resamples of `values` drawn with replacement.

    Parameters
    ----------
    values : sequence of float
        `(n,)` per-user values, n >= 1.
    resamples : int
        B >= 1.
    rng : numpy.random.Generator
        The random source.

    Returns
    -------
    numpy.ndarray
        `(B,)` float64 means.
    """
    x = np.asarray(values, dtype=np.float64)
    picks = rng.integers(0, len(x), size=(resamples, len(x)))
    return x[picks].mean(axis=1)


def interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of `draws`.

    Parameters
    ----------
    draws : numpy.ndarray
        `(B,)` bootstrap statistics.
    level : float
        Coverage, e.g. 0.95.

    Returns
    -------
    tuple of float
        (low, high) percentiles.
    """
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def variant_readout(
    lists: Mapping[str, Sequence[str]],
    truth: Mapping[str, set],
    variant: Mapping[str, str],
    reference: str,
    ks: Sequence[int],
    resamples: int = 1000,
    seed: int = 7,
) -> dict:
    """Per variant: users, and for every metric its mean, 95% interval and difference to `reference`.

    Parameters
    ----------
    lists : mapping of str to sequence of str
        Per user, the served list (best first); a user without one scores 0.
    truth : mapping of str to set
        Per user, the relevant items; users with an empty set are skipped.
    variant : mapping of str to str
        Per user, their variant in the layer; users without one are skipped.
    reference : str
        The variant the others are compared with (the holdout).
    ks : sequence of int
        Cut-offs.
    resamples : int
        Bootstrap resamples B.
    seed : int
        Seed of the resampling.

    Returns
    -------
    dict
        `{variant: {"users": n, "metrics": {name: {"mean", "low", "high"}}, "vs_<reference>":
        {name: {"diff", "low", "high", "significant"}}}}` (no comparison for the reference itself or
        when it has no users).
    """
    rng = np.random.default_rng(seed)
    per: dict[str, dict[str, list[float]]] = {}
    for user, relevant in truth.items():
        if not relevant or user not in variant:
            continue
        values = user_topk_metrics(lists.get(user, ()), relevant, ks)
        bucket = per.setdefault(variant[user], {})
        for name, value in values.items():
            bucket.setdefault(name, []).append(value)
    draws: dict[str, dict[str, np.ndarray]] = {
        v: {name: bootstrap_means(vals, resamples, rng) for name, vals in metrics.items()}
        for v, metrics in sorted(per.items())
    }
    out: dict[str, dict] = {}
    for v, metrics in sorted(per.items()):
        entry: dict = {"users": len(next(iter(metrics.values())))}
        entry["metrics"] = {
            name: {"mean": float(np.mean(vals)), **dict(zip(("low", "high"), interval(draws[v][name])))}
            for name, vals in metrics.items()
        }
        if v != reference and reference in per:
            comparison = {}
            for name, vals in metrics.items():
                diff = draws[v][name] - draws[reference][name]
                low, high = interval(diff)
                comparison[name] = {
                    "diff": float(np.mean(vals) - np.mean(per[reference][name])),
                    "low": low,
                    "high": high,
                    "significant": bool(low > 0 or high < 0),
                }
            entry[f"vs_{reference}"] = comparison
        out[v] = entry
    return out
