"""Diversity-aware selection of one user's top K from their ranked candidates (pure NumPy).

Every method is a greedy loop over positions 1..K: at each step the candidates the list rules allow
(`recommend/rules.py`; already selected ones excluded) compete on a marginal value and the best one
is appended (ties: the lower index, i.e. the better ranked candidate, since candidates come sorted by
score desc, item_id asc). When no candidate is allowed the list ends early.

Relevance. The fused ranker scores (or merged recall scores) of one user are min-max scaled to
`r_i ∈ [0, 1]` (all equal: all 1), so the trade-off parameters mean the same whatever the score's
scale (a product of probabilities is tiny, a weighted sum can exceed 1).

Similarity. `S_ij = cos(v_i, v_j)` of the item vectors, `S_ii = 1`; an item without a vector is
orthogonal to every other item (its row and column are the unit vector), so S stays positive
semidefinite and such items are never penalised as duplicates. With no vectors at all S = I: MMR and
DPP then order by relevance alone (the `none` order).

- **none**: value_i = r_i (the ranker's order, under the rules).
- **MMR** with a sliding window (Carbonell & Goldstein 1998):
  value_i = λ r_i − (1 − λ) max_{j ∈ W} S_ij, where W = the last `window` selected items
  (`window <= 0`: all selected items; W empty: the max is 0). λ = 1 is the ranker's order.
- **DPP** greedy MAP (Chen, Zhang & Zhou 2018): kernel L = diag(q) S diag(q) with quality
  q_i = exp(α r_i), α = θ / (2 (1 − θ)), θ ∈ [0, 1); so log det L_Y = 2α Σ_{i∈Y} r_i + log det S_Y
  = (θ / (1 − θ)) Σ r_i + log det S_Y: θ trades relevance against the volume the selected item
  vectors span. Each step adds argmax_i log det L_{Y ∪ {i}}, computed incrementally with Chen et
  al.'s Cholesky update (O(n k) per step, O(n k²) per list): with c_i the rows of the Cholesky factor
  and d_i² the Schur complement, after selecting j, e_i = (L_ji − ⟨c_j, c_i⟩) / d_j, c_i ← [c_i, e_i],
  d_i² ← d_i² − e_i². When the best d_i² falls below `eps` (the selection already spans every
  direction the remaining items have: more items than vector dimensions) the rest of the list is
  filled by relevance under the rules, so a list is never shorter than the rules force.

References
----------
Carbonell, J. and Goldstein, J. (1998). The use of MMR, diversity-based reranking for reordering
documents and producing summaries. SIGIR.
Chen, L., Zhang, G. and Zhou, H. (2018). Fast Greedy MAP Inference for Determinantal Point Process
to Improve Recommendation Diversity. NeurIPS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Checker = Callable[[Sequence[int]], np.ndarray]
METHODS = ("none", "mmr", "dpp")


def relevance(scores: np.ndarray) -> np.ndarray:
    """Min-max scaled scores of one user's candidates.

    Parameters
    ----------
    scores : numpy.ndarray
        `(n,)` scores.

    Returns
    -------
    numpy.ndarray
        `(n,)` float64 in [0, 1]; all ones when every score is equal.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    span = s.max() - s.min()
    return np.ones_like(s) if span <= 0 else (s - s.min()) / span


def cosine_similarity(vectors: np.ndarray | None, n: int) -> np.ndarray:
    """Item-item cosine similarity; rows without a vector (all zeros or NaN) are orthogonal to all.

    Parameters
    ----------
    vectors : numpy.ndarray or None
        `(n, dim)` item vectors, or None (no vectors: the identity).
    n : int
        Number of candidates.

    Returns
    -------
    numpy.ndarray
        `(n, n)` symmetric PSD matrix with unit diagonal.
    """
    if vectors is None or n == 0:
        return np.eye(n)
    v = np.nan_to_num(np.asarray(vectors, dtype=np.float64))
    norms = np.linalg.norm(v, axis=1)
    known = norms > 1e-12
    unit = np.zeros_like(v)
    unit[known] = v[known] / norms[known, None]
    sim = unit @ unit.T
    sim[~known, :] = 0.0
    sim[:, ~known] = 0.0
    np.fill_diagonal(sim, 1.0)
    return sim


def _everything(n: int) -> Checker:
    allowed = np.ones(n, dtype=bool)
    return lambda selected: allowed


def _pick(values: np.ndarray, candidates: np.ndarray) -> int | None:
    """Index of the best value among `candidates` (bool mask), lowest index on ties; None if empty."""
    if not candidates.any():
        return None
    masked = np.where(candidates, values, -np.inf)
    return int(np.argmax(masked))


def by_score(rel: np.ndarray, k: int, allowed: Checker | None = None) -> list[int]:
    """The top `k` by relevance under the rules (`--diversity none`).

    Parameters
    ----------
    rel : numpy.ndarray
        `(n,)` relevance.
    k : int
        List length wanted.
    allowed : callable, optional
        `selected -> (n,) bool` rule checker (default: no rules).

    Returns
    -------
    list of int
        Selected indices in list order, at most `k`.
    """
    n = len(rel)
    allowed = allowed or _everything(n)
    free = np.ones(n, dtype=bool)
    selected: list[int] = []
    while len(selected) < min(k, n):
        j = _pick(rel, free & allowed(selected))
        if j is None:
            break
        selected.append(j)
        free[j] = False
    return selected


def mmr(
    rel: np.ndarray, sim: np.ndarray, k: int, lam: float, window: int, allowed: Checker | None = None
) -> list[int]:
    """Maximal marginal relevance with a sliding window (formula in the module docstring).

    Parameters
    ----------
    rel : numpy.ndarray
        `(n,)` relevance in [0, 1].
    sim : numpy.ndarray
        `(n, n)` item similarity.
    k : int
        List length wanted.
    lam : float
        λ in [0, 1]: weight of relevance against redundancy.
    window : int
        Redundancy is the max similarity to the last `window` selected items (<= 0: all of them).
    allowed : callable, optional
        Rule checker (default: no rules).

    Returns
    -------
    list of int
        Selected indices in list order, at most `k`.
    """
    n = len(rel)
    allowed = allowed or _everything(n)
    free = np.ones(n, dtype=bool)
    selected: list[int] = []
    while len(selected) < min(k, n):
        recent = selected[-window:] if window > 0 else selected
        redundancy = sim[:, recent].max(axis=1) if recent else np.zeros(n)
        j = _pick(lam * rel - (1.0 - lam) * redundancy, free & allowed(selected))
        if j is None:
            break
        selected.append(j)
        free[j] = False
    return selected


def dpp_kernel(rel: np.ndarray, sim: np.ndarray, theta: float) -> np.ndarray:
    """L = diag(q) S diag(q), q = exp(α r), α = θ / (2 (1 − θ)).

    Parameters
    ----------
    rel : numpy.ndarray
        `(n,)` relevance.
    sim : numpy.ndarray
        `(n, n)` PSD similarity.
    theta : float
        θ in [0, 1).

    Returns
    -------
    numpy.ndarray
        `(n, n)` kernel.
    """
    alpha = theta / (2.0 * (1.0 - theta))
    q = np.exp(alpha * np.asarray(rel, dtype=np.float64))
    return q[:, None] * sim * q[None, :]


def dpp(
    rel: np.ndarray,
    sim: np.ndarray,
    k: int,
    theta: float,
    allowed: Checker | None = None,
    eps: float = 1e-10,
) -> list[int]:
    """Fast greedy MAP inference of a DPP (Chen et al. 2018, Algorithm 1) under the list rules.

    Parameters
    ----------
    rel : numpy.ndarray
        `(n,)` relevance in [0, 1].
    sim : numpy.ndarray
        `(n, n)` PSD similarity with unit diagonal.
    k : int
        List length wanted.
    theta : float
        θ in [0, 1): relevance against diversity (formula in the module docstring).
    allowed : callable, optional
        Rule checker (default: no rules).
    eps : float
        Smallest Schur complement d² still counted as adding a new direction.

    Returns
    -------
    list of int
        Selected indices in list order, at most `k`: the DPP's greedy picks, then (once d² < eps for
        every allowed item) the rest by relevance under the rules.
    """
    n = len(rel)
    allowed = allowed or _everything(n)
    kernel = dpp_kernel(rel, sim, theta)
    k = min(k, n)
    c = np.zeros((k, n))
    d2 = np.diag(kernel).copy()
    free = np.ones(n, dtype=bool)
    selected: list[int] = []
    while len(selected) < k:
        ok = free & allowed(selected)
        j = _pick(d2, ok)
        if j is None:
            return selected
        if d2[j] < eps:  # degenerate: nothing left adds volume; finish by relevance
            break
        m = len(selected)
        selected.append(j)
        free[j] = False
        if len(selected) == k:
            return selected
        dj = np.sqrt(d2[j])
        e = (kernel[j, :] - c[:m, j] @ c[:m, :]) / dj
        c[m, :] = e
        d2 = d2 - e * e
    while len(selected) < k:
        j = _pick(rel, free & allowed(selected))
        if j is None:
            break
        selected.append(j)
        free[j] = False
    return selected


def select(
    method: str,
    scores: np.ndarray,
    vectors: np.ndarray | None,
    k: int,
    allowed: Checker | None = None,
    mmr_lambda: float = 0.85,
    mmr_window: int = 10,
    dpp_theta: float = 0.7,
) -> list[int]:
    """One user's list: relevance from `scores`, similarity from `vectors`, then `method`.

    Parameters
    ----------
    method : {"none", "mmr", "dpp"}
        Selection method.
    scores : numpy.ndarray
        `(n,)` candidate scores, candidates sorted by score desc then item id asc.
    vectors : numpy.ndarray or None
        `(n, dim)` item vectors (zero rows: no vector), or None.
    k : int
        List length wanted.
    allowed : callable, optional
        Rule checker.
    mmr_lambda, mmr_window, dpp_theta
        The methods' parameters (see `mmr`, `dpp`).

    Returns
    -------
    list of int
        Selected indices in list order.
    """
    rel = relevance(scores)
    if method == "none":
        return by_score(rel, k, allowed)
    sim = cosine_similarity(vectors, len(rel))
    if method == "mmr":
        return mmr(rel, sim, k, mmr_lambda, mmr_window, allowed)
    if method == "dpp":
        return dpp(rel, sim, k, dpp_theta, allowed)
    raise ValueError(f"unknown diversity method {method!r}; known {METHODS}")
