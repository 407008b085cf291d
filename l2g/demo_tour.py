"""The demo's guided tour, and the order in which a first start indexes the demo.

Both read the demo's ``groups.json`` (l2g.demo): ``{"groups": {name: [rel, ...]}, "distractors":
[rel, ...], "views": {rel: {"kind": 'photo' | 'texture' | 'procedural', "source": ...}}, ...}``.
The app indexes ``index_order(meta)[:FIRST_N]`` first, opens the Query page on it, and adds the
rest in the background (l2g.index.add_images), so a first visit does not wait for the whole gallery.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import AppConfig

# Images a first start indexes before the Query page opens (config.AppConfig.first_n): the tour's three
# groups (31 images), the clock family the tour points at (6) and one distractor of each of the 20 other
# families. Default extractor, one process, one torch thread, measured on the shared machine at load
# average ~15: 0.655 s per group view (640 px), 0.331 s per distractor (384 px): 31 x 0.655 + 26 x 0.331
# = 29 CPU-seconds, about 15 s on 2 cores.
FIRST_N = AppConfig.first_n
FIRST_PER_FAMILY = 1               # distractors of each family (l2g.demo_textures) in the first part


@dataclass(frozen=True)
class TourStop:
    """One preset query of the guided tour (How it works page -> Query page)."""
    key: str        # short URL-safe id, e.g. 'partial-crop'
    query: str      # gallery-relative path of the query image in the demo
    title: str      # one line, shown on the link
    caption: str    # what to look at, shown above the Query page while the stop is open
    focus: str = ""  # gallery-relative path of the image the caption is about (a positive or a distractor)
    budget: int | None = None   # the verification budget N the caption is about (g2l@N): the stop sets the
    #                             Query page's N to it; None leaves N as it is


# Chosen from `python -m l2g eval demo` (DEMO_VERSION 3); tests/test_demo_tour.py checks every claim.
TOUR: tuple[TourStop, ...] = (
    TourStop(
        "partial-crop", "groups/motorcycle/motorcycle_crop4.jpg",
        "A corner of the garage: global-to-local never verifies the full photo",
        "The query is 14 % of the motorcycle photo: the wall in its top-left corner. Its global "
        "descriptor does not resemble the whole scene, so the full photo (motorcycle_orig) is not among "
        "the 10 images g2l@10 verifies. Local search finds the wall's keypoints inside the full photo, "
        "and l2g keeps it in its top 10.",
        focus="groups/motorcycle/motorcycle_orig.jpg", budget=10),
    TourStop(
        "texture", "groups/chelsea/chelsea_blurnoise.jpg",
        "Streaks that look alike: l2g pushes a false texture match down",
        "Blur and noise have wiped out the cat's fine detail; soft streaks are left, and the six "
        "motion-blurred clock photos are full of them. Local search ranks clock images among the cat's "
        "views. They match each other far better than any cat view, so the similarity embedding sets "
        "them apart and l2g moves them down, out of the top 10.",
        focus="distractors/clock_motion_rotate.jpg"),
    TourStop(
        "l2g-hurts", "groups/rocket/rocket_crop4.jpg",
        "When l2g hurts: a dark crop with little to match",
        "Night sky and two tower tops: few distinctive keypoints, so the query's local similarities are "
        "weak. Other scenes' views (camera crops, text and clock textures) match each other strongly; the "
        "embedding follows those clusters, and l2g lifts them above a whole view of the rocket "
        "(rocket_homography): its AP falls below local search's. With weak evidence, re-ranking trusts "
        "the strong clusters nearby.",
        focus="groups/rocket/rocket_homography.jpg"),
)


def _family(meta: dict, rel: str) -> str:
    """A distractor's family (its base image's source; the file itself when groups.json has no views)."""
    return str(meta.get("views", {}).get(rel, {}).get("source", rel))


def _first_distractors(meta: dict, wanted: set[str]) -> list[str]:
    """The whole family of every distractor the tour points at, then FIRST_PER_FAMILY of each other
    family (photographs and procedural textures alike), in groups.json order."""
    distractors = meta.get("distractors", [])
    focus = {_family(meta, rel) for rel in distractors if rel in wanted}
    out = [rel for rel in distractors if _family(meta, rel) in focus]
    taken: dict[str, int] = {}
    for rel in distractors:
        fam = _family(meta, rel)
        if fam not in focus and taken.get(fam, 0) < FIRST_PER_FAMILY:
            taken[fam] = taken.get(fam, 0) + 1
            out.append(rel)
    return out


def index_order(meta: dict) -> list[str]:
    """Every demo image once, in the order a first start indexes them: the tour's queries' groups,
    the images the tour points at and their families, one distractor of every other family, then
    the other groups, then the other distractors."""
    groups: dict = meta.get("groups", {})
    distractors: list = meta.get("distractors", [])
    wanted = {stop.query for stop in TOUR} | {stop.focus for stop in TOUR if stop.focus}
    first = [g for g, rels in groups.items() if wanted & set(rels)]
    order = [rel for g in first for rel in groups[g]]
    order += [rel for rel in distractors if rel in wanted]
    order += _first_distractors(meta, wanted)
    order += [rel for g in groups if g not in first for rel in groups[g]]
    order += distractors
    seen: set[str] = set()
    return [rel for rel in order if not (rel in seen or seen.add(rel))]
