"""Galleries page: what can be opened, and upload a new gallery (images or a zip)."""
from __future__ import annotations

import streamlit as st

from . import state
from .settings import list_galleries
from .uploads import MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES, save_uploads


MSG_KEY = "l2g_upload_msgs"


def handle_upload(files) -> None:
    """files: [(name, bytes)] -> a new gallery under data/uploads/<hash>/, selected at once."""
    s = state.settings()
    msgs = []
    try:
        rep = save_uploads(files, s.uploads_dir)
    except OSError as e:
        st.error(f"The upload could not be saved: {e}")
        return
    if rep.skipped:
        msgs.append(("warning", f"{len(rep.skipped)} file(s) skipped:\n" +
                     "\n".join(f"- `{n}`: {r}" for n, r in rep.skipped[:50]) +
                     ("\n- ..." if len(rep.skipped) > 50 else "")))
    if rep.folder is None:
        msgs.append(("error", "No readable image in this upload: nothing to index."))
    else:
        label = next((g.label for g in list_galleries(s) if g.path == rep.folder.resolve()), None)
        msgs.append(("success", f"{len(rep.images)} image(s) saved as gallery **{label}** and opened."))
        if label:
            st.session_state["l2g_gallery"] = label
            st.session_state.pop("l2g_gallery_box", None)
    st.session_state[MSG_KEY] = msgs
    st.rerun()


def render() -> None:
    st.title("Galleries")
    g, eng = state.pick_gallery()
    s = state.settings()
    for kind, msg in st.session_state.pop(MSG_KEY, []):
        getattr(st, kind)(msg)
    st.markdown("Galleries are picked in the sidebar. Offered: the **demo**, **realbench-dev** when "
                "`../shared/data/realbench-dev` exists, your uploads, and subfolders of the allowed roots "
                "(`streamlit run app.py -- --gallery-root DIR`, repeatable, or `L2G_GALLERY_ROOTS`).")
    rows = [{"gallery": x.label, "kind": x.kind, "folder": str(x.path)} for x in list_galleries(s)]
    st.dataframe(rows, hide_index=True)
    if not s.gallery_roots:
        st.caption("No --gallery-root given: only the demo, realbench-dev and uploads are offered.")
    st.subheader("Upload a new gallery")
    st.caption(f"Images and/or zip archives (nested folders kept; non-images skipped and listed). "
               f"Caps: {MAX_FILE_BYTES // 1_000_000} MB per image, {MAX_TOTAL_BYTES // 1_000_000} MB "
               f"and {MAX_FILES} images in all.")
    with st.form("l2g_upload_gallery", clear_on_submit=True):
        ups = st.file_uploader("Images or .zip", accept_multiple_files=True, key="l2g_gal_files")
        go = st.form_submit_button("Create gallery", type="primary")
    injected = st.session_state.pop("l2g_inject_gallery", None)   # tests: [(name, bytes)]
    if go and ups:
        handle_upload([(u.name, u.getvalue()) for u in ups])
    elif injected:
        handle_upload(injected)
    elif go:
        st.warning("Choose some files first.")
