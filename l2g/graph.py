"""The gallery similarity graph: every gallery image searched against the index.

G is a sparse (n, n) float32 matrix: row i holds the local-search scores of
gallery image i's top-N neighbours (itself excluded). It is built once with the
index and saved beside it (graph.npz), so the pairwise similarities of any
shortlist cost a sparse lookup at query time.

Rows are built in batches: the descriptors of many gallery images (about
GraphConfig.batch_rows) go to FAISS in one call, which threads over them, and
the votes are split per image (batch_votes); each row equals the one-at-a-time
``local_search`` of that image (rows_one_at_a_time, tests/test_graph.py).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import store
from .config import GraphConfig, SearchConfig
from .errors import IndexFormatError
from .features import Features
from .index import LocalIndex, Progress
from .search import first_hits, kernel, knn, local_search, path_rank


@dataclass
class Graph:
    G: sp.csr_matrix                 # (n, n) float32, row i = scores of i's neighbours
    paths: list                      # gallery paths, row order
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)   # tables computed from
    #                                   G once per graph (l2g.rerank's hub table); a new or replaced Graph starts empty

    def block(self, ids: np.ndarray, symmetric: str = "mean") -> np.ndarray:
        """Dense (m, m) similarities among gallery ids (m,); missing pairs are 0.

        symmetric: 'mean' -> (S + S^T) / 2, 'max' -> max(S, S^T), 'none' -> S.
        """
        ids = np.asarray(ids, np.int64)
        S = self.G[ids][:, ids].toarray().astype(np.float32)
        if symmetric == "mean":
            S = 0.5 * (S + S.T)
        elif symmetric == "max":
            S = np.maximum(S, S.T)
        np.fill_diagonal(S, 0.0)
        return S


def _check(cfg: GraphConfig) -> None:
    if cfg.top_n < 1 or cfg.batch_rows < 1 or cfg.query_max < 0:
        raise ValueError(f"GraphConfig needs top_n >= 1, batch_rows >= 1 and query_max >= 0 (0: every descriptor); "
                         f"got top_n={cfg.top_n}, batch_rows={cfg.batch_rows}, query_max={cfg.query_max}")


def _queries(li: LocalIndex, ids, cfg: GraphConfig):
    """Chunks of gallery images to search in one FAISS call: yields (img (m,), desc (R, d), counts (m,)) with
    R >= cfg.batch_rows except for the last chunk (images with no keypoints are left out). Each image
    searches with its first cfg.query_max descriptors (features are stored strongest first)."""
    img, desc, rows = [], [], 0
    for i in ids:
        d = li.features(int(i)).desc
        d = d[:cfg.query_max] if cfg.query_max else d
        if len(d):
            img.append(int(i))
            desc.append(d)
            rows += len(d)
        if rows >= cfg.batch_rows:
            yield np.array(img, np.int64), np.concatenate(desc), np.array([len(x) for x in desc], np.int64)
            img, desc, rows = [], [], 0
    if img:
        yield np.array(img, np.int64), np.concatenate(desc), np.array([len(x) for x in desc], np.int64)


def batch_votes(li: LocalIndex, img: np.ndarray, desc: np.ndarray, counts: np.ndarray, scfg: SearchConfig,
                top_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Graph rows of m gallery images from one kNN call over their stacked descriptors.

    img (m,) gallery ids, desc (R, d) their descriptors stacked in that order, counts (m,) rows of each
    (R = counts.sum()). Every image gets what ``local_search(li, its features, exclude=itself)`` gives:
    first hit per (query descriptor, image), kernel votes summed in the same order, divided by its number
    of descriptors, ranked by score then path; its top_n with score > 0 are kept.
    Returns COO triplets r, c (int64), v (float32).
    """
    n, m = li.n_images, len(img)
    if desc.ndim != 2 or len(desc) != int(counts.sum()) or len(counts) != m:
        raise ValueError(f"desc must be (counts.sum(), d) = ({int(counts.sum())}, d), got {desc.shape}")
    D, I = knn(li, desc, scfg.knn)
    owner = np.repeat(np.arange(m, dtype=np.int64), counts)       # (R,) local image of each query row
    v = first_hits(D, I, li.img_of, n)                            # sorted by (query row, image)
    a = owner[v.q]
    keep = v.img != img[a]                                        # an image does not vote for itself
    a, b, w = a[keep], v.img[keep].astype(np.int64), kernel(v.dist[keep], scfg)
    key, inv = np.unique(a * n + b, return_inverse=True)
    a, b = key // n, key % n
    score = (np.bincount(inv, weights=w, minlength=len(key)) / counts[a]).astype(np.float32)
    pos = score > 0
    a, b, score = a[pos], b[pos], score[pos]
    order = np.lexsort((path_rank(li)[b], -score.astype(np.float64), a))
    a, b, score = a[order], b[order], score[order]
    start = np.searchsorted(a, a, "left")                         # a is sorted: first position of each row
    top = np.arange(len(a)) - start < top_n
    return img[a[top]], b[top], score[top]


def graph_rows(li: LocalIndex, ids, scfg: SearchConfig, cfg: GraphConfig, progress: Progress = None):
    """Graph rows of the gallery images ``ids``, batched (batch_votes per chunk of cfg.batch_rows
    query descriptors); returns COO triplets."""
    _check(cfg)
    ids = list(ids)
    r, c, v, done = [], [], [], 0
    if progress:
        progress(0, len(ids), "similarity graph: searching the gallery images in batches")
    for img, desc, counts in _queries(li, ids, cfg):
        for x, out in zip((r, c, v), batch_votes(li, img, desc, counts, scfg, cfg.top_n)):
            x.append(out)
        done = ids.index(int(img[-1]), done) + 1
        if progress:
            progress(done, len(ids), f"similarity graph: {li.paths[int(img[-1])]}")
    if progress:
        progress(len(ids), len(ids), "similarity graph done")
    cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)  # noqa: E731
    return cat(r, np.int64), cat(c, np.int64), cat(v, np.float32)


def rows_one_at_a_time(li: LocalIndex, ids, scfg: SearchConfig, cfg: GraphConfig):
    """The reference: one ``local_search`` (one FAISS call) per gallery image, top_n kept; COO triplets.
    What the graph was built with before batching (benchs/bench_graph.py times both)."""
    r, c, v = [], [], []
    scfg = dataclasses.replace(scfg, shortlist=cfg.top_n + 1)
    for i in ids:
        f = li.features(int(i))
        f = Features(f.kpts[:cfg.query_max], f.desc[:cfg.query_max], f.size) if cfg.query_max else f
        if len(f) == 0:
            continue
        res = local_search(li, f, scfg, exclude=int(i), with_matches=False)
        keep = res.scores > 0
        r.append(np.full(int(keep.sum()), i, np.int64)[:cfg.top_n])
        c.append(res.ids[keep].astype(np.int64)[:cfg.top_n])
        v.append(res.scores[keep].astype(np.float32)[:cfg.top_n])
    cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)  # noqa: E731
    return cat(r, np.int64), cat(c, np.int64), cat(v, np.float32)


def build_graph(li: LocalIndex, cfg: GraphConfig = GraphConfig(), scfg: SearchConfig = SearchConfig(),
                progress: Progress = None) -> Graph:
    """Search every gallery image against the index (itself excluded) and keep its top-N (graph_rows: in
    batches of about cfg.batch_rows query descriptors, each image's first cfg.query_max when set)."""
    t0 = time.perf_counter()
    n = li.n_images
    r, c, v = graph_rows(li, range(n), scfg, cfg, progress)
    G = sp.csr_matrix((v, (r, c)), shape=(n, n), dtype=np.float32)
    return Graph(G, list(li.paths), graph_params(cfg, scfg),
                 {"graph": time.perf_counter() - t0})


def update_graph(li: LocalIndex, g: Graph, cfg: GraphConfig = GraphConfig(), scfg: SearchConfig = SearchConfig(),
                 progress: Progress = None) -> Graph:
    """Extend a graph after images were appended to the index.

    New images are searched (their rows, batched like build_graph). Old rows gain the new images
    as columns with the mirrored score (new -> old), which is what the
    symmetrised block uses anyway; old rows are not re-searched. Rebuild with
    ``build_graph`` to get exactly the graph of a fresh build.
    """
    t0 = time.perf_counter()
    n_old, n = len(g.paths), li.n_images
    if li.paths[:n_old] != g.paths:
        return build_graph(li, cfg, scfg, progress)
    r, c, v = graph_rows(li, range(n_old, n), scfg, cfg, progress)
    old = g.G.tocoo()
    back = c < n_old
    rows = np.concatenate([old.row, r, c[back]])
    cols = np.concatenate([old.col, c, r[back]])
    vals = np.concatenate([old.data, v, v[back]])
    G = sp.coo_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float32).tocsr()
    G.sum_duplicates()
    return Graph(G, list(li.paths), {**g.params, "updated": n - n_old},
                 {"graph_update": time.perf_counter() - t0})


GRAPH_FILE = "graph.npz"
FIX = "Re-run `python -m l2g index` on the gallery (or `python -m l2g check DIR --repair`): it rebuilds the graph."


def save_graph(folder: Path, g: Graph) -> dict:
    """Write graph.npz atomically into the index folder; returns its record (l2g.store)."""
    G = g.G.tocsr()
    return store.save_npz(Path(folder) / GRAPH_FILE, data=G.data, indices=G.indices, indptr=G.indptr,
                          shape=np.asarray(G.shape), paths=np.asarray(g.paths, dtype=str),
                          params=np.asarray(json.dumps(g.params)))


def load_graph(folder: Path, li: LocalIndex | None = None, rec: dict | None = None) -> Graph | None:
    """The saved graph, or None when there is none or it does not match the index's images (its
    settings are checked by ensure_graph's fingerprint). With ``rec`` (the manifest's record) the
    file is checked first: IndexFormatError when it is damaged."""
    path = Path(folder) / GRAPH_FILE
    if rec is None and not path.is_file():
        return None
    z = store.load_npz(path, rec, FIX)
    try:
        G = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        paths = [str(p) for p in z["paths"]]
        params = json.loads(str(z["params"]))
    except (KeyError, ValueError) as e:
        raise IndexFormatError(f"{path}: damaged ({type(e).__name__}: {e}). {FIX}") from None
    if li is not None and paths != li.paths:
        return None
    return Graph(G, paths, params)


def graph_params(cfg: GraphConfig, scfg: SearchConfig) -> dict:
    """The settings a graph depends on: a saved graph with other settings is rebuilt."""
    cap = {"query_max": cfg.query_max} if cfg.query_max else {}   # absent when 0: older graphs stay valid
    return {"top_n": cfg.top_n, "knn": scfg.knn, "kernel": scfg.kernel, "p0": scfg.p0, "alpha": scfg.alpha, **cap}


def ensure_graph(folder: Path, li: LocalIndex, cfg: GraphConfig = GraphConfig(),
                 scfg: SearchConfig = SearchConfig(), progress: Progress = None,
                 repair: bool = True) -> store.Stage:
    """The graph of ``li`` in ``folder`` (``store.ensure``): loaded when its settings and image
    list match, extended when images were appended (built afresh once the gallery reached
    ``cfg.rebuild_growth`` times the graph's images: then an index built in steps has the graph of
    one built at once), else built; a damaged graph.npz is rebuilt
    (repair=True) or an IndexFormatError (repair=False)."""
    def build(old: Graph | None):
        n_old = 0 if old is None else len(old.paths)
        if old is not None and old.paths == li.paths[:n_old] and li.n_images < cfg.rebuild_growth * n_old:
            g, action = update_graph(li, old, cfg, scfg, progress), "extended"
        else:
            g, action = build_graph(li, cfg, scfg, progress), "built"
        save_graph(folder, g)
        return g, action

    return store.ensure(folder, GRAPH_FILE, store.fingerprint(graph_params(cfg, scfg)), li.order,
                        lambda rec: load_graph(folder, rec=rec), build, repair, li.cfg.store, FIX)
