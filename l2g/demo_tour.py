"""The demo's guided tour, and the order in which a first start indexes the demo.

Both read the demo's ``groups.json`` (l2g.demo): ``{"groups": {name: [rel, ...]}, "distractors":
[rel, ...], "views": {rel: {"kind": 'photo' | 'texture' | 'procedural', "source": ...}}, ...}``.
The app indexes ``index_order(meta)[:FIRST_N]`` first, opens the Query page on it, and adds the
rest in the background (l2g.index.add_images), so a first visit does not wait for the whole gallery.
"""
from __future__ import annotations

from dataclasses import dataclass

# Images a first start indexes before the Query page opens: the tour's groups and a few distractors
# of each kind. Default extractor on the demo's images: see FIRST_N_SECONDS_PER_IMAGE (measured).
FIRST_N = 48
FIRST_DISTRACTORS_PER_SOURCE = 1   # texture photographs and procedural kinds: this many of each first
FIRST_PHOTO_DISTRACTORS = 2


@dataclass(frozen=True)
class TourStop:
    """One preset query of the guided tour (How it works page -> Query page)."""
    key: str        # short URL-safe id, e.g. 'partial-crop'
    query: str      # gallery-relative path of the query image in the demo
    title: str      # one line, shown on the link
    caption: str    # what to look at, shown above the Query page while the stop is open
    focus: str = ""  # gallery-relative path of the image the caption is about (a positive or a distractor)


# Filled by the demo's author from `python -m l2g eval demo` (tests check every claim still holds).
TOUR: tuple[TourStop, ...] = ()


def _first_distractors(meta: dict) -> list[str]:
    """A few distractors of each kind: per texture photograph and procedural kind
    FIRST_DISTRACTORS_PER_SOURCE, and FIRST_PHOTO_DISTRACTORS unrelated photographs."""
    views: dict = meta.get("views", {})
    taken: dict[str, int] = {}
    out = []
    for rel in meta.get("distractors", []):
        v = views.get(rel, {})
        kind = v.get("kind", "photo")
        key = "photo" if kind == "photo" else f"{kind}:{str(v.get('source', rel)).rsplit(':', 1)[0]}"
        cap = FIRST_PHOTO_DISTRACTORS if kind == "photo" else FIRST_DISTRACTORS_PER_SOURCE
        if taken.get(key, 0) < cap:
            taken[key] = taken.get(key, 0) + 1
            out.append(rel)
    return out


def index_order(meta: dict) -> list[str]:
    """Every demo image once, in the order a first start indexes them: the tour's queries' groups,
    the images the tour points at, a few distractors of each kind, then the other groups, then the
    other distractors."""
    groups: dict = meta.get("groups", {})
    distractors: list = meta.get("distractors", [])
    wanted = {stop.query for stop in TOUR} | {stop.focus for stop in TOUR if stop.focus}
    first = [g for g, rels in groups.items() if wanted & set(rels)]
    order = [rel for g in first for rel in groups[g]]
    order += [rel for rel in distractors if rel in wanted]
    order += _first_distractors(meta)
    order += [rel for g in groups if g not in first for rel in groups[g]]
    order += distractors
    seen: set[str] = set()
    return [rel for rel in order if not (rel in seen or seen.add(rel))]
