from l2g import demo_tour
from l2g.demo_tour import TourStop


def test_index_order_puts_tour_groups_first_and_lists_every_image_once(monkeypatch):
    meta = {"groups": {"a": ["g/a1", "g/a2"], "b": ["g/b1", "g/b2"]}, "distractors": ["d/x", "d/y"]}
    monkeypatch.setattr(demo_tour, "TOUR", (TourStop("k", "g/b2", "t", "c"),))
    order = demo_tour.index_order(meta)
    assert order[:2] == ["g/b1", "g/b2"]
    assert sorted(order) == sorted(["g/a1", "g/a2", "g/b1", "g/b2", "d/x", "d/y"])
    assert order[-2:] == ["d/x", "d/y"]
