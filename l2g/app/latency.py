"""How long the user waited for the rankings, timed from the run that handled the interaction.

The page re-runs itself once the background global-to-local list is ready (stages.g2l_pending). That
follow-up run is no interaction: timed from its own start it would report the cost of a cheap redraw
(e.g. 40 ms where the user waited 2.8 s). So a follow-up run keeps the interaction's record, and adds
to it when the deferred list was first drawn, counted from the interaction.
"""
from __future__ import annotations

import time

import streamlit as st

KEY = "l2g_latency"            # the record: {'t0', 'lists', 'deferred'} (perf_counter start; seconds or None)
FOLLOW_KEY = "l2g_followup"    # set by the page just before it re-runs itself


def rerun_followup() -> None:
    """Re-run the page on its own (not for a user's interaction): the next run keeps the latency record."""
    st.session_state[FOLLOW_KEY] = True
    st.rerun()


def is_followup() -> bool:
    """Whether this run is a follow-up the page asked for (read once, at the start of the page's run)."""
    return bool(st.session_state.pop(FOLLOW_KEY, False))


def begin(followup: bool, now: float | None = None) -> dict:
    """The latency record of this run: a new one started now for an interaction; the interaction's own
    record for a follow-up run (a new one when there is none)."""
    ss = st.session_state
    rec = ss.get(KEY)
    if not followup or not isinstance(rec, dict):
        rec = ss[KEY] = {"t0": time.perf_counter() if now is None else now, "lists": None, "deferred": None}
    return rec


def mark(rec: dict, deferred_pending: bool, now: float | None = None) -> dict:
    """Note the rankings drawn (once per record): 'lists' the first time, 'deferred' the first time the
    deferred (global-to-local) list is among them; later runs on the same record change nothing."""
    now = time.perf_counter() if now is None else now
    if rec["lists"] is None:
        rec["lists"] = now - rec["t0"]
    if not deferred_pending and rec["deferred"] is None:
        rec["deferred"] = now - rec["t0"]
    return rec


def text(rec: dict, ms) -> str:
    """'ready 1.2 s after the interaction', with the deferred list's own time once it came later."""
    out = f"ready {ms(rec['lists'])} after the interaction"
    if rec["deferred"] is not None and rec["deferred"] > rec["lists"]:
        out += f"; the global-to-local list {ms(rec['deferred'])} after it (verified in the background)"
    return out
