"""What the query page computes, kept free of Streamlit so tests can call it directly."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import methods as M
from .. import pipeline as P
from ..errors import L2GError
from ..features import Features, NoKeypointsError
from ..images import ImageError, LoadedImage, load_image, mode_words
from ..metrics import average_precision
from ..pixels import ALPHA_MODES
from ..verify import VerifyResult, verify_pair

METHOD_LABELS = {name: m.label for name, m in M.METHODS.items()}


@dataclass
class QueryOutcome:
    """A query made from user input, or the reason it could not be made."""

    query: P.Query | None = None
    error: str | None = None
    warnings: list = field(default_factory=list)


def preview(source, max_side: int, name: str | None = None):
    """(LoadedImage, warnings) of an upload or path at the feature resolution; ImageError passes.

    ``name`` (an upload's file name) names bytes in every message. The LoadedImage is what
    P.make_query takes, so an upload is decoded once."""
    img = load_image(source, max_side=max_side, name=name)
    notes = []
    if img.scale < 1.0:
        w, h = img.orig_size
        notes.append(f"{img.name}: {w} x {h} px, downscaled to {img.rgb.shape[1]} x {img.rgb.shape[0]} "
                     f"for feature extraction")
    if img.source_mode not in ("RGB", "L", "P", "RGBA"):
        notes.append(f"{img.name}: {mode_words(img.source_mode)} converted to 8-bit RGB"
                     + (", transparent areas on white" if img.source_mode in ALPHA_MODES else ""))
    return img, notes


def make_query_safe(eng: P.Engine, source=None, gallery_id: int | None = None, bbox=None,
                    name: str = "query") -> QueryOutcome:
    """P.make_query with every input problem turned into a message (never raises on bad input).

    ``source`` may be a LoadedImage from :func:`preview` (then it is not decoded again); bytes
    are named ``name`` in messages."""
    out = QueryOutcome()
    try:
        if source is not None and not isinstance(source, LoadedImage):
            source, out.warnings = preview(source, eng.cfg.features.max_side, name=name)
        out.query = P.make_query(eng, source=source, gallery_id=gallery_id, bbox=bbox, name=name)
    except ImageError as e:
        out.error = f"Cannot use this file as a query: {e}"
    except NoKeypointsError as e:
        out.error = f"No keypoints in the query: {e}"
    except L2GError as e:         # e.g. a too small rectangle
        out.error = f"Cannot make the query: {e}"
    return out


def limit_features(q: P.Query, n: int) -> P.Query:
    """The query with only its ``n`` strongest keypoints (features are stored strongest first)."""
    f = q.feats
    if n <= 0 or len(f) <= n:
        return q
    return dataclasses.replace(q, feats=Features(f.kpts[:n], f.desc[:n], f.size, f.params, f.timings))


def positives_for(eng: P.Engine, q: P.Query) -> set | None:
    """Gallery ids of the query's group; None when unknown. A whole gallery image leaves itself out
    (it is left out of the rankings too); a box drawn on one keeps its source image, which the rankings
    keep and a crop should find (as Revisited Oxford counts its query images, boxes on gallery images,
    among their own positives)."""
    if eng.gt is None or q.gallery_id is None:
        return None
    grp = eng.gt.group_of(eng.li.paths[q.gallery_id])
    if grp is None:
        return None
    ids = {eng.li.id_of(p) for p in eng.gt.groups[grp]} - {None}
    if q.bbox is None:
        ids.discard(q.gallery_id)
    return {int(i) for i in ids} if ids else None


@dataclass
class PairMatches:
    """What the match view shows of the query and one candidate.

    verified:  the pair's spatial verification (mutual nearest-neighbour matches + RANSAC), the one
               global-to-local and the confidence verdict count: verified.n_inliers is *the* verified
               inlier count of the pair, one number everywhere
    n_local:   the local search's matches with the candidate (what voted for it), kept up to
               SearchConfig.max_matches: at least this many when ``local_capped``
    seconds:   time to verify
    """

    verified: VerifyResult
    n_local: int
    local_capped: bool
    seconds: float

    @property
    def n_inliers(self) -> int:
        return int(self.verified.n_inliers)


def query_context(eng: P.Engine, run: P.QueryRun):
    """The run's methods.Context when its inlier counts are the engine's (same query features, same
    VerifyConfig: one RANSAC per pair, shared by global-to-local, the verdict and the match view); else None."""
    ctx = run.ctx
    if ctx is not None and ctx.feats is run.query.feats and ctx.cfg.verify == eng.cfg.verify:
        return ctx
    return None


def pair_matches(eng: P.Engine, run: P.QueryRun, j: int, gallery_feats: Features | None = None) -> PairMatches:
    """The match view's numbers for candidate j: the pair verified as global-to-local verifies it
    (methods.Context.verify, whose count its memo shares), and the local search's match count.
    ``gallery_feats``: candidate j's features when the caller has them (the match view draws with them):
    they are not loaded again."""
    t = time.perf_counter()
    ctx = query_context(eng, run)
    gf = eng.li.features(int(j)) if gallery_feats is None else gallery_feats
    if ctx is not None:
        vr = ctx.verify(int(j), gf)
    else:
        vc = eng.cfg.verify
        vr = verify_pair(run.query.feats, gf, vc, model=vc.model)
    n_local = len(run.local.matches.get(int(j), ()))
    cap = (eng.cfg if run.ctx is None else run.ctx.cfg).search.max_matches     # the search's own setting
    return PairMatches(vr, n_local, bool(cap) and n_local >= cap, time.perf_counter() - t)


def full_ranking(eng: P.Engine, run: P.QueryRun, method: str) -> list[int]:
    """The method's list continued by the rest of the gallery (the registry's tail rule)."""
    return [int(j) for j in run.full_ranking(method)]


def aps(eng: P.Engine, run: P.QueryRun, positives: set | None) -> dict:
    """method -> AP over its full ranking (NaN-free: empty when positives are unknown)."""
    if not positives:
        return {}
    return {m: average_precision(full_ranking(eng, run, m), positives) for m in run.rankings()}


def method_scores(run: P.QueryRun, method: str) -> dict:
    """gallery id -> the score the method ranked by (its scored head; None beyond it)."""
    r = run.results.get(method)
    return {} if r is None else r.score_of()


def arrow(move: int | None) -> str:
    if move is None:
        return ""
    return f"↑{move}" if move > 0 else f"↓{-move}" if move < 0 else "="


def ranking_rows(eng: P.Engine, run: P.QueryRun, method: str, n: int, positives: set | None) -> list[dict]:
    """The first n entries of a method's list as table rows."""
    ids = run.rankings()[method][:n]
    scores = method_scores(run, method)
    moves = run.results[method].extras.get("moves", {})
    rows = []
    for r, j in enumerate(ids, 1):
        j = int(j)
        rows.append({"rank": r, "id": j, "name": eng.li.paths[j], "score": scores.get(j),
                     "move": arrow(moves.get(j)) if moves else "",
                     "positive": None if positives is None else j in positives})
    return rows


def export_rows(eng: P.Engine, run: P.QueryRun, positives: set | None) -> list[dict]:
    """Every method's whole list, long format: method, rank, id, path, score, positive."""
    rows = []
    for m, ids in run.rankings().items():
        sc = method_scores(run, m)
        for r, j in enumerate(ids, 1):
            j = int(j)
            rows.append({"method": m, "rank": r, "id": j, "path": eng.li.paths[j], "score": sc.get(j),
                         "positive": None if positives is None else j in positives})
    return rows


def export_csv(eng, run, positives) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["method", "rank", "id", "path", "score", "positive"], lineterminator="\n")
    w.writeheader()
    w.writerows(export_rows(eng, run, positives))
    return buf.getvalue()


def export_json(eng, run, positives, params: dict) -> str:
    ap = aps(eng, run, positives)
    rr = run.l2g
    doc = {"gallery": str(eng.li.root), "query": run.query.name, "bbox": run.query.bbox,
           "params": params, "timings_s": {k: round(v, 5) for k, v in run.timings.items()},
           "stress1": rr.stress1,
           "ap": {m: (None if math.isnan(v) else v) for m, v in ap.items()},
           "positives": sorted(eng.li.paths[j] for j in positives) if positives else None,
           "rankings": {m: [{"rank": r["rank"], "path": r["path"], "score": r["score"]}
                            for r in export_rows(eng, run, positives) if r["method"] == m]
                        for m in run.rankings()},
           "embedding": {"ids": [eng.li.paths[int(j)] for j in rr.head], "X": np.round(rr.X, 6).tolist()}}
    return json.dumps(doc, indent=1)
