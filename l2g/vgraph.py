"""Spatially verified graph edges: RANSAC inliers of each gallery image and its top neighbours.

At index time, every gallery image i is verified (mutual nearest neighbours +
RANSAC, as the global-to-local baseline does, l2g.verify) against the
``GraphConfig.verify_top`` strongest neighbours of its row in the raw
similarity graph. Each unordered pair is verified once. The inlier counts are
kept in a sparse symmetric (n, n) int32 matrix saved beside graph.npz as
vgraph.npz. Query time stays free of RANSAC: only gallery-gallery pairs are
verified, once; l2g.rerank reads ``VGraph.block`` (verified_w > 0).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import store
from .config import GraphConfig, VerifyConfig
from .graph import Graph
from .index import LocalIndex, Progress
from .verify import verify_pair

FILE = "vgraph.npz"


@dataclass
class VGraph:
    """I: (n, n) sparse symmetric int32 inlier counts (0 = not verified or no geometry)."""

    I: sp.csr_matrix
    paths: list
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def block(self, ids: np.ndarray) -> np.ndarray:
        """Dense (m, m) verification scores min(inliers / verify_sat, 1) in [0, 1] among ids (m,)."""
        ids = np.asarray(ids, np.int64)
        B = self.I[ids][:, ids].toarray().astype(np.float32)
        sat = float(self.params.get("verify_sat", GraphConfig().verify_sat))
        B = np.minimum(B / max(sat, 1e-9), 1.0)
        np.fill_diagonal(B, 0.0)
        return B


def vgraph_params(cfg: GraphConfig, vcfg: VerifyConfig) -> dict:
    """The settings the verified edges depend on: a saved vgraph with others is rebuilt."""
    return {"verify_top": cfg.verify_top, "verify_sat": cfg.verify_sat, "model": vcfg.model,
            "ransac_thresh": vcfg.ransac_thresh, "ransac_iters": vcfg.ransac_iters,
            "ratio": vcfg.ratio, "min_inliers": vcfg.min_inliers}


def pairs_to_verify(graph: Graph, top: int) -> np.ndarray:
    """(P, 2) int64 unordered pairs (i < j): each image with its ``top`` strongest graph neighbours."""
    G = graph.G.tocsr()
    out = []
    for i in range(G.shape[0]):
        a, b = G.indptr[i], G.indptr[i + 1]
        cols, vals = G.indices[a:b], G.data[a:b]
        keep = cols[np.lexsort((cols, -vals))][:top]
        out.extend((min(i, int(j)), max(i, int(j))) for j in keep if int(j) != i)
    if not out:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.asarray(out, np.int64), axis=0)


def build_vgraph(li: LocalIndex, graph: Graph, cfg: GraphConfig = GraphConfig(),
                 vcfg: VerifyConfig = VerifyConfig(), progress: Progress = None,
                 old: VGraph | None = None) -> VGraph:
    """Verify every image against its top ``cfg.verify_top`` graph neighbours.

    old: a previous VGraph of the same settings whose images are a prefix of the index's
    (images were appended): its counts are reused and only new pairs are verified, so the
    result equals a fresh build (RANSAC is seeded).
    """
    if graph.paths != list(li.paths):
        raise ValueError("the graph does not match the index's images: rebuild the graph first")
    t0 = time.perf_counter()
    n = li.n_images
    pairs = pairs_to_verify(graph, cfg.verify_top)
    known: dict = {}
    if old is not None and list(li.paths[:len(old.paths)]) == old.paths:
        C = old.I.tocoo()
        known = {(int(a), int(b)): int(v) for a, b, v in zip(C.row, C.col, C.data) if a < b}
        checked = old.params.get("checked", [])
        known.update({(int(a), int(b)): known.get((int(a), int(b)), 0) for a, b in checked})
    counts = np.zeros(len(pairs), np.int64)
    feats: dict = {}
    done = 0
    for p, (i, j) in enumerate(pairs):
        if progress:
            progress(p, len(pairs), f"verified graph: {li.paths[i]}")
        if (int(i), int(j)) in known:
            counts[p] = known[(int(i), int(j))]
            continue
        for x in (i, j):
            if x not in feats:
                feats[x] = li.features(int(x))
        counts[p] = verify_pair(feats[i], feats[j], vcfg).n_inliers
        done += 1
        if len(feats) > 64:  # keep memory flat: pairs are sorted by i
            feats = {x: f for x, f in feats.items() if x >= i}
    if progress:
        progress(len(pairs), len(pairs), "verified graph done")
    r, c = pairs[:, 0], pairs[:, 1]
    I = sp.coo_matrix((np.concatenate([counts, counts]).astype(np.int32),
                       (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(n, n)).tocsr()
    I.eliminate_zeros()
    params = {**vgraph_params(cfg, vcfg), "checked": pairs.tolist(), "verified_now": done}
    return VGraph(I, list(li.paths), params, {"vgraph": time.perf_counter() - t0})


def save_vgraph(folder: Path, vg: VGraph) -> None:
    """Write vgraph.npz atomically into the index folder (store.save_npz: a unique temporary file)."""
    I = vg.I.tocsr()
    store.save_npz(Path(folder) / FILE, data=I.data, indices=I.indices, indptr=I.indptr,
                   shape=np.asarray(I.shape), paths=np.asarray(vg.paths, dtype=str),
                   params=np.asarray(json.dumps(vg.params)))


def load_vgraph(folder: Path, li: LocalIndex | None = None, want: dict | None = None) -> VGraph | None:
    """The saved verified graph, or None when absent, of other images than ``li``'s, or built
    with settings other than ``want`` (see vgraph_params)."""
    path = Path(folder) / FILE
    if not path.is_file():
        return None
    z = store.load_npz(path, fix="Delete it: the verified graph is rebuilt from the index.")  # damage: IndexFormatError
    I = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
    paths = [str(p) for p in z["paths"]]
    params = json.loads(str(z["params"]))
    if li is not None and paths != list(li.paths):
        return None
    if want is not None and {k: params.get(k) for k in want} != want:
        return None
    return VGraph(I, paths, params)


def ensure_vgraph(folder: Path, li: LocalIndex, graph: Graph, cfg: GraphConfig = GraphConfig(),
                  vcfg: VerifyConfig = VerifyConfig(), progress: Progress = None) -> VGraph:
    """Load the verified graph of ``folder``, or extend / build it and save it."""
    want = vgraph_params(cfg, vcfg)
    vg = load_vgraph(folder, li, want)
    if vg is None:
        old = load_vgraph(folder, want=want)
        vg = build_vgraph(li, graph, cfg, vcfg, progress, old)
        save_vgraph(folder, vg)
    return vg
