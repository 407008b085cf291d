"""l2g.confidence: thresholds from the null distribution of non-matching gallery pairs, and the
verdict on queries (a demo view is a match; a photo from outside the gallery is not)."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from l2g import confidence as CF
from l2g import config as C
from l2g import pipeline as P
from l2g.datasets import GroundTruth
from l2g.graph import Graph
from tests.conftest import build_small, small_data_dir

# scikit-image pictures the demo does not use (checked against l2g.demo below): queries from outside
OUTSIDE = ("horse.png", "logo.png", "phantom.png", "microaneurysms.png")


def _graph(rows: dict, n: int) -> Graph:
    r, c, v = zip(*[(i, j, s) for i, row in rows.items() for j, s in row.items()])
    return Graph(sp.csr_matrix((np.float32(v), (r, c)), shape=(n, n)), [f"im{i}.jpg" for i in range(n)])


def test_threshold_is_the_upper_quantile_of_a_known_null():
    null = np.arange(200) / 200.0            # uniform on [0, 1)
    for q in (0.9, 0.95, 0.975):
        t = CF.threshold(null, q)
        share = np.mean(null >= t)
        assert share <= 1 - q + 1e-9 and share >= 1 - q - 0.01, (q, t, share)
    assert CF.threshold(np.zeros(20), 0.975) > 0      # all-equal null: the bound lies above it


def test_non_matching_pairs_from_groups_and_from_the_row_tail():
    g = _graph({0: {1: 0.9, 2: 0.2, 3: 0.3}, 1: {0: 0.8, 3: 0.1}, 2: {0: 0.4, 3: 0.5}, 3: {1: 0.2}}, 4)
    gt = GroundTruth(root=".", groups={"a": ["im0.jpg", "im1.jpg"], "b": ["im3.jpg"]}, distractors=["im2.jpg"])
    rows, src = CF.non_matching(g, gt, skip=1)
    assert src == "groups"
    assert rows[0][0].tolist() == [3, 2] and np.allclose(rows[0][1], [0.3, 0.2])   # its group mate left out
    assert rows[2][0].tolist() == [3, 0]                                           # a distractor: every pair
    rows, src = CF.non_matching(g, None, skip=1)
    assert src == "graph" and rows[0][0].tolist() == [3, 2] and rows[1][0].tolist() == [3]


def test_calibrate_takes_its_thresholds_from_the_null(monkeypatch):
    n = 40
    rng = np.random.default_rng(0)
    null = np.round(rng.uniform(0.0, 0.2, n), 4)
    # image 2k and 2k+1 form a group scoring 0.9; each image's best other pair scores null[i]
    rows = {i: {i ^ 1: 0.9, (i + 2) % n: float(null[i])} for i in range(n)}
    g = _graph(rows, n)
    gt = GroundTruth(root=".", groups={f"g{k}": [f"im{2 * k}.jpg", f"im{2 * k + 1}.jpg"] for k in range(n // 2)})
    inl = {i: int(v) for i, v in enumerate(rng.integers(0, 30, n))}
    li = SimpleNamespace(features=lambda i: i)
    monkeypatch.setattr(CF, "verify_pair", lambda a, b, cfg: SimpleNamespace(n_inliers=inl[a] if (b - a) % n == 2
                                                                                     else inl[b]))
    cfg = C.ConfidenceConfig(fa_target=0.1, verify_top=1)
    cal = CF.calibrate(li, g, gt, cfg)
    assert cal.source == "groups" and np.allclose(sorted(cal.null_scores), sorted(null))
    assert cal.score_threshold == pytest.approx(CF.threshold(null, 0.95))
    assert cal.inlier_threshold == max(int(np.ceil(CF.threshold(list(inl.values()), 0.95))), 12)
    assert np.mean(null >= cal.score_threshold) <= 0.05
    few = CF.calibrate(li, g, gt, C.ConfidenceConfig(min_null=n + 1))
    assert not few.calibrated and CF.judge(few, 0.0, 0).confident       # too few samples: judges nothing


def test_judge_needs_geometry_for_a_score_match():
    cal = CF.Calibration(0.1, 30, [], [], "groups", {"min_inliers": 12})
    assert not CF.judge(cal, 0.5, 0).confident           # a high score from a few generic keypoints
    assert CF.judge(cal, 0.5, 12).by == "score"
    assert CF.judge(cal, 0.01, 30).by == "inliers"
    assert CF.judge(cal, 0.5, 40).by == "score+inliers"
    v = CF.judge(cal, 0.05, 20)
    assert not v.confident and "0.050" in v.evidence() and "threshold 30" in v.evidence()


# ----------------------------------------------------------------------------- on the demo


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory):
    from l2g.app.settings import Gallery, parse_settings

    env = build_small(small_data_dir(tmp_path_factory))
    s = parse_settings([], env)
    return P.open_engine(s.demo_dir, s.index_dir(Gallery("demo", s.demo_dir.resolve(), "demo")), s.cfg, sync=False)


@pytest.fixture(scope="module")
def calibration(small_engine):
    e = small_engine
    return CF.ensure_calibration(e.li.folder, e.li, e.graph, e.gt, e.cfg.confidence, e.cfg.verify).result


def _verdict(eng, cal, q):
    run = P.run_query(eng, q, None, ["local"])
    return CF.assess(cal, eng.li, q.feats, run.local.ids, run.local.scores, eng.cfg.verify)


@pytest.mark.timeout(900)
def test_a_demo_view_is_a_confident_match(small_engine, calibration):
    eng = small_engine
    assert calibration.calibrated and calibration.source == "groups"
    groups = [m for m in eng.gt.groups.values() if len(m) > 1][:3]
    for members in groups:
        v = _verdict(eng, calibration, P.make_query(eng, gallery_id=eng.li.id_of(members[1])))
        assert v.confident, (members[1], v.evidence())
        assert eng.gt.group_of(eng.li.paths[v.best_id]) == eng.gt.group_of(members[1])


@pytest.mark.timeout(900)
def test_a_photo_from_outside_the_gallery_is_refused(small_engine, calibration):
    from l2g import demo
    from l2g.images import load_image

    eng = small_engine
    used = set(demo.DISTRACTOR_SOURCES) | {f for fs in demo.GROUP_SOURCES.values() for f in fs}
    outside = [f for f in OUTSIDE if f not in used]
    assert len(outside) >= 2, "the demo now uses these pictures: pick others from scikit-image"
    for f in outside:
        img = load_image(demo.skimage_data_dir() / f, max_side=eng.cfg.features.max_side)
        v = _verdict(eng, calibration, P.make_query(eng, source=img, name=f))
        assert not v.confident, (f, v.evidence())
        assert v.inliers < calibration.inlier_threshold


@pytest.mark.timeout(900)
def test_calibration_is_stored_beside_the_index_and_repaired(small_engine, calibration):
    e = small_engine
    again = CF.ensure_calibration(e.li.folder, e.li, e.graph, e.gt, e.cfg.confidence, e.cfg.verify)
    assert again.action == "loaded" and again.result.score_threshold == calibration.score_threshold
    f = e.li.folder / CF.FILE
    d = json.loads(f.read_text())
    f.write_text(json.dumps({**d, "score_threshold": 0.0}))       # edited by hand: the checksum fails
    fixed = CF.ensure_calibration(e.li.folder, e.li, e.graph, e.gt, e.cfg.confidence, e.cfg.verify)
    assert fixed.action == "rebuilt" and fixed.result.score_threshold == calibration.score_threshold
    other = CF.ensure_calibration(e.li.folder, e.li, e.graph, e.gt, C.ConfidenceConfig(fa_target=0.2), e.cfg.verify)
    assert other.action == "built" and other.result.params["fa_target"] == 0.2
    CF.ensure_calibration(e.li.folder, e.li, e.graph, e.gt, e.cfg.confidence, e.cfg.verify)   # back to the default


@pytest.mark.timeout(900)
def test_calibrate_command_prints_thresholds_and_error_rates(small_engine, capsys, monkeypatch):
    from l2g.cli import main

    for k, v in {"L2G_NUM_FEATURES": "300", "L2G_MAX_SIDE": "320"}.items():
        monkeypatch.setenv(k, v)
    data = small_engine.li.folder.parents[2]              # <data>/index/demo/<preset>
    demo = data / "demo"
    assert main(["calibrate", str(demo), "--data-dir", str(data), "--fa-target", "1.5"]) == 2
    assert "--fa-target must lie in (0, 1)" in capsys.readouterr().err
    assert main(["calibrate", str(demo), "--data-dir", str(data), "--folds", "0"]) == 2   # was ZeroDivisionError
    assert "--folds must be at least 1" in capsys.readouterr().err
    assert main(["calibrate", str(demo), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "null from groups" in out and "confidence.json" in out
    rows = re.findall(r"\| (group image[^|]*|distractor[^|]*)\| (\d+) \| ([\d.]+|None) \|", out)
    assert len(rows) == 4, out
    fr = next(float(r[2]) for r in rows if "false reject" in r[0])
    fa = [float(r[2]) for r in rows if "false accept" in r[0]]
    assert fr <= 0.1 and all(0 <= a <= 0.5 for a in fa), out      # the demo's views are easy matches


@pytest.mark.timeout(900)
def test_the_verdict_shares_the_query_s_ransac_with_global_to_local(small_engine, calibration, monkeypatch):
    """assess verified its candidates itself; with the query's memo (methods.Context.inliers) each
    (query, image) pair is verified once, whichever of g2l and the verdict asks first."""
    from l2g import verify

    eng = small_engine
    members = next(m for m in eng.gt.groups.values() if len(m) > 1)
    q = P.make_query(eng, gallery_id=eng.li.id_of(members[1]))
    run = P.run_query(eng, q, None, ["local", "g2l"])
    assert run.global_ids is not None
    alone = CF.assess(calibration, eng.li, q.feats, run.local.ids, run.local.scores, eng.cfg.verify)
    pairs = []
    real = verify.verify_pair

    def counting(qf, g, *a, **kw):
        pairs.append(g)
        return real(qf, g, *a, **kw)

    monkeypatch.setattr(verify, "verify_pair", counting)
    monkeypatch.setattr(CF, "verify_pair", counting)
    top = eng.cfg.confidence.verify_top
    shared = CF.assess(calibration, eng.li, q.feats, run.local.ids, run.local.scores, eng.cfg.verify,
                       inliers=run.ctx.inliers)
    done_by_g2l = {int(j) for j in run.global_ids[:eng.cfg.verify.top]}
    assert len(pairs) == len({int(j) for j in run.local.ids[:top]} - done_by_g2l) < top
    again = CF.assess(calibration, eng.li, q.feats, run.local.ids, run.local.scores, eng.cfg.verify,
                      inliers=run.ctx.inliers)
    assert len(pairs) == len({int(j) for j in run.local.ids[:top]} - done_by_g2l)      # nothing verified again
    for v in (shared, again):
        assert (v.confident, v.inliers, v.best_id, v.by) == (alone.confident, alone.inliers, alone.best_id, alone.by)


@pytest.mark.parametrize("score, inliers, says, not_says", [
    (0.05, 20, ["score 0.050 is below its threshold 0.100", "20 verified inliers are fewer than the 30"],
     ["passes"]),                                                       # the score too low
    (0.50, 3, ["score 0.500 passes its threshold 0.100", "needs at least 12 verified inliers", "3 found",
               "30 for a match on inliers alone"], ["below"]),            # too few inliers for either test
    (0.05, 3, ["score 0.050 is below its threshold 0.100", "3 verified inliers are fewer than the 30"],
     ["passes"]),                                                       # both
])
def test_a_refusal_says_which_condition_failed(score, inliers, says, not_says):
    """The reason names the failed condition(s): a score above its threshold is not called too low."""
    v = CF.judge(CF.Calibration(0.1, 30, [], [], "groups", {"min_inliers": 12}), score, inliers)
    assert not v.confident
    why = v.shortfall()
    assert all(s in why for s in says) and not any(s in why for s in not_says), why
    assert CF.judge(CF.Calibration(0.1, 12, [], [], "groups", {"min_inliers": 12}), 0.5, 0).shortfall() == (
        "the top local score 0.500 passes its threshold 0.100, but a match also needs at least 12 verified "
        "inliers: 0 found")
    assert CF.judge(CF.Calibration(0.1, 30, [], [], "groups", {"min_inliers": 12}), 0.5, 40).shortfall() == ""
