"""Issue 12, round 5: the global descriptor in the re-ranking, two-fold; and how hard the official half B is.

    python benchs/quality_round5.py           # from quality_leads' and quality_twofold's caches, seconds
    python benchs/quality_round5.py explore   # the local similarity itself (searches the index again, ~1 min)

Scored as quality_round4.py (the same pass rule: B tuned on A >= 71.6, A tuned on B >= 68.8, cv mean gain
> 0 with P(gain > 0) >= 0.8 over 200 random group splits). Declared before they ran:

 1. the l2g_blend weight, tuned two-fold: score = (1 - lw) ((1 - w) cos_mds + w cos_vlad) + lw hub term (what
    l2g.rerank.blend computes with the shipped guard), w in (0, 0.1, 0.19, 0.3, 0.4, 0.5). w = 0.19 is the
    product's l2g_blend (a third-party reading of the paper), so far never tuned by group.
 2. the global cosine inside the block before MDS: S = (1 - lam) S_local + lam S_vlad, S_local the shipped
    normalised block (query row + max-symmetrised graph block over its p99), S_vlad the VLAD cosines of query
    and head clipped at 0 (unit diagonal), then the shipped diffusion, MDS and guard; lam in (0, 0.1, 0.2,
    0.3, 0.5).
 3. not a lead: the shipped rule's grid (hub n, beta, w) over the same 200 random group splits, tuned on one
    half and scored on the other: in how many splits does each half reach local + 5, and where does the
    official split's half B fall among the 400 half-scores (its rank of l2g - local).

``explore`` (not declared; run after 1-3 as a diagnosis, full set and halves at the shipped values): is the
local similarity itself the limit? Every gallery image searches the index again (its votes kept), and the
whole similarity matrix -- query rows, graph block and hub rows alike -- is replaced by (a) CANN as shipped
(must reproduce the cached figures), (b) weak geometric consistency of the votes (Jegou et al. 2008: the
kernel mass in the best two adjacent of 12 orientation-difference bins), (c) the query row symmetrised with
the reverse direction (max or mean of s(q, c) and s(c, q); the graph unchanged), (d) search depth knn 10, 50,
100 (20 shipped).

Measured (issue-8 default features, IVF seed 0). Leads 1-2, tuned on A -> B / tuned on B -> A / x-fold / cv:
1. w 0.19 -> 70.4 / w 0 -> 73.4 / 71.9 / -0.25 (0.50), P 0.43; 2. lam 0.1 -> 70.5 / lam 0 -> 73.4 / 72.0 /
-0.06 (0.22), P 0.03. Neither passes. 3: the official split gives A +9.6, B +3.9; over the 200 random splits
both halves reach +5 in 38 %, a half in 66 % of the 400 half-scores (mean +5.71, sd 1.89, -> +0.4 .. +11.9);
the official B is below 83 % of them. explore, local / l2g on the full set (B's l2g - local): (a) 65.2 / 72.0
(+3.9), (b) 65.6 / 68.7 (+4.2), (c) max 61.9 / 68.4 (+5.3), mean 64.3 / 69.5 (+3.8), (d) knn 10 65.0 / 70.9
(+6.4), 50 64.5 / 69.2 (+1.1), 100 62.8 / 65.6 (+0.8): every variant lowers l2g; where B's margin grows, it
is because local search got worse.
"""
from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchs import quality_leads as L  # noqa: E402
from benchs import quality_round4 as R  # noqa: E402
from benchs import quality_twofold as Q  # noqa: E402

W_BLEND = (0.0, 0.1, 0.19, 0.3, 0.4, 0.5)
LAM = (0.0, 0.1, 0.2, 0.3, 0.5)


def vlad(d: dict):
    """Per query: (k,) VLAD cosine to the head, (k+1, k+1) VLAD cosines of query + head (the twofold cache)."""
    c = Q._load(Q.INDEX / Q.LOCAL)
    z = np.load(Q.INDEX / "global.npz", allow_pickle=True)
    xb = z["xb"].astype(np.float64)
    xb /= np.maximum(np.linalg.norm(xb, axis=1, keepdims=True), 1e-12)
    out = []
    for it in d["items"]:
        head = it["F"][:L.K]
        g = np.asarray(c["gsim"][it["id"]], np.float64)[head]
        X = xb[np.concatenate([[it["id"]], head])]
        assert np.allclose(X[1:] @ X[0], g, atol=1e-4), "global.npz != the cached query cosines"
        out.append((g, X @ X.T))
    return out


def lead1(d, gv):
    out = {}
    lw = R.SHIP["w"]
    for it, (g, _) in zip(d["items"], gv):
        q, s, cm, srt = R.parts(it)
        ht = R.hterm(q, srt, R.SHIP["n"], R.SHIP["beta"])
        for w in W_BLEND:
            out.setdefault(f"w={w}", []).append(R.ap_of(it, len(q), (1 - lw) * ((1 - w) * cm + w * g) + lw * ht))
    return out


def lead2(d, gv):
    out = {}
    for it, (_, G) in zip(d["items"], gv):
        q = it["q"][:L.K]
        s0 = L.normalise(L.block(q, it["B"][:L.K, :L.K]), "p99")
        Sg = np.clip(G, 0.0, None)
        np.fill_diagonal(Sg, 1.0)
        srt = -np.sort(-it["row_max"][:L.K], axis=1)[:, :max(L.HUB_N)]
        for lam in LAM:
            s = L.diffused((1 - lam) * s0 + lam * Sg if lam else s0, R.SHIP["a"])
            out.setdefault(f"lam={lam}", []).append(R.ap_of(it, len(q), R.shipped(q, L.mds_cos(s), srt)))
    return out


def hardness(d, sp) -> None:
    """Lead 3 (not a lead): the shipped grid tuned per split; local + 5 reached per half, and the official B."""
    lo = L.score(d, lambda q, B, it: q)
    grid = {}
    for it in d["items"]:
        q, s, cm, srt = R.parts(it)
        for n, beta, w in itertools.product(L.HUB_N, L.HUB_BETA, L.HUB_W):
            grid.setdefault((n, beta, w), []).append(R.ap_of(it, len(q), (1 - w) * cm + w * R.hterm(q, srt, n, beta)))
    M = np.array(list(grid.values()))
    margins = []
    for S in sp:
        ia, ib = M[:, S].mean(1).argmax(), M[:, ~S].mean(1).argmax()
        margins.append((100 * (M[ib, S].mean() - lo[S].mean()), 100 * (M[ia, ~S].mean() - lo[~S].mean())))
    m = np.array(margins)
    off_a, off_b = m[0]
    rnd = m[1:]
    both = np.mean((rnd[:, 0] >= 5) & (rnd[:, 1] >= 5))
    halves = rnd.ravel()
    print(f"\nshipped grid ({len(M)} points) tuned on one half, l2g - local on the other:")
    print(f"  official split: A {off_a:+.1f}, B {off_b:+.1f}")
    print(f"  200 random group splits: both halves >= +5 in {100 * both:.0f} %; a half >= +5 in "
          f"{100 * np.mean(halves >= 5):.0f} % of 400 half-scores; half-score mean {halves.mean():+.2f}, "
          f"sd {halves.std():.2f}, min {halves.min():+.1f}, max {halves.max():+.1f}")
    print(f"  official B's margin is below {100 * np.mean(halves > off_b):.0f} % of the random half-scores")


def explore() -> None:
    from l2g.search import first_hits, kernel, knn

    d = L.load()
    ds, eng = Q.engine()
    li, scfg = eng.li, eng.cfg.search
    n = li.n_images
    prank = np.argsort(np.argsort(np.array(li.paths, dtype=object)))
    feats = [li.features(i) for i in range(n)]
    kp = np.concatenate([f.kpts for f in feats])
    offs = np.asarray(li.offsets)

    def matrix(k=scfg.knn, wgc=False):
        cfg = dataclasses.replace(scfg, knn=k)
        M = np.zeros((n, n))
        for i, f in enumerate(feats):
            v = first_hits(*knn(li, f.desc, k), li.img_of, n, exclude=i)
            w = kernel(v.dist, cfg).astype(np.float64)
            if not wgc:
                M[i] = np.bincount(v.img, w, n) / len(f)
                continue
            da = np.mod(kp[v.row, 3] - f.kpts[v.q, 3], 360.0)
            H = np.zeros((n, 12))
            np.add.at(H, (v.img, (da // 30).astype(int) % 12), w)
            M[i] = (H + np.roll(H, -1, 1)).max(1) / len(f)
        return M

    def report(name, M, Q_rows=None):
        items = []
        for it in d["items"]:
            i = it["id"]
            row = (M if Q_rows is None else Q_rows)[i].copy()
            row[i] = -1.0
            F = np.lexsort((prank, -row))
            F = F[F != i]
            pos = set(it["F"][it["rel"]].tolist())
            head = F[:L.KMAX]
            rows, cols = M[head].copy(), M[:, head].T.copy()
            rows[:, i] = cols[:, i] = 0.0
            items.append({"id": i, "F": F, "rel": np.array([j in pos for j in F]), "npos": it["npos"],
                          "q": row[head], "B": M[np.ix_(head, head)], "row_max": np.maximum(rows, cols)})
        dd = {"items": items, "fold": d["fold"], "pair": d["pair"]}
        lo, sh = L.score(dd, lambda q, B, it: q), L.score(dd, L.hub_guard, **R.SHIP)
        A = d["fold"]
        print(f"| {name} | {Q.mean(lo):.1f} | {Q.mean(lo, A):.1f} | {Q.mean(lo, ~A):.1f} | {Q.mean(sh):.1f} "
              f"| {Q.mean(sh, A):.1f} | {Q.mean(sh, ~A):.1f} | {Q.mean(sh - lo, ~A):+.1f} |", flush=True)

    assert np.allclose(offs[-1], len(kp)), "features and index rows differ"
    print("| similarity | local | A | B | l2g | A | B | B: l2g - local |\n|---" + "|---" * 7 + "|")
    M = matrix()
    report("(a) CANN, knn 20 (shipped)", M)
    report("(b) weak geometric consistency", matrix(wgc=True))
    report("(c) query row max(s(q,c), s(c,q))", M, np.maximum(M, M.T))
    report("(c) query row mean", M, 0.5 * (M + M.T))
    for k in (10, 50, 100):
        report(f"(d) knn {k}", matrix(k))


def main() -> None:
    if sys.argv[1:] == ["explore"]:
        return explore()
    t0 = time.perf_counter()
    d = L.load()
    ref = L.score(d, L.hub_guard, **R.SHIP)
    sp = R.splits(d)
    gv = vlad(d)
    rows = []
    for key, name, fn, ship in (("1", "1. l2g_blend weight w, two-fold", lead1, "w=0.0"),
                                ("2", "2. VLAD cosine in the block (lam)", lead2, "lam=0.0")):
        aps = {lab: np.array(v) for lab, v in fn(d, gv).items()}
        assert np.array_equal(aps[ship], ref), f"lead {key}: the shipped point != hub_guard"
        rows.append((name, len(aps), R.evaluate(d, aps, ref, sp), aps))
    A = d["fold"]
    print("| lead | points | tuned on A | -> B | tuned on B | -> A | x-fold | x-fold 2-img "
          "| cv gain vs shipped: mean (sd) | P(>0) | passes |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for nm, npt, r, _ in rows:
        print(f"| {nm} | {npt} | {r['ba']} | {r['B_onA']:.1f} | {r['bb']} | {r['A_onB']:.1f} | {r['xf']:.1f} "
              f"| {r['xf2']:.1f} | {r['cv']:+.2f} ({r['cvsd']:.2f}) | {r['p']:.2f} | {'yes' if r['pass'] else 'no'} |")
    for nm, _, _, aps in rows:
        print(f"{nm}: " + "; ".join(f"{k} A {Q.mean(v, A):.1f} B {Q.mean(v, ~A):.1f} full {Q.mean(v):.1f}"
                                    for k, v in aps.items()))
    hardness(d, sp)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
