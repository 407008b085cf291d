"""How often the 'no confident match' verdict (l2g.confidence) is wrong: false-reject and false-accept
rates of its calibration, k-fold by group (``python -m l2g calibrate`` prints them).

Each fold's thresholds are calibrated on the other folds' images and judged on this fold's, with the
gallery's own rows as queries, so no query is judged by thresholds made from it.
"""
from __future__ import annotations

from .confidence import PairInliers, calibrate, judge, non_matching, params_of, sorted_row
from .config import ConfidenceConfig, VerifyConfig
from .datasets import GroundTruth
from .graph import Graph
from .index import LocalIndex


def error_rates(li: LocalIndex, graph: Graph, gt: GroundTruth, cfg: ConfidenceConfig = ConfidenceConfig(),
                vcfg: VerifyConfig = VerifyConfig(), folds: int = 2, progress=None) -> dict:
    """False-reject and false-accept rates, k-fold by group (groups and distractors dealt to folds in
    sorted order): thresholds calibrated on the other folds' images, judged on this fold's.

    Every gallery image of a group with another member is a query that has matches (rejecting it is a
    false reject); every group image with its whole group left out, and every distractor, is a query
    with no match in the gallery (accepting it is a false accept). Scores are the graph's rows (the
    local search of the gallery image), inliers verify the top ``verify_top`` candidates."""
    graph = Graph(graph.G.tocsr(), graph.paths, graph.params)
    pairs = PairInliers(li, vcfg)
    null_rows, _ = non_matching(graph, gt, cfg.null_skip)
    fold_of = {p: k % folds for k, g in enumerate(sorted(gt.groups)) for p in gt.groups[g]}
    fold_of.update({p: k % folds for k, p in enumerate(sorted(gt.distractors))})
    n = {k: 0 for k in ("match", "match_rejected", "match_top1_wrong", "group_out", "group_out_accepted",
                        "distractor", "distractor_accepted")}
    thresholds = []
    for f in range(folds):
        rows = [i for i, p in enumerate(graph.paths) if fold_of.get(p, -1) not in (-1, f)]
        cal = calibrate(li, graph, gt, cfg, vcfg, rows=rows, pairs=pairs)
        thresholds.append({"fold": f, "score": round(cal.score_threshold, 4), "inliers": cal.inlier_threshold,
                           "calibrated": cal.calibrated})
        for i, p in enumerate(graph.paths):
            if fold_of.get(p) != f:
                continue
            if progress:
                progress(i, len(graph.paths), f"fold {f + 1}/{folds}: {p}")
            grp = gt.group_of(p)
            if grp is not None and len(gt.groups[grp]) > 1:
                ids, sc = sorted_row(graph.G, i)
                v = judge(cal, sc[0] if len(sc) else 0.0, pairs(i, ids[:cfg.verify_top]))
                n["match"] += 1
                n["match_rejected"] += not v.confident
                wrong = len(ids) == 0 or gt.group_of(graph.paths[ids[0]]) != grp
                n["match_top1_wrong"] += bool(v.confident and wrong)
            ids, sc = null_rows[i]
            v = judge(cal, sc[0] if len(sc) else 0.0, pairs(i, ids[:cfg.verify_top]))
            kind = "group_out" if grp is not None else "distractor"
            n[kind] += 1
            n[kind + "_accepted"] += v.confident
    rate = lambda a, b: round(n[a] / n[b], 4) if n[b] else None  # noqa: E731
    return {"counts": n, "false_reject": rate("match_rejected", "match"),
            "accepted_top1_wrong": rate("match_top1_wrong", "match"),
            "false_accept_group_out": rate("group_out_accepted", "group_out"),
            "false_accept_distractor": rate("distractor_accepted", "distractor"),
            "thresholds": thresholds, "params": params_of(cfg, vcfg)}
