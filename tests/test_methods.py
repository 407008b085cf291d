"""The method registry: every method runs on the demo engine; g2l@N verifies at most N images;
the re-ranking sliders redo only re-ranking methods; adding a method is one register call."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from l2g import methods as M
from l2g.errors import L2GError, QueryError, UnknownMethod
from l2g.pipeline import add_methods, make_query, rerank_run, run_query


@pytest.fixture(scope="module")
def demo_run(demo_engine):
    """Every registered method on one demo gallery query (group 'coffee')."""
    gid = demo_engine.li.id_of("groups/coffee/coffee_orig.jpg")
    return run_query(demo_engine, make_query(demo_engine, gallery_id=gid))


def test_every_method_runs_and_leaves_out_the_query(demo_engine, demo_run):
    gid = demo_run.query.gallery_id
    assert list(demo_run.results) == list(M.METHODS)     # all of them, in registry order
    n = demo_engine.li.n_images
    for name, r in demo_run.results.items():
        assert isinstance(r, M.Ranking) and len(r.ids) > 0, name
        assert gid not in set(r.ids.tolist()), name
        assert len(set(r.ids.tolist())) == len(r.ids) and len(r.scores) <= len(r.ids), name
        full = demo_run.full_ranking(name)
        assert sorted(full.tolist()) == sorted(set(range(n)) - {gid}), name   # the whole gallery once
        assert set(demo_run.method_timings(name)) == set(M.get(name).stages), name


def test_same_group_first_for_local_l2g_and_g2l(demo_engine, demo_run):
    for name in ("local", "l2g", "g2l"):
        top = demo_engine.li.paths[int(demo_run.results[name].ids[0])]
        assert top.startswith("groups/coffee/"), (name, top)


def test_global_methods_absent_without_global_descriptors(demo_engine):
    eng = dataclasses.replace(demo_engine, gi=None)
    run = run_query(eng, make_query(eng, gallery_id=5))
    assert tuple(run.results) == M.names(needs_global=False)
    assert run.global_ids is None and "global" not in run.timings
    assert M.available(M.METHODS, has_global=False) == M.names(needs_global=False)


@pytest.mark.parametrize("n", (5, 10, 20, 50))
def test_g2l_at_n_verifies_at_most_n_images(demo_run, n):
    r = demo_run.results[f"g2l@{n}"]
    g = demo_run.global_ids
    assert r.extras["n_verified"] <= n and len(r.scores) <= n
    assert set(r.ids[:n].tolist()) == set(g[:n].tolist())        # only the global top N is re-ordered
    assert np.array_equal(r.ids[n:], g[n:])                      # the rest keeps the global order
    assert np.all(np.diff(r.scores) <= 0)                        # by decreasing inlier count


def test_g2l_at_n_is_the_baseline_run_with_top_n(demo_engine, demo_run):
    """Deriving g2l@N from the shared inlier counts equals verifying the top N alone."""
    from l2g.verify import g2l_rerank

    cfg = demo_engine.cfg.verify
    for n in (10, 50):
        alone = g2l_rerank(demo_engine.li, demo_run.query.feats, demo_run.global_ids,
                           dataclasses.replace(cfg, top=n), exclude=demo_run.query.gallery_id)
        assert np.array_equal(demo_run.results[f"g2l@{n}"].ids, alone.ids), n
        assert np.array_equal(demo_run.results[f"g2l@{n}"].scores, alone.inliers), n
    assert np.array_equal(demo_run.results["g2l"].ids, demo_run.results["g2l@50"].ids)
    assert M.budget(M.get("g2l"), demo_engine.cfg) == cfg.top


def test_rerank_run_redoes_only_reranking_methods(demo_engine, demo_run):
    rc = dataclasses.replace(demo_engine.cfg.rerank, k=10, dim=4)
    run2 = rerank_run(demo_engine, demo_run, rc)
    for name, m in M.METHODS.items():
        same = run2.results[name] is demo_run.results[name]
        assert same != m.rerank, name
    assert len(run2.l2g.head) == 10 and run2.l2g.X.shape[1] == 4
    assert len(demo_run.l2g.head) == min(demo_engine.cfg.rerank.k, len(demo_run.local.ids))
    assert run2.local is demo_run.local


def test_add_methods_reuses_the_verified_inliers(demo_engine):
    run = run_query(demo_engine, make_query(demo_engine, gallery_id=40), methods=("local", "g2l"))
    memo = len(run.ctx.memo)
    add_methods(run, ["g2l@10", "g2l@20"])
    assert len(run.ctx.memo) == memo          # nothing verified twice
    assert list(run.results) == ["g2l", "g2l@10", "g2l@20", "local"]


def test_unknown_method_and_tiny_rectangle_are_l2g_errors(demo_engine):
    q = make_query(demo_engine, gallery_id=3)
    with pytest.raises(UnknownMethod, match="choose from"):
        run_query(demo_engine, q, methods=("local", "nope"))
    with pytest.raises(QueryError, match="too small"):
        make_query(demo_engine, gallery_id=3, bbox=(0, 0, 10, 10))
    assert issubclass(UnknownMethod, L2GError) and issubclass(QueryError, L2GError)


def test_a_new_method_is_picked_up_everywhere(demo_engine, demo_gallery, capsys):
    """Adding a method is one register call: the CLI, evaluate and the app labels see it."""
    from l2g.app import core
    from l2g.cli import main, parser

    def reverse_local(ctx):
        return M.Ranking(ctx.local.ids[::-1], ctx.local.scores[::-1])

    M.register(M.Method("rev_local", "local, reversed", reverse_local))
    try:
        assert "rev_local" in parser().parse_args(["eval", "x", "--methods", "rev_local"]).methods
        run = run_query(demo_engine, make_query(demo_engine, gallery_id=2), methods=("rev_local", "local"))
        assert np.array_equal(run.results["rev_local"].ids, run.local.ids[::-1])
        assert core.method_scores(run, "rev_local")[int(run.local.ids[-1])] == pytest.approx(run.local.scores[-1])
        q = demo_gallery / "groups/chelsea/chelsea_crop1.jpg"
        assert main(["search", str(q), "--index", str(demo_engine.li.folder), "--method", "rev_local"]) == 0
        assert "rev_local ranking" in capsys.readouterr().out
    finally:
        del M.METHODS["rev_local"]
    with pytest.raises(ValueError, match="twice"):
        M.register(M.METHODS["local"])
