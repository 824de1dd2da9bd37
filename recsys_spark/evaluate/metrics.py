"""Exact offline metrics in NumPy: top-K ranking metrics per user, AUC, user-averaged AUC, log-loss.

These numbers end up in `_reports/evaluation/<date>.json`, which users' own tooling compares across
days and models, so every formula is written down here (and in docs/evaluate.md) and follows it
exactly — no approximations (binned AUC, sampled ranks), no silent conventions:

- Top-K metrics, per user, with `ranked` the user's recommended ids (best first) and `truth` the set of
  relevant ids. The ranked list is first de-duplicated, keeping each id's first occurrence, and then
  cut to its first K entries (`top-K`, which may hold fewer than K ids); ranks r = 1, 2, ... are
  positions in that de-duplicated list.
  - Recall@K   = |top-K ∩ truth| / |truth|
  - HitRate@K  = 1 if top-K ∩ truth is non-empty, else 0
  - NDCG@K     = DCG@K / IDCG@K with binary gains:
    DCG@K = Σ_{r ≤ K, item at r ∈ truth} 1 / log2(r + 1),  IDCG@K = Σ_{r=1..min(K, |truth|)} 1 / log2(r + 1)
  `topk_metrics` averages each over users (every user weighs the same); users whose truth is empty
  are skipped (their metrics are undefined), users with an empty or missing ranked list count as 0.
- AUC: the Mann–Whitney statistic, P(score of a random positive > score of a random negative) with
  ties counted 1/2, computed from average ranks:
  AUC = (Σ_{positives} rank − n₊(n₊ + 1)/2) / (n₊ · n₋). NaN when only one class is present.
- uAUC (user-averaged AUC): Σ_u n_u · AUC_u / Σ_u n_u over the users u having both a positive and a
  negative sample, with n_u = u's number of samples (impressions). NaN when no user has both.
- Log-loss: −mean(y·log p + (1 − y)·log(1 − p)) with p clipped to [eps, 1 − eps] (in float64).

Labels are 0/1 (bools accepted); anything else raises, as do NaN scores: a metric computed on
mislabelled data is worse than no metric.

References
----------
K. Järvelin, J. Kekäläinen. "Cumulated Gain-Based Evaluation of IR Techniques." ACM TOIS 20(4), 2002
(NDCG).
H. B. Mann, D. R. Whitney. "On a Test of Whether One of Two Random Variables is Stochastically
Larger than the Other." Annals of Mathematical Statistics 18(1), 1947 (AUC as a rank statistic).
G. Zhou et al. "Deep Interest Network for Click-Through Rate Prediction." KDD 2018 (user-weighted
AUC, impression-weighted as here).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence

import numpy as np

DEFAULT_KS: tuple[int, ...] = (10, 50)
METRIC_NAMES: tuple[str, ...] = ("recall", "ndcg", "hitrate")


# -- top-K ranking metrics ----------------------------------------------------------------------
def _dedupe(ranked: Iterable[Hashable], limit: int) -> list[Hashable]:
    """The first `limit` distinct ids of `ranked`, in order (each id at its first occurrence)."""
    seen: set[Hashable] = set()
    out: list[Hashable] = []
    for item in ranked:
        if item in seen:
            continue
        seen.add(item)
        out.append(item)
        if len(out) == limit:
            break
    return out


def _discounts(n: int) -> np.ndarray:
    """1 / log2(r + 1) for r = 1..n."""
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty list of integers >= 1, got {ks}")
    return ks


def _hits(ranked: Iterable[Hashable], truth: Collection[Hashable], width: int) -> np.ndarray:
    """Boolean relevance of the first `width` distinct ranked ids, padded with False."""
    top = _dedupe(ranked, width)
    row = np.zeros(width, dtype=bool)
    row[: len(top)] = [item in truth for item in top]
    return row


def user_topk_metrics(
    ranked: Iterable[Hashable], truth: Collection[Hashable], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Recall@K, NDCG@K and HitRate@K of one user (see the module docstring); `truth` must be non-empty.

    Parameters
    ----------
    ranked : iterable of hashable
        Recommended ids, best first (duplicates after the first occurrence are ignored).
    truth : collection of hashable
        Relevant ids, non-empty.
    ks : sequence of int
        Cut-offs K, each >= 1.

    Returns
    -------
    dict of str to float
        `recall@K`, `ndcg@K`, `hitrate@K` for every K.

    Raises
    ------
    ValueError
        If `truth` is empty or a K is invalid.
    """
    ks = _check_ks(ks)
    truth = set(truth)
    if not truth:
        raise ValueError(
            "truth must be non-empty: the metrics are undefined for a user with nothing relevant"
        )
    return topk_metrics([ranked], [truth], ks)


def topk_metrics(
    ranked_lists: Mapping[Hashable, Sequence[Hashable]] | Sequence[Sequence[Hashable]],
    truths: Mapping[Hashable, Collection[Hashable]] | Sequence[Collection[Hashable]],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """`{"recall@K": mean, "ndcg@K": mean, "hitrate@K": mean}` for every K in `ks`, averaged over users.

    Either two mappings keyed by user (`topk_lists` returns one): the users are those of `truths`, and a
    user missing from `ranked_lists` has an empty list (a channel that returns nothing for a user scores 0
    for that user, it is not excused); or two equally long sequences, one entry per user.
    Users with an empty truth set are skipped. With no users left, every metric is NaN.
    Keys are ordered by K, then recall, ndcg, hitrate.

    Parameters
    ----------
    ranked_lists : mapping or sequence
        Per user, the recommended ids best first.
    truths : mapping or sequence
        Per user, the set of relevant ids.
    ks : sequence of int
        Cut-offs K, each >= 1.

    Returns
    -------
    dict of str to float
        Mean `recall@K`, `ndcg@K`, `hitrate@K` over users with a non-empty truth (NaN if none).
    """
    ks = _check_ks(ks)
    if isinstance(truths, Mapping):
        if not isinstance(ranked_lists, Mapping):
            raise TypeError("truths is a mapping by user, so ranked_lists must be one too")
        pairs = [(ranked_lists.get(user, ()), truth) for user, truth in truths.items()]
    else:
        if isinstance(ranked_lists, Mapping):
            raise TypeError("ranked_lists is a mapping by user, so truths must be one too")
        if len(ranked_lists) != len(truths):
            raise ValueError(f"{len(ranked_lists)} ranked lists but {len(truths)} truth sets")
        pairs = list(zip(ranked_lists, truths))

    width = max(ks)
    truth_sets = [set(t) for _, t in pairs]
    kept = [i for i, t in enumerate(truth_sets) if t]
    result: dict[str, float] = {}
    if not kept:
        for k in ks:
            result.update({f"{name}@{k}": math.nan for name in METRIC_NAMES})
        return result

    hits = np.stack([_hits(pairs[i][0], truth_sets[i], width) for i in kept])  # [users, width]
    n_truth = np.array([len(truth_sets[i]) for i in kept], dtype=np.float64)
    disc = _discounts(width)
    ideal_cum = np.cumsum(disc)  # ideal_cum[m - 1] = IDCG with m relevant items at the top
    for k in ks:
        top = hits[:, :k]
        n_hit = top.sum(axis=1)
        dcg = top @ disc[:k]
        idcg = ideal_cum[np.minimum(k, n_truth).astype(np.int64) - 1]
        result[f"recall@{k}"] = float(np.mean(n_hit / n_truth))
        result[f"ndcg@{k}"] = float(np.mean(dcg / idcg))
        result[f"hitrate@{k}"] = float(np.mean(n_hit > 0))
    return result


# -- binary classification ----------------------------------------------------------------------
def _binary_labels(labels) -> np.ndarray:
    y = np.asarray(labels, dtype=np.float64).ravel()
    if y.size and not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    return y


def _scores(scores, n: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.shape[0] != n:
        raise ValueError(f"{n} labels but {s.shape[0]} scores")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s


def _grouped_auc(groups: np.ndarray, y: np.ndarray, s: np.ndarray):
    """Per-group AUC with tied scores at their average rank, vectorised over all groups at once.

    Returns `(auc, n, n_pos)` per group id 0..G-1; `auc` is NaN for a group lacking a class.
    """
    n_groups = int(groups.max()) + 1 if groups.size else 0
    order = np.lexsort((s, groups))  # by group, then score
    g, ss, yy = groups[order], s[order], y[order]
    pos = np.arange(g.size, dtype=np.float64)
    new_group = np.empty(g.size, dtype=bool)
    new_group[:1] = True
    new_group[1:] = g[1:] != g[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, pos, 0.0))
    within = pos - group_start + 1.0  # 1-based rank inside the group
    new_tie = new_group.copy()
    new_tie[1:] |= ss[1:] != ss[:-1]
    tie_id = np.cumsum(new_tie) - 1
    avg_rank = (np.bincount(tie_id, weights=within) / np.bincount(tie_id))[tie_id]
    n = np.bincount(g, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(g, weights=yy, minlength=n_groups)
    n_neg = n - n_pos
    rank_sum = np.bincount(g, weights=avg_rank * yy, minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc, n, n_pos


def auc(labels, scores) -> float:
    """Area under the ROC curve (Mann–Whitney, ties count 1/2); NaN when only one class is present.

    Parameters
    ----------
    labels : array_like
        `(n,)` 0/1 labels (bools accepted).
    scores : array_like
        `(n,)` scores, no NaN.

    Returns
    -------
    float
        AUC in [0, 1], or NaN.
    """
    y = _binary_labels(labels)
    s = _scores(scores, y.size)
    if y.size == 0:
        return math.nan
    value, _, _ = _grouped_auc(np.zeros(y.size, dtype=np.int64), y, s)
    return float(value[0])


def uauc(users, labels, scores) -> float:
    """Impression-weighted mean of per-user AUC over users having both classes (weight = user's samples).

    NaN when no user has both a positive and a negative sample.

    Parameters
    ----------
    users : array_like
        `(n,)` user id of each sample.
    labels : array_like
        `(n,)` 0/1 labels.
    scores : array_like
        `(n,)` scores, no NaN.

    Returns
    -------
    float
        Σ_u n_u · AUC_u / Σ_u n_u, or NaN.
    """
    y = _binary_labels(labels)
    s = _scores(scores, y.size)
    u = np.asarray(users).ravel()
    if u.shape[0] != y.size:
        raise ValueError(f"{y.size} labels but {u.shape[0]} user ids")
    if y.size == 0:
        return math.nan
    _, groups = np.unique(u, return_inverse=True)
    per_user, n, _ = _grouped_auc(groups.astype(np.int64).ravel(), y, s)
    valid = ~np.isnan(per_user)
    if not valid.any():
        return math.nan
    return float(np.sum(n[valid] * per_user[valid]) / np.sum(n[valid]))


def logloss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy with probabilities clipped to [eps, 1 − eps]; NaN for no samples.

    Parameters
    ----------
    labels : array_like
        `(n,)` 0/1 labels.
    probs : array_like
        `(n,)` predicted probabilities.
    eps : float
        Clipping bound.

    Returns
    -------
    float
        −mean(y·log p + (1 − y)·log(1 − p)), or NaN.
    """
    y = _binary_labels(labels)
    p = _scores(probs, y.size)
    if y.size == 0:
        return math.nan
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))
