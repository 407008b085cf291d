"""The guided tour's claims, checked on the generated demo with the shipped defaults, and the
first start's indexing order."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from l2g import demo_tour
from l2g.demo_tour import FIRST_N, TOUR, TourStop, index_order
from l2g.metrics import average_precision


def test_index_order_puts_tour_groups_first_and_lists_every_image_once(monkeypatch):
    meta = {"groups": {"a": ["g/a1", "g/a2"], "b": ["g/b1", "g/b2"]},
            "distractors": ["d/x1", "d/x2", "d/y1", "d/y2", "d/z"],
            "views": {"d/x1": {"kind": "procedural", "source": "procedural:dots:0"},
                      "d/x2": {"kind": "procedural", "source": "procedural:dots:0"},
                      "d/y1": {"kind": "photo", "source": "grass.png"},
                      "d/y2": {"kind": "photo", "source": "grass.png"},
                      "d/z": {"kind": "photo", "source": "moon.png"}}}
    monkeypatch.setattr(demo_tour, "TOUR", (TourStop("k", "g/b2", "t", "c", focus="d/y2"),))
    order = index_order(meta)
    assert order[:3] == ["g/b1", "g/b2", "d/y2"]                  # the stop's group, then what it points at
    assert order[3:6] == ["d/y1", "d/x1", "d/z"]                   # its family, then one of each other family
    assert order[6:] == ["g/a1", "g/a2", "d/x2"]
    assert sorted(order) == sorted(meta["groups"]["a"] + meta["groups"]["b"] + meta["distractors"])


def test_index_order_without_views_counts_each_distractor_as_its_own_family(monkeypatch):
    monkeypatch.setattr(demo_tour, "TOUR", ())
    meta = {"groups": {"a": ["g/a1"], "b": ["g/b1"]}, "distractors": ["d/x", "d/y"]}
    assert index_order(meta) == ["d/x", "d/y", "g/a1", "g/b1"]
    assert index_order({}) == []


# ----------------------------------------------------------------------------- on the generated demo


@pytest.fixture(scope="module")
def meta(demo_gallery):
    return json.loads((demo_gallery / "groups.json").read_text())


def test_first_part_is_a_small_demo_of_its_own(meta):
    """index_order(meta)[:FIRST_N] holds every tour query with its whole group, every image a stop
    points at, and at least one distractor of every family."""
    first = set(index_order(meta)[:FIRST_N])
    n = len(meta["distractors"]) + sum(len(p) for p in meta["groups"].values())
    assert 20 <= FIRST_N <= n // 2
    group_of = {p: g for g, ps in meta["groups"].items() for p in ps}
    for stop in TOUR:
        assert set(meta["groups"][group_of[stop.query]]) <= first, stop.key
        assert not stop.focus or stop.focus in first, stop.key
    families = {meta["views"][d]["source"] for d in meta["distractors"]}
    assert families <= {meta["views"][d]["source"] for d in first if d in meta["distractors"]}


def test_tour_stops_are_demo_images(meta):
    assert [s.key for s in TOUR] == ["partial-crop", "texture", "l2g-hurts"]
    listed = {p for ps in meta["groups"].values() for p in ps} | set(meta["distractors"])
    for s in TOUR:
        assert s.query in listed and s.focus in listed and s.title and len(s.caption) < 400, s


def test_a_stop_about_a_budget_names_it_and_the_app_offers_it():
    """A stop whose caption is about g2l@N carries N (the Query page is set to it), N is a budget the
    app's control offers with the shipped defaults, and the caption names no other budget."""
    from l2g import methods as M
    from l2g.config import DEFAULT

    offered = {n for n in M.budget_methods(DEFAULT) if n <= DEFAULT.verify.top}
    for s in TOUR:
        named = set(re.findall(r"g2l@(\d+)", s.caption))
        assert named == ({str(s.budget)} if s.budget is not None else set()), s.key
        assert s.budget is None or s.budget in offered, s.key
    assert _stop("partial-crop").budget == 10


@pytest.fixture(scope="module")
def runs(demo_engine):
    from l2g.pipeline import make_query, run_query

    out = {}
    for s in TOUR:
        q = make_query(demo_engine, gallery_id=demo_engine.li.id_of(s.query))
        out[s.key] = run_query(demo_engine, q, methods=("global", "local", "l2g", f"g2l@{s.budget or 10}"))
    return out


def _rank(engine, run, method: str, rel: str) -> int:
    """0-based rank of gallery image ``rel`` in ``method``'s full ranking."""
    return int(np.flatnonzero(run.full_ranking(method) == engine.li.id_of(rel))[0])


def _ap(engine, run, method: str, meta, query: str) -> float:
    """AP of ``method`` for ``query``: its positives are the other views of its group."""
    group = next(ps for ps in meta["groups"].values() if query in ps)
    paths = [engine.li.paths[int(i)] for i in run.full_ranking(method)]
    return average_precision(paths, [p for p in group if p != query])


def _stop(key: str) -> TourStop:
    return next(s for s in TOUR if s.key == key)


def test_partial_crop_stop_g2l_at_10_loses_the_positive_and_l2g_keeps_it(demo_engine, runs, meta):
    """At the stop's budget N (the Query page opens with it), the stop's positive is not among the N
    images g2l@N verifies (its global rank is N or more, so it keeps that rank or lower), while l2g
    puts it in its top 10; l2g's AP is higher."""
    s, run = _stop("partial-crop"), runs["partial-crop"]
    n, g2l = s.budget, f"g2l@{s.budget}"
    assert _rank(demo_engine, run, "global", s.focus) >= n
    assert _rank(demo_engine, run, g2l, s.focus) >= n
    assert int(demo_engine.li.id_of(s.focus)) not in set(run.results[g2l].ids[:run.results[g2l].extras["n_verified"]])
    assert _rank(demo_engine, run, "l2g", s.focus) < 10
    assert _ap(demo_engine, run, "l2g", meta, s.query) > _ap(demo_engine, run, g2l, meta, s.query)


def test_texture_stop_local_ranks_the_distractor_high_and_l2g_demotes_it(demo_engine, runs, meta):
    s, run = _stop("texture"), runs["texture"]
    assert s.focus in meta["distractors"]
    local, l2g = _rank(demo_engine, run, "local", s.focus), _rank(demo_engine, run, "l2g", s.focus)
    assert local < 10 and l2g >= local + 10, (local, l2g)
    assert _ap(demo_engine, run, "l2g", meta, s.query) > _ap(demo_engine, run, "local", meta, s.query)


def test_l2g_hurts_stop_is_a_real_loss(demo_engine, runs, meta):
    """l2g's AP is lower than local search's, and the stop's focus (a positive) falls below images of
    other scenes that local search ranked after it: camera views and text or clock textures."""
    s, run = _stop("l2g-hurts"), runs["l2g-hurts"]
    assert _ap(demo_engine, run, "l2g", meta, s.query) < _ap(demo_engine, run, "local", meta, s.query) - 0.01
    focus_local, focus_l2g = (_rank(demo_engine, run, m, s.focus) for m in ("local", "l2g"))
    group = next(ps for ps in meta["groups"].values() if s.query in ps)
    lifted = [p for p in demo_engine.li.paths if p not in group and _rank(demo_engine, run, "l2g", p) < focus_l2g
              and _rank(demo_engine, run, "local", p) > focus_local]
    named = {"camera", "text.png", "clock_motion.png"}
    assert focus_l2g > focus_local and lifted, (focus_local, focus_l2g)
    assert {meta["views"].get(p, {}).get("source") for p in lifted} & named, lifted
