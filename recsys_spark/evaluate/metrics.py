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

- Beyond-accuracy metrics of a channel's lists, over a given set of users U (the evaluated users),
  with top-K(u) as above (de-duplicated, then cut):
  - Coverage@K = |∪_{u ∈ U} top-K(u)| / catalogue size (NaN for an empty catalogue).
  - ILD@K (intra-list diversity): per user, over the m items of top-K(u) that have a vector,
    ILD_u = 1 − (2 / (m(m − 1))) Σ_{i<j} cos(v_i, v_j) (a zero vector has cosine 0 with everything);
    users with m < 2 are skipped; the mean over the others (NaN if none).
  - Category ILD@K: per user, over the m items of top-K(u) with a known category, the share of the
    m(m − 1)/2 unordered pairs whose categories differ; users with m < 2 skipped; mean over the others.
  - Novelty@K: per user, the mean self-information (1/|top-K(u)|) Σ_{i ∈ top-K(u)} −log2 p(i) with
    p(i) = (n_i + 1) / (N + 1), n_i = users who interacted with i before the day (0 if never), N = users
    with any interaction before it (so 0 < p(i) ≤ 1, no log(0), and an item everybody had scores 0);
    users with an empty list skipped; mean over the others.

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
C.-N. Ziegler, S. M. McNee, J. A. Konstan, G. Lausen. "Improving Recommendation Lists Through Topic
Diversification." WWW 2005 (intra-list diversity).
T. Zhou et al. "Solving the apparent diversity-accuracy dilemma of recommender systems." PNAS 107(10),
2010 (novelty as mean self-information −log2 of item popularity).
P. Castells, S. Vargas. "Rank and Relevance in Novelty and Diversity Metrics for Recommender Systems."
RecSys 2011 (novelty and diversity as expected item novelty / pairwise distance over a list).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

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


# -- beyond accuracy ----------------------------------------------------------------------------
def _user_tops(
    ranked_lists: Mapping[Hashable, Sequence[Hashable]], users: Iterable[Hashable], k: int
) -> list[list[Hashable]]:
    """top-K(u) of every user of `users` (a user missing from `ranked_lists` has an empty list)."""
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return [_dedupe(ranked_lists.get(user, ()), int(k)) for user in users]


def coverage(
    ranked_lists: Mapping[Hashable, Sequence[Hashable]],
    users: Iterable[Hashable],
    catalogue_size: int,
    k: int,
) -> float:
    """Catalogue coverage@K: distinct items in the users' top-K lists / catalogue size.

    Parameters
    ----------
    ranked_lists : mapping of user to sequence of ids
        Per user, the recommended ids best first.
    users : iterable of hashable
        The users whose lists count (a user without a list adds nothing).
    catalogue_size : int
        Number of items that could be recommended.
    k : int
        Cut-off K, >= 1.

    Returns
    -------
    float
        |∪_u top-K(u)| / catalogue_size, NaN when the catalogue is empty.
    """
    listed = {item for top in _user_tops(ranked_lists, users, k) for item in top}
    return len(listed) / catalogue_size if catalogue_size > 0 else math.nan


def intra_list_diversity(
    ranked_lists: Mapping[Hashable, Sequence[Hashable]],
    users: Iterable[Hashable],
    vectors: Mapping[Hashable, Sequence[float]],
    k: int,
) -> float:
    """ILD@K: 1 − mean pairwise cosine similarity of the item vectors in a top-K list, averaged over users.

    Items without a vector are left out of their list's pairs; users with fewer than two items with a
    vector are skipped. A zero vector has cosine 0 with every vector.

    Parameters
    ----------
    ranked_lists : mapping of user to sequence of ids
        Per user, the recommended ids best first.
    users : iterable of hashable
        The users to average over.
    vectors : mapping of id to vector
        Item embeddings (any length, the same for all).
    k : int
        Cut-off K, >= 1.

    Returns
    -------
    float
        Mean over users of 1 − (2 / (m(m − 1))) Σ_{i<j} cos(v_i, v_j); NaN when no user has two items.

    References
    ----------
    C.-N. Ziegler et al. "Improving Recommendation Lists Through Topic Diversification." WWW 2005.
    """
    unit: dict[Hashable, np.ndarray] = {}
    values = []
    for top in _user_tops(ranked_lists, users, k):
        rows = []
        for item in top:
            if item not in vectors:
                continue
            if item not in unit:
                v = np.asarray(vectors[item], dtype=np.float64)
                norm = np.linalg.norm(v)
                unit[item] = v / norm if norm > 0 else np.zeros_like(v)
            rows.append(unit[item])
        m = len(rows)
        if m < 2:
            continue
        matrix = np.stack(rows)
        gram = matrix @ matrix.T
        pair_sum = (gram.sum() - np.trace(gram)) / 2.0
        values.append(1.0 - pair_sum / (m * (m - 1) / 2.0))
    return float(np.mean(values)) if values else math.nan


def category_diversity(
    ranked_lists: Mapping[Hashable, Sequence[Hashable]],
    users: Iterable[Hashable],
    categories: Mapping[Hashable, Hashable | None],
    k: int,
) -> float:
    """Category ILD@K: the share of item pairs of a top-K list whose categories differ, averaged over users.

    Items without a category (missing or None) are left out; users with fewer than two categorised items
    are skipped.

    Parameters
    ----------
    ranked_lists : mapping of user to sequence of ids
        Per user, the recommended ids best first.
    users : iterable of hashable
        The users to average over.
    categories : mapping of id to category
        Each item's category.
    k : int
        Cut-off K, >= 1.

    Returns
    -------
    float
        Mean over users of |{i<j : c_i ≠ c_j}| / (m(m − 1)/2); NaN when no user has two categorised items.

    References
    ----------
    C.-N. Ziegler et al. "Improving Recommendation Lists Through Topic Diversification." WWW 2005
    (ILD with a taxonomy-based distance; here the distance is 1 for different categories, else 0).
    """
    values = []
    for top in _user_tops(ranked_lists, users, k):
        cats = [categories[item] for item in top if categories.get(item) is not None]
        m = len(cats)
        if m < 2:
            continue
        counts = np.array(list(Counter(cats).values()), dtype=np.float64)
        same = float(np.sum(counts * (counts - 1) / 2.0))
        pairs = m * (m - 1) / 2.0
        values.append((pairs - same) / pairs)
    return float(np.mean(values)) if values else math.nan


def novelty(
    ranked_lists: Mapping[Hashable, Sequence[Hashable]],
    users: Iterable[Hashable],
    item_users: Mapping[Hashable, int],
    n_users: int,
    k: int,
) -> float:
    """Novelty@K: mean self-information −log2 p(i) of the items in a top-K list, averaged over users.

    p(i) = (n_i + 1) / (N + 1) with n_i = `item_users.get(i, 0)` (users who interacted with i before the
    day) and N = `n_users` (users with any interaction before it): never 0, and 1 for an item every user
    had. Users with an empty list are skipped.

    Parameters
    ----------
    ranked_lists : mapping of user to sequence of ids
        Per user, the recommended ids best first.
    users : iterable of hashable
        The users to average over.
    item_users : mapping of id to int
        n_i per item (absent: 0).
    n_users : int
        N, >= every n_i.
    k : int
        Cut-off K, >= 1.

    Returns
    -------
    float
        Mean over users of (1/|top-K(u)|) Σ_i −log2 p(i) (bits); NaN when every list is empty.

    References
    ----------
    T. Zhou et al. "Solving the apparent diversity-accuracy dilemma of recommender systems." PNAS 2010.
    P. Castells, S. Vargas. "Rank and Relevance in Novelty and Diversity Metrics for Recommender
    Systems." RecSys 2011.
    """
    if n_users < 0:
        raise ValueError(f"n_users must be >= 0, got {n_users}")
    values = []
    for top in _user_tops(ranked_lists, users, k):
        if not top:
            continue
        counts = np.array([item_users.get(item, 0) for item in top], dtype=np.float64)
        if (counts < 0).any() or (counts > n_users).any():
            raise ValueError("every item's user count must lie in [0, n_users]")
        values.append(float(np.mean(-np.log2((counts + 1.0) / (n_users + 1.0)))))
    return float(np.mean(values)) if values else math.nan


@dataclass
class ItemFacts:
    """What the beyond-accuracy metrics know about the listed items (all bounded by the lists).

    Parameters
    ----------
    catalogue_size : int
        Items that could be recommended (coverage's denominator).
    vectors : mapping of id to vector, optional
        Item embeddings of the listed items (ILD); None: no ILD.
    categories : mapping of id to category, optional
        Categories of the listed items (category ILD); None: no category ILD.
    item_users : mapping of id to int
        n_i of the listed items (novelty).
    n_users : int
        N (novelty).
    """

    catalogue_size: int
    vectors: Mapping[Hashable, Sequence[float]] | None
    categories: Mapping[Hashable, Hashable | None] | None
    item_users: Mapping[Hashable, int]
    n_users: int


def beyond_accuracy_metrics(
    ranked_lists: Mapping[Hashable, Sequence[Hashable]],
    users: Collection[Hashable],
    ks: Sequence[int],
    facts: ItemFacts,
) -> dict[str, float]:
    """`coverage@K`, `ild@K`, `category_ild@K`, `novelty@K` per K, and `coverage` (= coverage@max K).

    Without vectors (categories) the `ild@K` (`category_ild@K`) keys are absent.

    Parameters
    ----------
    ranked_lists : mapping of user to sequence of ids
        Per user, the recommended ids best first.
    users : collection of hashable
        The evaluated users.
    ks : sequence of int
        Cut-offs K, each >= 1.
    facts : ItemFacts
        Catalogue size, vectors, categories and popularity of the listed items.

    Returns
    -------
    dict of str to float
        The metrics, ordered by K.
    """
    ks = _check_ks(ks)
    out: dict[str, float] = {}
    for k in ks:
        out[f"coverage@{k}"] = coverage(ranked_lists, users, facts.catalogue_size, k)
        if facts.vectors is not None:
            out[f"ild@{k}"] = intra_list_diversity(ranked_lists, users, facts.vectors, k)
        if facts.categories is not None:
            out[f"category_ild@{k}"] = category_diversity(ranked_lists, users, facts.categories, k)
        out[f"novelty@{k}"] = novelty(ranked_lists, users, facts.item_users, facts.n_users, k)
    out["coverage"] = out[f"coverage@{max(ks)}"]
    return out
