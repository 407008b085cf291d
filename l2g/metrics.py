"""Retrieval metrics following the revisitop protocol (Revisited Oxford / Paris).

Radenovic et al., "Revisiting Oxford and Paris: Large-Scale Image Retrieval
Benchmarking", CVPR 2018.  Junk images are removed from a ranking before it is
scored; AP is the trapezoidal area under the precision-recall curve exactly as
revisitop's ``compute_ap``; queries without positives score NaN and are
skipped when averaging.

Gallery ids may be any hashable values (ints, strings, numpy integers).
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np


def _as_ids(ids, what: str) -> list:
    """A 1-D sequence of hashable ids -> list; strings are single ids, not sequences."""
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"{what} must be a sequence of ids, not a single string {ids!r}")
    if isinstance(ids, np.ndarray) and ids.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got an array of shape {ids.shape}")
    try:
        out = list(ids)
    except TypeError:
        raise ValueError(f"{what} must be an iterable of ids, got {type(ids).__name__}") from None
    for g in out:
        if not isinstance(g, Hashable):
            raise ValueError(f"{what} holds an unhashable id {g!r}")
    return out


def _clean(ranking, positives, junk) -> tuple[list, set]:
    """Validate the inputs; return (ranking without junk, set of positives)."""
    ranking = _as_ids(ranking, "ranking")
    if len(set(ranking)) != len(ranking):
        raise ValueError("ranking lists some gallery id more than once")
    pos = set(_as_ids(positives, "positives"))
    junk_set = set(_as_ids(junk, "junk"))
    both = pos & junk_set
    if both:
        raise ValueError(f"positives and junk must be disjoint; both hold {sorted(map(str, both))[:5]}")
    return [g for g in ranking if g not in junk_set], pos


def average_precision(ranking: Sequence[Hashable], positives: Iterable[Hashable],
                      junk: Iterable[Hashable] = ()) -> float:
    """Average precision of one ranked list, revisitop style.

    ranking: gallery ids, best first, each at most once (may be a truncated list).
    positives: ids that count as correct; those never ranked contribute 0 but
        still count in the denominator.
    junk: ids removed from the ranking before scoring (must not overlap positives).
    Returns AP in [0, 1], or NaN when there are no positives.

    With junk removed, the j-th positive (0-based) at 0-based rank r adds
    ((j / r if r > 0 else 1) + (j + 1) / (r + 1)) / 2; the sum is divided by
    the number of positives.
    """
    cleaned, pos = _clean(ranking, positives, junk)
    if not pos:
        return float("nan")
    total = 0.0
    j = 0
    for r, g in enumerate(cleaned):
        if g in pos:
            before = j / r if r > 0 else 1.0
            total += 0.5 * (before + (j + 1) / (r + 1))
            j += 1
    return total / len(pos)


def precision_at_k(ranking: Sequence[Hashable], positives: Iterable[Hashable],
                   junk: Iterable[Hashable] = (), k: int = 10) -> float:
    """Precision at k exactly as revisitop's ``compute_map`` (mP@k).

    ranking, positives, junk: as in :func:`average_precision`; junk is removed first.
    k: cut-off >= 1. With the positives' 1-based ranks in the junk-free ranking,
    kq = min(k, rank of the last positive) and P@k = (positives ranked <= kq) / kq:
    the divisor is kq, not k, so a query with fewer than k positives, all ranked
    first, still scores 1. Positives never ranked are ignored by that rule (revisitop
    always scores a full ranking); a ranking holding no positive scores 0.
    Returns a value in [0, 1], or NaN when there are no positives (revisitop).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    cleaned, pos = _clean(ranking, positives, junk)
    if not pos:
        return float("nan")
    ranks = [r + 1 for r, g in enumerate(cleaned) if g in pos]
    if not ranks:
        return 0.0
    kq = min(int(k), ranks[-1])
    return sum(1 for r in ranks if r <= kq) / kq


def revisited_setups(easy: Iterable[Hashable], hard: Iterable[Hashable],
                     junk: Iterable[Hashable]) -> dict[str, tuple[list, list]]:
    """The three revisitop protocols as {setup: (positives, junk)}.

    easy:   positives = easy,          junk = junk + hard
    medium: positives = easy + hard,   junk = junk
    hard:   positives = hard,          junk = junk + easy
    """
    easy = _as_ids(easy, "easy")
    hard = _as_ids(hard, "hard")
    junk = _as_ids(junk, "junk")
    return {
        "easy": (list(easy), junk + hard),
        "medium": (easy + hard, list(junk)),
        "hard": (list(hard), junk + easy),
    }


def _nanmean_percent(values) -> tuple[float, int]:
    kept = [float(v) for v in values if not math.isnan(float(v))]
    if not kept:
        return float("nan"), 0
    return 100.0 * sum(kept) / len(kept), len(kept)


def summarise(aps: Sequence[float],
              precisions: Mapping[int, Sequence[float]] | None = None) -> dict:
    """Average per-query scores, skipping NaN (queries without positives).

    aps: (q,) per-query AP in [0, 1] (NaN allowed).
    precisions: {k: (q,) per-query precision@k} (NaN allowed), or None.
    Returns {'mAP': %, 'mP@k': % for each k, 'n_queries': queries scored,
    'n_skipped': NaN queries}; percentages are in 0-100, NaN when nothing is scored.
    """
    aps = list(aps)
    out: dict = {}
    out["mAP"], scored = _nanmean_percent(aps)
    out["n_queries"] = scored
    out["n_skipped"] = len(aps) - scored
    for k, values in sorted((precisions or {}).items()):
        values = list(values)
        if len(values) != len(aps):
            raise ValueError(f"precisions[{k}] has {len(values)} values for {len(aps)} queries")
        out[f"mP@{k}"], _ = _nanmean_percent(values)
    return out
