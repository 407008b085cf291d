"""An honest "no match": is the best answer to a query good enough to call it a match?

A query whose scene is not in the gallery still gets a ranked list. This stage calibrates two
thresholds on what *non-matching* gallery pairs score, and a query is accepted when either test
passes:

- its top local-search score (l2g.search, in [0, 1]) is at least ``score_threshold``, with at least
  ``VerifyConfig.min_inliers`` verified inliers (a few generic keypoints can score high alone);
- the most RANSAC inliers (mutual nearest-neighbour matches, l2g.verify) between it and one of its
  ``verify_top`` best local candidates is at least ``inlier_threshold``.

The null distribution comes from the gallery itself. For every gallery image i (a stand-in for a
query with no match in the gallery), its best score over the images that do *not* match it (row i
of the similarity graph, l2g.graph) and the most inliers with its ``verify_top`` best non-matching
neighbours. "Not matching" is: another group or a distractor when ``groups.json`` is known (for a
distractor: the group images; two distractors may show one scene, as the demo's texture families do); else
everything beyond the row's ``null_skip`` strongest entries (assumed to be its true matches).
Each threshold is the (1 - fa_target / 2) quantile of its null, so a query from outside the gallery
is accepted with probability about ``fa_target``.

The calibration is stored beside the index as ``confidence.json`` (``l2g.store.ensure``: rebuilt
when the images or the settings change). How often it errs, k-fold by group: ``l2g.confidence_rates``.
No Streamlit here.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .config import ConfidenceConfig, VerifyConfig
from .datasets import GroundTruth
from .features import Features
from .graph import Graph
from .index import LocalIndex
from .verify import verify_pair

FILE = "confidence.json"
FIX = "It is recomputed from the index on the next open (`python -m l2g calibrate GALLERY`)."


@dataclass
class Calibration:
    """Thresholds and the null samples they came from (one per gallery image with a null row)."""

    score_threshold: float          # top local score >= this: a match
    inlier_threshold: int           # most verified inliers among the top candidates >= this: a match
    null_scores: list               # (n,) best non-matching local score per gallery image
    null_inliers: list              # (n,) most inliers with a non-matching image per gallery image
    source: str                     # 'groups' (groups.json) | 'graph' (row tails) | 'none' (too few samples)
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        return self.source != "none"


@dataclass
class Verdict:
    """A query judged against a Calibration: ``confident`` False means "no confident match"."""

    confident: bool
    top_score: float                # the query's best local score
    inliers: int                    # most inliers among the verified candidates
    best_id: int | None             # the verified candidate with the most inliers (None: nothing verified)
    score_threshold: float
    inlier_threshold: int
    by: str                         # 'score' | 'inliers' | 'score+inliers' | '' (refused) | 'uncalibrated'
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def evidence(self) -> str:
        """One line: the numbers the decision rests on."""
        return (f"top local score {self.top_score:.3f} (threshold {self.score_threshold:.3f}), "
                f"{self.inliers} verified inliers (threshold {self.inlier_threshold})")

    def shortfall(self, score: str = "top local score") -> str:
        """Why a refused verdict is refused: the condition(s) that failed, with their numbers ('' when
        confident). A match needs the score test (score and at least ``min_inliers`` inliers) or the
        inlier test (at least ``inlier_threshold`` inliers); both failed. ``score``: what the score is
        called (a single pair's: 'local score')."""
        if self.confident:
            return ""
        need = int(self.params.get("min_inliers", VerifyConfig.min_inliers))
        s, thr, n, i_thr = self.top_score, self.score_threshold, self.inliers, self.inlier_threshold
        if s < thr:
            return (f"the {score} {s:.3f} is below its threshold {thr:.3f}, and {n} verified inliers "
                    f"are fewer than the {i_thr} a match on inliers needs")
        alone = "" if i_thr <= need else f" ({i_thr} for a match on inliers alone)"
        return (f"the {score} {s:.3f} passes its threshold {thr:.3f}, but a match also needs at least "
                f"{need} verified inliers{alone}: {n} found")


def params_of(cfg: ConfidenceConfig, vcfg: VerifyConfig) -> dict:
    """The settings a calibration depends on (its fingerprint)."""
    return {**asdict(cfg), "model": vcfg.model, "ransac_thresh": vcfg.ransac_thresh,
            "ransac_iters": vcfg.ransac_iters, "ratio": vcfg.ratio, "min_inliers": vcfg.min_inliers}


def sorted_row(G, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Row i of the CSR graph G without i itself: (ids (m,), scores (m,)), strongest first."""
    a, b = G.indptr[i], G.indptr[i + 1]
    ids, sc = G.indices[a:b].astype(np.int64), G.data[a:b].astype(np.float64)
    keep = ids != i
    order = np.argsort(-sc[keep], kind="stable")
    return ids[keep][order], sc[keep][order]


def non_matching(graph: Graph, gt: GroundTruth | None, skip: int) -> tuple[list, str]:
    """Per gallery image i: (ids (m,), scores (m,)) of its graph neighbours that do not match it,
    strongest first; and the source ('groups' or 'graph')."""
    G = graph.G.tocsr()
    grp = None
    if gt is not None:
        grp = [gt.group_of(p) for p in graph.paths]
        if not any(g is not None for g in grp):
            grp = None
    rows = []
    for i in range(G.shape[0]):
        ids, sc = sorted_row(G, i)
        if grp is not None:     # distractor pairs are left out: nothing says two distractors differ
            other = np.array([grp[j] != grp[i] and (grp[j] is not None or grp[i] is not None) for j in ids], bool)
            ids, sc = ids[other], sc[other]
        else:
            ids, sc = ids[skip:], sc[skip:]
        rows.append((ids, sc))
    return rows, "groups" if grp is not None else "graph"


class PairInliers:
    """Inlier counts of gallery pairs (mutual nearest-neighbour matches + RANSAC), each pair once."""

    def __init__(self, li: LocalIndex, vcfg: VerifyConfig = VerifyConfig()):
        self.li, self.vcfg, self.feats, self.memo = li, vcfg, {}, {}

    def features(self, i: int) -> Features:
        if i not in self.feats:
            self.feats[i] = self.li.features(i)
        return self.feats[i]

    def __call__(self, i: int, ids) -> int:
        """The most inliers between gallery image i and any of ``ids`` (0 for none)."""
        best = 0
        for j in ids:
            key = (min(i, int(j)), max(i, int(j)))
            if key not in self.memo:
                self.memo[key] = int(verify_pair(self.features(key[0]), self.features(key[1]), self.vcfg).n_inliers)
            best = max(best, self.memo[key])
        return best


def max_inliers(q: Features, li: LocalIndex, ids, vcfg: VerifyConfig, inliers=None) -> tuple[int, int | None]:
    """(most inliers, that candidate's id) of ``q`` against the gallery images ``ids``
    (mutual nearest-neighbour matches + RANSAC); (0, None) for no ids. ``inliers``: ids (m,) ->
    inlier counts (m,) of ``q`` with ``vcfg`` already at hand (the query's shared memo,
    ``l2g.methods.Context.inliers``: each pair verified once per query); else verified here."""
    ids = [int(j) for j in ids]
    if not ids:
        return 0, None
    counts = (inliers(ids) if inliers is not None else
              [verify_pair(q, li.features(j), vcfg).n_inliers for j in ids])
    k = int(np.argmax(np.asarray(counts, np.int64)))      # the first of the best, as the ranking has them
    return int(counts[k]), ids[k]


def threshold(null: np.ndarray, q: float) -> float:
    """The q-quantile of a null sample, taken as the next value above it (a strict bound:
    at most a (1 - q) share of the null reaches it)."""
    null = np.sort(np.asarray(null, np.float64))
    k = int(np.ceil(q * len(null)))
    return float(null[min(k, len(null) - 1)]) if k < len(null) else float(null[-1]) + 1e-6


def calibrate(li: LocalIndex, graph: Graph, gt: GroundTruth | None = None,
              cfg: ConfidenceConfig = ConfidenceConfig(), vcfg: VerifyConfig = VerifyConfig(),
              rows=None, progress=None, pairs: PairInliers | None = None) -> Calibration:
    """Thresholds from the null distribution of non-matching gallery pairs (see the module doc).
    ``rows`` restricts the null to those gallery images (two-fold evaluation)."""
    t0 = time.perf_counter()
    null_rows, source = non_matching(graph, gt, cfg.null_skip)
    take = list(range(len(null_rows)) if rows is None else rows)
    pairs = pairs or PairInliers(li, vcfg)
    scores, inl = [], []
    for t, i in enumerate(take):
        ids, sc = null_rows[i]
        if len(ids) == 0:
            continue
        if progress:
            progress(t, len(take), f"calibrating: {graph.paths[i]}")
        scores.append(float(sc[0]))
        inl.append(pairs(i, ids[:cfg.verify_top]))
    params = params_of(cfg, vcfg)
    q = 1.0 - cfg.fa_target / 2
    if len(scores) < cfg.min_null:
        return Calibration(0.0, 0, scores, inl, "none", params, {"calibrate": time.perf_counter() - t0})
    s_thr = threshold(np.array(scores), q)
    i_thr = max(int(np.ceil(threshold(np.array(inl), q))), vcfg.min_inliers)
    return Calibration(s_thr, i_thr, scores, inl, source, params, {"calibrate": time.perf_counter() - t0})


def judge(cal: Calibration, top_score: float, inliers: int, best_id: int | None = None) -> Verdict:
    """Accept when either test passes (everything, when the calibration had too few samples). The
    score test also needs some geometry (at least VerifyConfig.min_inliers inliers): a query with few,
    generic keypoints (a flat drawing, a colour wheel) can reach a high local score by itself."""
    if not cal.calibrated:
        return Verdict(True, float(top_score), int(inliers), best_id, 0.0, 0, "uncalibrated", cal.params)
    some_geometry = inliers >= cal.params.get("min_inliers", VerifyConfig.min_inliers)
    by = "+".join(n for n, ok in (("score", top_score >= cal.score_threshold and some_geometry),
                                  ("inliers", inliers >= cal.inlier_threshold)) if ok)
    return Verdict(bool(by), float(top_score), int(inliers), best_id, cal.score_threshold,
                   cal.inlier_threshold, by, cal.params)


def assess(cal: Calibration, li: LocalIndex, q: Features, ids, scores, vcfg: VerifyConfig = VerifyConfig(),
           top: int | None = None, inliers=None) -> Verdict:
    """Judge a query from its local ranking: ``ids`` (m,) gallery ids best first, ``scores`` (m,);
    ``inliers``: the query's shared inlier counts (see ``max_inliers``)."""
    t0 = time.perf_counter()
    top = cal.params.get("verify_top", ConfidenceConfig.verify_top) if top is None else top
    ids, scores = np.asarray(ids), np.asarray(scores, np.float64)
    if ids.shape != scores.shape[:1] or scores.ndim != 1:
        raise ValueError(f"ids {ids.shape} and scores {scores.shape} must be (m,) and (m,)")
    if len(ids) == 0:
        v = judge(cal, 0.0, 0)
    else:
        n, best = max_inliers(q, li, ids[:top], vcfg, inliers)
        v = judge(cal, float(scores[0]), n, best)
    v.timings["confidence"] = time.perf_counter() - t0
    return v


def _to_json(cal: Calibration) -> dict:
    return {"score_threshold": cal.score_threshold, "inlier_threshold": cal.inlier_threshold,
            "null_scores": [round(float(s), 6) for s in cal.null_scores],
            "null_inliers": [int(i) for i in cal.null_inliers],
            "source": cal.source, "params": cal.params, "timings": cal.timings}


def load(folder: Path) -> Calibration:
    """confidence.json of an index folder (IndexFormatError when damaged)."""
    d = store.read_json(Path(folder) / FILE, FIX)
    try:
        return Calibration(float(d["score_threshold"]), int(d["inlier_threshold"]), list(d["null_scores"]),
                           list(d["null_inliers"]), str(d["source"]), dict(d["params"]), dict(d.get("timings", {})))
    except (KeyError, TypeError, ValueError) as e:
        from .errors import IndexFormatError
        raise IndexFormatError(f"{Path(folder) / FILE}: damaged ({e!r}). {FIX}") from None


def ensure_calibration(folder: Path, li: LocalIndex, graph: Graph, gt: GroundTruth | None = None,
                       cfg: ConfidenceConfig = ConfidenceConfig(), vcfg: VerifyConfig = VerifyConfig(),
                       progress=None) -> store.Stage:
    """The calibration of the index in ``folder``: loaded when its images, ground truth and settings
    match, else computed and saved (``store.ensure``); a damaged file is recomputed."""
    folder = Path(folder)
    gt_fp = None if gt is None else store.fingerprint({"groups": gt.groups, "distractors": gt.distractors})
    fp = store.fingerprint({**params_of(cfg, vcfg), "groups": gt_fp})

    def build(old):
        cal = calibrate(li, graph, gt, cfg, vcfg, progress=progress)
        store.write_json(folder / FILE, _to_json(cal))
        return cal, "built"

    return store.ensure(folder, FILE, fp, li.order, lambda rec: load(folder), build, True,
                        li.cfg.store, FIX)
