"""App-side numbers of the query page, called without a browser: the match view's verified inliers
(l2g.app.core.pair_matches: one count per pair, the one global-to-local ranks by) and the positives of
a query (core.positives_for), with and without a box drawn on a gallery image."""
from __future__ import annotations

import dataclasses

import pytest

from l2g import confidence as CF
from l2g import pipeline as P
from l2g.app import core
from l2g.app.settings import Gallery, parse_settings
from l2g.metrics import average_precision
from l2g.verify import verify_pair
from tests.conftest import build_small, small_data_dir

QUERY = "groups/chelsea/chelsea_orig.jpg"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    s = parse_settings([], build_small(small_data_dir(tmp_path_factory)))
    return P.open_engine(s.demo_dir, s.index_dir(Gallery("demo", s.demo_dir.resolve(), "demo")), s.cfg, sync=False)


@pytest.fixture(scope="module")
def run(engine):
    return P.run_query(engine, P.make_query(engine, gallery_id=engine.li.id_of(QUERY)))


def test_the_match_view_reports_the_inliers_global_to_local_ranks_by(engine, run):
    g2l = run.results["g2l"]
    counts = dict(zip(map(int, g2l.ids), map(int, g2l.scores)))        # its verified head: id -> inliers
    shown = [j for j in map(int, run.local.ids[:8]) if j in counts]
    assert len(shown) >= 3
    differs = 0
    for j in shown:
        pm = core.pair_matches(engine, run, j)
        assert pm.n_inliers == counts[j] == int(pm.verified.inliers.sum()), engine.li.paths[j]
        assert pm.verified.n_matches >= pm.n_inliers
        # the same number without the query's memo (a run without its Context verifies afresh)
        assert core.pair_matches(engine, dataclasses.replace(run, ctx=None), j).n_inliers == counts[j]
        local = run.local.matches[j]
        assert pm.n_local == len(local) and pm.local_capped == (len(local) >= engine.cfg.search.max_matches)
        differs += verify_pair(run.query.feats, engine.li.features(j), engine.cfg.verify,
                               matches=local).n_inliers != counts[j]
    print(f"{differs} of {len(shown)} pairs count other inliers over the local search's own matches")


def test_a_capped_local_match_count_is_flagged(engine):
    cfg = engine.cfg.replace(search__max_matches=5)
    run = P.run_query(engine, P.make_query(engine, gallery_id=engine.li.id_of(QUERY)), cfg, ["local"])
    j = int(run.local.ids[0])
    pm = core.pair_matches(engine, run, j)
    assert pm.n_local == 5 and pm.local_capped


def test_the_pair_warning_gives_the_match_view_s_count(engine, run):
    from l2g.app.verdict import pair_text

    j = int(run.local.ids[0])
    n = core.pair_matches(engine, run, j).n_inliers
    v = CF.Verdict(True, 1.0, n, j, 2.0, n + 1, "inliers", {"min_inliers": 12})   # the pair fails both tests
    text = pair_text(engine, v, run, j, n)
    assert text and f"{n} verified inliers are fewer than the {n + 1}" in text, text
    assert pair_text(engine, dataclasses.replace(v, score_threshold=0.0, inlier_threshold=n), run, j, n) is None


def test_a_box_on_a_gallery_image_counts_its_source_as_a_positive(engine):
    src = engine.li.id_of(QUERY)
    group = {engine.li.id_of(p) for p in engine.gt.groups[engine.gt.group_of(QUERY)]}
    whole = P.make_query(engine, gallery_id=src)
    assert core.positives_for(engine, whole) == group - {src}          # a whole image leaves itself out
    w, h = whole.feats.size                                            # (W, H) of the loaded image
    box = P.make_query(engine, gallery_id=src, bbox=(w * 0.2, h * 0.2, w * 0.8, h * 0.8))
    pos = core.positives_for(engine, box)
    assert pos == group                                                 # its source is one of them
    run = P.run_query(engine, box, methods=["local"])
    ranking = core.full_ranking(engine, run, "local")
    assert ranking[0] == src                                            # the crop finds its source first
    ap = core.aps(engine, run, pos)["local"]
    others = [j for j in ranking if j != src]
    assert ap == pytest.approx(average_precision(ranking, pos))
    assert ap >= average_precision(others, pos - {src})                  # found first, it does not lower AP
    assert average_precision([src] + sorted(pos - {src}) + [j for j in others if j not in pos], pos) == 1.0


@pytest.mark.parametrize("with_context", [True, False])
def test_the_match_view_loads_the_candidate_s_features_once(engine, run, monkeypatch, with_context):
    """One match view reads the candidate's features once: the drawing and the verification share them
    (with the run's memo, as the page has it, or without, verifying afresh); shown again, none."""
    from types import SimpleNamespace

    from l2g.app import matchview

    loads = []
    real = type(engine.li).features
    monkeypatch.setattr(type(engine.li), "features", lambda li, i: loads.append(int(i)) or real(li, i))
    monkeypatch.setattr(matchview, "st", SimpleNamespace(session_state={"l2g_run_key": ("test", with_context)}))
    r = run if with_context else dataclasses.replace(run, ctx=None)
    assert (core.query_context(engine, r) is not None) == with_context
    j = int(run.local.ids[1])
    pm, _, _, gf = matchview._verified(engine, r, j)
    assert loads == [j], loads
    assert pm.n_inliers == int(run.results["g2l"].score_of().get(j, pm.n_inliers)) and len(gf) > 0
    matchview._verified(engine, r, j)            # the inliers-only toggle, a re-ranking slider: the memo
    assert loads == [j], loads
