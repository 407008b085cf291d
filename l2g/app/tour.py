"""The guided tour: How it works lists the demo's preset queries (l2g.demo_tour.TOUR); each opens the
Query page on that query with its caption above it. A stop is also reachable as ``/?tour=KEY`` (the
Query page is the default page, served at ``/``; ``/query`` is not an address of the app)."""
from __future__ import annotations

import streamlit as st

from .. import demo_tour
from . import budget
from .settings import DEMO, TOUR_LABEL_CHARS

TOUR_KEY = "l2g_tour"               # the key of the open stop
OPEN_KEY = "l2g_open_query"         # the query page opens this gallery path on its next run


def stop_of(key: str | None) -> demo_tour.TourStop | None:
    return next((s for s in demo_tour.TOUR if s.key == key), None)


def open_stop(stop: demo_tour.TourStop) -> None:
    """Select the stop's query on the demo and remember the stop (the Query page reads both); a stop
    about a verification budget sets the sidebar's N to it."""
    ss = st.session_state
    ss[TOUR_KEY] = stop.key
    ss[OPEN_KEY] = stop.query
    ss["l2g_crop_on"] = False
    if stop.budget is not None:
        ss[budget.KEY] = stop.budget
    if ss.get("l2g_gallery") != DEMO:
        ss["l2g_gallery_pending"] = DEMO


def label(stop: demo_tour.TourStop) -> tuple[str, str]:
    """(button label, the rest of the title): the title's head before its ':' ('A corner of the garage'),
    the whole title when it has none; a head longer than TOUR_LABEL_CHARS is cut at a word (…), and the
    rest is then the whole title. Nothing of the title is lost: the rest is written under the button."""
    head, colon, rest = stop.title.partition(":")
    head, rest = (head.strip(), rest.strip()) if colon and head.strip() else (stop.title.strip(), "")
    if len(head) > TOUR_LABEL_CHARS:
        room = head[:TOUR_LABEL_CHARS - 1]
        head, rest = (room.rsplit(" ", 1)[0] if " " in room else room).rstrip(" ,;·-") + "…", stop.title
    return head, rest


def links() -> None:
    """The tour on the How it works page: one stop per row, a button with the title's short head (whole:
    at most TOUR_LABEL_CHARS) and under it the rest of the title and the query."""
    if not demo_tour.TOUR:
        return
    st.markdown("### A guided tour of the demo\nEach stop opens the Query page on a demo query, "
                "with what to look at.")
    for n, stop in enumerate(demo_tour.TOUR, 1):
        head, rest = label(stop)
        if st.button(head, key=f"l2g_tour_{stop.key}", icon=":material/tour:", help=stop.title):
            open_stop(stop)
            st.switch_page(st.session_state["l2g_pages"]["query"])
        st.caption(f"{n}/{len(demo_tour.TOUR)}" + (f" · {rest}" if rest else "") + f" · query `{stop.query}`")


def from_url() -> None:
    """``?tour=KEY`` in the address opens that stop (once; the parameter is then removed)."""
    key = st.query_params.get("tour")
    if key is None:
        return
    del st.query_params["tour"]
    stop = stop_of(key)
    if stop is not None:
        open_stop(stop)


def caption(slot, gallery_label: str, spec: dict | None, box) -> None:
    """The open stop's caption in ``slot``, while the query shown is the stop's: its demo image, whole
    (``spec`` and ``box``: the query the page made, query_page.query_spec and its rectangle). The stop ends
    when the user moves on: another image, an upload, another gallery, or a rectangle drawn on it."""
    ss = st.session_state
    stop = stop_of(ss.get(TOUR_KEY))
    if stop is None:
        return
    if (gallery_label != DEMO or spec is None or spec.get("gallery_id") is None or spec.get("name") != stop.query
            or box is not None):
        ss.pop(TOUR_KEY, None)
        return
    n = [s.key for s in demo_tour.TOUR].index(stop.key) + 1
    with slot, st.container(key="l2g_tour_caption"):
        st.info(f"**Tour {n}/{len(demo_tour.TOUR)} · {stop.title}**  \n{stop.caption}", icon=":material/tour:")
