"""The demo's guided tour, and the order in which a first start indexes the demo.

Both read the demo's ``groups.json`` (l2g.demo): ``{"groups": {name: [rel, ...]}, "distractors":
[rel, ...], ...}``. The app indexes ``index_order(meta)[:first_n]`` first, opens the Query page on
it, and adds the rest in the background (l2g.index.add_images), so a first visit does not wait for
the whole gallery.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TourStop:
    """One preset query of the guided tour (How it works page -> Query page)."""
    key: str        # short URL-safe id, e.g. 'partial-crop'
    query: str      # gallery-relative path of the query image in the demo
    title: str      # one line, shown on the link
    caption: str    # what to look at, shown above the Query page while the stop is open


# Filled by the demo's author from `python -m l2g eval demo` (tests check every claim still holds).
TOUR: tuple[TourStop, ...] = ()


def index_order(meta: dict) -> list[str]:
    """Every demo image, in the order a first start indexes them: the tour's queries and their
    groups first, then the other groups, then the distractors."""
    groups: dict = meta.get("groups", {})
    wanted = {stop.query for stop in TOUR}
    first = [g for g, rels in groups.items() if wanted & set(rels)]
    order = [rel for g in first + [g for g in groups if g not in first] for rel in groups[g]]
    return order + [rel for rel in meta.get("distractors", []) if rel not in set(order)]
