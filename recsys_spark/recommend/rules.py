"""Business rules of a served list, enforced while the list is built (not filtered afterwards).

Two rules, both checked against the positions already filled:

- **category cap**: in any `window` consecutive positions at most `max_same_category` items share a
  category (`window = 6, max_same_category = 2`: no three of one category among six neighbours);
- **author spacing**: two adjacent positions never hold items of the same author.

An item with no category (or no author) is not constrained by that rule: "unknown" is no category
whose items could crowd a screen. The rerankers call `allowed` before every pick and take the best
remaining item it allows (greedy). When no remaining item keeps every rule the list ends there,
shorter than K: the rules are hard constraints, and a list padded with violations would break the
promise the rules make to authors and users (the rerank job logs how many lists ended early).

The rules need only the last `window - 1` categories and the last author, so one check is O(n) in
the user's candidates (vectorised NumPy) and a whole list O(n K).

References
----------
Standard slate constraints of feed recommenders (e.g. "no more than k of a category per screen");
the greedy constrained selection follows the MMR / DPP greedy loop of `recommend/diversity.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ListRules:
    """The two list rules.

    Parameters
    ----------
    max_same_category : int
        Items of one category allowed in any `window` consecutive positions (<= 0: no category rule).
    window : int
        Width of the sliding window of the category rule (>= 1).
    distinct_adjacent_authors : bool
        Forbid two items of one author next to each other.
    """

    max_same_category: int = 3
    window: int = 6
    distinct_adjacent_authors: bool = True

    def allowed(self, selected: Sequence[int], categories: np.ndarray, authors: np.ndarray) -> np.ndarray:
        """Which candidates may take the next position after `selected`.

        Parameters
        ----------
        selected : sequence of int
            Indices (into the candidate arrays) of the positions filled so far, in order.
        categories : numpy.ndarray
            `(n,)` object array of category ids, None for unknown.
        authors : numpy.ndarray
            `(n,)` object array of author ids, None for unknown.

        Returns
        -------
        numpy.ndarray
            `(n,)` bool: True where appending the candidate keeps every rule (selected items are not
            excluded here; the caller masks them).
        """
        n = len(categories)
        ok = np.ones(n, dtype=bool)
        if self.max_same_category > 0 and selected:
            # Only windows that contain the new position can break: the last window - 1 picks + it.
            recent = [categories[j] for j in selected[-(self.window - 1) :]] if self.window > 1 else []
            counts: dict[object, int] = {}
            for c in recent:
                if c is not None:
                    counts[c] = counts.get(c, 0) + 1
            full = {c for c, m in counts.items() if m + 1 > self.max_same_category}
            if full:
                ok &= ~np.fromiter((c in full for c in categories), dtype=bool, count=n)
        if self.distinct_adjacent_authors and selected:
            last = authors[selected[-1]]
            if last is not None:
                ok &= ~np.fromiter((a == last for a in authors), dtype=bool, count=n)
        return ok

    def checker(self, categories: np.ndarray, authors: np.ndarray) -> Callable[[Sequence[int]], np.ndarray]:
        """`allowed` bound to one user's candidates, the form the rerankers take.

        Parameters
        ----------
        categories, authors : numpy.ndarray
            `(n,)` object arrays, as for `allowed`.

        Returns
        -------
        callable
            `selected -> (n,) bool`.
        """
        return lambda selected: self.allowed(selected, categories, authors)


def no_rules(n: int) -> Callable[[Sequence[int]], np.ndarray]:
    """A checker that allows everything (`--max-same-category 0` and no author rule).

    Parameters
    ----------
    n : int
        Number of candidates.

    Returns
    -------
    callable
        `selected -> (n,) bool`, all True.
    """
    everything = np.ones(n, dtype=bool)
    return lambda selected: everything


def reserved_positions(k: int, slots: int) -> list[int]:
    """0-based positions reserved for new items: evenly spaced, p_j = round((j + 1) k / (slots + 1)) − 1.

    Parameters
    ----------
    k : int
        List length.
    slots : int
        Reserved positions wanted (capped at k).

    Returns
    -------
    list of int
        Sorted distinct positions in [0, k); e.g. k = 50, slots = 2: [16, 32]; k = 10, slots = 1: [4].
    """
    slots = max(0, min(int(slots), int(k)))
    positions = sorted({min(k - 1, max(0, round((j + 1) * k / (slots + 1)) - 1)) for j in range(slots)})
    # Rounding may merge two positions when slots is close to k: fill the gap with the next free ones.
    free = (p for p in range(k) if p not in positions)
    while len(positions) < slots:
        positions = sorted({*positions, next(free)})
    return positions


def with_new_item_slots(
    checker: Callable[[Sequence[int]], np.ndarray], is_new: np.ndarray, positions: Sequence[int]
) -> Callable[[Sequence[int]], np.ndarray]:
    """A checker that, at each reserved position, allows only new items (when the rules allow one).

    Item cold start: a new item has no clicks, so the ranker and the CF channels rank it low; the
    reserved positions give the user's best new candidates (by the reranker's own marginal value,
    so they compete among themselves) a place. Outside them new items compete as usual; at a
    reserved position with no allowed new item left, every allowed item may take it.

    Parameters
    ----------
    checker : callable
        `selected -> (n,) bool` of the list rules.
    is_new : numpy.ndarray
        `(n,)` bool: the candidate is a new item.
    positions : sequence of int
        0-based reserved positions (`reserved_positions`).

    Returns
    -------
    callable
        `selected -> (n,) bool`.
    """
    reserved = frozenset(int(p) for p in positions)
    new = np.asarray(is_new, dtype=bool)

    def allowed(selected: Sequence[int]) -> np.ndarray:
        mask = checker(selected)
        if len(selected) in reserved:
            only_new = mask & new
            only_new[list(selected)] = False  # a new item already placed does not fill this slot
            if only_new.any():
                return only_new
        return mask

    return allowed
