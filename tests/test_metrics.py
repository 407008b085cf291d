"""Tests for l2g.metrics: hand-computed AP / precision values and a revisitop cross-check."""
from __future__ import annotations

import math

import numpy as np
import pytest

from l2g.metrics import average_precision, precision_at_k, revisited_setups, summarise

# --------------------------------------------------------------------------- hand-computed AP
# term for the j-th positive (0-based) at cleaned 0-based rank r:
#   ((j / r if r > 0 else 1) + (j + 1) / (r + 1)) / 2

def test_perfect_ranking_is_one():
    # (1+1)/2 + (1/1+2/2)/2 + (2/2+3/3)/2 = 3, / 3 positives
    assert average_precision(["a", "b", "c", "x", "y"], {"a", "b", "c"}) == pytest.approx(1.0)


def test_single_positive_first():
    assert average_precision([7, 1, 2], [7]) == pytest.approx(1.0)


def test_single_positive_second():
    # j=0, r=1: (0/1 + 1/2) / 2 = 0.25
    assert average_precision([1, 7, 2], [7]) == pytest.approx(0.25)


def test_two_positives_at_ranks_1_and_3():
    # j=0, r=1: (0/1 + 1/2)/2 = 1/4
    # j=1, r=3: (1/3 + 2/4)/2 = 5/12
    # (1/4 + 5/12) / 2 = (3/12 + 5/12) / 2 = 1/3
    assert average_precision(["n0", "p1", "n2", "p2"], ["p1", "p2"]) == pytest.approx(1 / 3)


def test_junk_ahead_of_a_positive_is_removed():
    ranking = ["n0", "p1", "J", "n2", "p2"]
    # J a plain negative: p2 at r=4: (1/4 + 2/5)/2 = 0.325; (0.25 + 0.325)/2 = 0.2875
    assert average_precision(ranking, ["p1", "p2"]) == pytest.approx(0.2875)
    # J junk: cleaned ranking is n0 p1 n2 p2 -> 1/3 as above
    assert average_precision(ranking, ["p1", "p2"], junk=["J"]) == pytest.approx(1 / 3)


def test_junk_at_the_top():
    # cleaned ranking: p -> AP 1; without junk p sits at r=1 -> 0.25
    assert average_precision(["J", "p"], ["p"], junk=["J"]) == pytest.approx(1.0)
    assert average_precision(["J", "p"], ["p"]) == pytest.approx(0.25)


def test_missing_positive_counts_in_denominator():
    # p1 at r=0 adds 1; p2 never ranked adds 0; / 2
    assert average_precision(["p1", "n1"], ["p1", "p2"]) == pytest.approx(0.5)
    assert average_precision(["n1", "n2"], ["p1"]) == 0.0
    assert average_precision([], ["p1"]) == 0.0


def test_no_positives_is_nan():
    assert math.isnan(average_precision([1, 2, 3], []))
    assert math.isnan(precision_at_k([1, 2, 3], [], k=1))


def test_numpy_ids_and_duplicated_positives():
    ranking = np.array([5, 3, 9, 1])
    assert average_precision(ranking, [3, 3, 1]) == pytest.approx(
        average_precision([5, 3, 9, 1], [3, 1]))


# --------------------------------------------------------------------------- setups

def test_revisited_setups_on_small_case():
    setups = revisited_setups(easy=["e1", "e2"], hard=["h1", "h2"], junk=["j1"])
    assert set(setups) == {"easy", "medium", "hard"}
    assert sorted(setups["easy"][0]) == ["e1", "e2"]
    assert sorted(setups["easy"][1]) == ["h1", "h2", "j1"]
    assert sorted(setups["medium"][0]) == ["e1", "e2", "h1", "h2"]
    assert sorted(setups["medium"][1]) == ["j1"]
    assert sorted(setups["hard"][0]) == ["h1", "h2"]
    assert sorted(setups["hard"][1]) == ["e1", "e2", "j1"]

    ranking = ["e1", "h1", "j1", "n1", "h2", "e2"]
    ap = {name: average_precision(ranking, pos, junk) for name, (pos, junk) in setups.items()}
    # easy: cleaned e1 n1 e2 -> 1 + (1/2 + 2/3)/2 = 19/12, / 2 = 19/24
    assert ap["easy"] == pytest.approx(19 / 24)
    # medium: cleaned e1 h1 n1 h2 e2 -> 1 + 1 + (2/3 + 3/4)/2 + (3/4 + 4/5)/2
    #         = 2 + 17/24 + 31/40 = 418/120, / 4 = 209/240
    assert ap["medium"] == pytest.approx(209 / 240)
    # hard: cleaned h1 n1 h2 -> 19/24 as for easy
    assert ap["hard"] == pytest.approx(19 / 24)


# --------------------------------------------------------------------------- precision@k

def test_precision_at_k_with_junk():
    ranking = ["j1", "p1", "n1", "p2", "p3"]
    pos, junk = ["p1", "p2", "p3"], ["j1"]
    # cleaned: p1 n1 p2 p3
    assert precision_at_k(ranking, pos, junk, k=1) == pytest.approx(1.0)
    assert precision_at_k(ranking, pos, junk, k=2) == pytest.approx(0.5)
    assert precision_at_k(ranking, pos, junk, k=3) == pytest.approx(2 / 3)
    # k beyond the last positive (rank 4): kq = 4, so 3/4, not 3/10
    assert precision_at_k(ranking, pos, junk, k=10) == pytest.approx(0.75)
    # without the junk list j1 is a miss at the top
    assert precision_at_k(ranking, pos, (), k=1) == 0.0
    assert precision_at_k(ranking, pos, (), k=2) == pytest.approx(0.5)


def test_precision_at_k_kq_rule_hand_computed():
    # junk J1, J2 removed first -> p1 n1 n2 p2 n3 n4: positives at 1-based ranks 1 and 4
    ranking = ["J1", "p1", "n1", "J2", "n2", "p2", "n3", "n4"]
    pos, junk = ["p1", "p2"], ["J1", "J2"]
    assert precision_at_k(ranking, pos, junk, k=1) == pytest.approx(1.0)      # kq 1: 1/1
    assert precision_at_k(ranking, pos, junk, k=2) == pytest.approx(0.5)      # kq 2: 1/2
    assert precision_at_k(ranking, pos, junk, k=3) == pytest.approx(1 / 3)    # kq 3: 1/3
    assert precision_at_k(ranking, pos, junk, k=5) == pytest.approx(0.5)      # kq 4: 2/4
    assert precision_at_k(ranking, pos, junk, k=10) == pytest.approx(0.5)     # kq 4: 2/4 (not 2/10)
    # junk kept as plain negatives: positives at ranks 2 and 6
    assert precision_at_k(ranking, pos, (), k=1) == 0.0
    assert precision_at_k(ranking, pos, (), k=10) == pytest.approx(2 / 6)     # kq 6
    # every positive first: 1 at any k, however few positives there are
    assert precision_at_k(["p", "n1", "n2"], ["p"], k=10) == pytest.approx(1.0)
    # no positive ranked at all: 0
    assert precision_at_k(["n1", "n2"], ["p"], k=5) == 0.0


# --------------------------------------------------------------------------- summarise

def test_summarise_skips_nan_and_reports_percent():
    out = summarise([1.0, float("nan"), 0.5], {1: [1.0, float("nan"), 0.0], 5: [0.4, float("nan"), 0.2]})
    assert out["mAP"] == pytest.approx(75.0)
    assert out["mP@1"] == pytest.approx(50.0)
    assert out["mP@5"] == pytest.approx(30.0)
    assert out["n_queries"] == 2 and out["n_skipped"] == 1
    empty = summarise([float("nan")])
    assert math.isnan(empty["mAP"]) and empty["n_queries"] == 0


def test_summarise_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="precisions"):
        summarise([0.5, 0.5], {1: [1.0]})


# --------------------------------------------------------------------------- validation

def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="more than once"):
        average_precision([1, 2, 1], [1])
    with pytest.raises(ValueError, match="disjoint"):
        average_precision([1, 2], [1], junk=[1])
    with pytest.raises(ValueError, match="1-D"):
        average_precision(np.zeros((2, 2), dtype=int), [1])
    with pytest.raises(ValueError, match="string"):
        average_precision("abc", ["a"])
    for k in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="k"):
            precision_at_k([1, 2], [1], k=k)


# --------------------------------------------------------------------------- revisitop cross-check

def _revisitop_ap(ranks: np.ndarray, pos_ids: np.ndarray, junk_ids: np.ndarray) -> float:
    """Independent port of revisitop's compute_map inner loop for one query.

    ranks: (m,) ranked gallery ids.  Positive positions are shifted down by the
    number of junk positions before them, then integrated with compute_ap.
    """
    if len(pos_ids) == 0:
        return float("nan")
    pos = np.flatnonzero(np.isin(ranks, pos_ids))
    jnk = np.flatnonzero(np.isin(ranks, junk_ids))
    shifted = pos - np.searchsorted(jnk, pos)     # junk entries strictly before each positive
    nres = len(pos_ids)
    ap = 0.0
    for j, rank in enumerate(shifted):
        p0 = 1.0 if rank == 0 else j / rank
        p1 = (j + 1) / (rank + 1)
        ap += (p0 + p1) * (1.0 / nres) / 2.0
    return ap


def _revisitop_prk(ranks, pos_ids, junk_ids, k) -> float:
    pos = np.flatnonzero(np.isin(ranks, pos_ids))
    jnk = np.flatnonzero(np.isin(ranks, junk_ids))
    one_based = pos - np.searchsorted(jnk, pos) + 1
    if len(one_based) == 0:
        return 0.0
    kq = min(one_based.max(), k)
    return float((one_based <= kq).sum()) / kq  # revisitop: prs = (pos <= kq).sum() / kq


def test_matches_revisitop_on_random_rankings():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        m = int(rng.integers(1, 60))
        gallery = rng.permutation(100)[:m]           # ids 0..99, some never ranked
        labels = rng.choice(4, size=100, p=[0.6, 0.15, 0.15, 0.1])  # 0 neg, 1 pos, 2 junk (3 neg)
        pos_ids = np.flatnonzero(labels == 1)
        junk_ids = np.flatnonzero(labels == 2)
        ours = average_precision(gallery, pos_ids, junk_ids)
        ref = _revisitop_ap(gallery, pos_ids, junk_ids)
        if math.isnan(ref):
            assert math.isnan(ours)
            continue
        assert ours == pytest.approx(ref, abs=1e-12)
        for k in (1, 5, 10):
            assert precision_at_k(gallery, pos_ids, junk_ids, k) == pytest.approx(
                _revisitop_prk(gallery, pos_ids, junk_ids, k), abs=1e-12)
        checked += 1
    assert checked > 150
