"""Galleries page: what can be opened, upload a new gallery (images or a zip), rename or delete uploads."""
from __future__ import annotations

import shutil

import streamlit as st

from ..errors import L2GError
from . import state
from .settings import list_galleries
from .uploads import MAX_FILE_BYTES, MAX_FILES, MAX_NAME, MAX_TOTAL_BYTES, delete_upload, rename_upload, save_uploads

MSG_KEY = "l2g_upload_msgs"


def handle_upload(files, name: str | None = None) -> None:
    """files: [(name, bytes)] -> a new gallery under data/uploads/<hash>/, named ``name`` (else after
    the zip) and selected at once (the sidebar box follows)."""
    s = state.settings()
    msgs = []
    try:
        rep = save_uploads(files, s.uploads_dir, name=name)
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
            st.session_state["l2g_gallery"] = st.session_state["l2g_gallery_pending"] = label
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
               f"and {MAX_FILES} images in all (a zip file may be up to {MAX_TOTAL_BYTES // 1_000_000} MB: "
               f"`server.maxUploadSize` in `.streamlit/config.toml`).")
    with st.form("l2g_upload_gallery", clear_on_submit=True):
        gname = st.text_input("Gallery name (optional)", max_chars=MAX_NAME, key="l2g_gal_name",
                              placeholder="default: the zip's name")
        ups = st.file_uploader("Images or .zip", accept_multiple_files=True, key="l2g_gal_files")
        go = st.form_submit_button("Create gallery", type="primary")
    injected = st.session_state.pop("l2g_inject_gallery", None)   # tests: [(name, bytes)] or (files, name)
    if go and ups:
        handle_upload([(u.name, u.getvalue()) for u in ups], gname)
    elif injected:
        files, name = injected if isinstance(injected, tuple) else (injected, None)
        handle_upload(files, name)
    elif go:
        st.warning("Choose some files first.")
    manage_uploads(s)


def manage_uploads(s) -> None:
    """Rename or delete an uploaded gallery (only folders under the uploads folder; delete asks first)."""
    ups = [g for g in list_galleries(s) if g.kind == "upload"]
    if not ups:
        return
    st.subheader("Your uploaded galleries")
    labels = [g.label for g in ups]
    c1, c2 = st.columns(2)
    pick = c1.selectbox("Uploaded gallery", labels, key="l2g_manage_pick")
    g = ups[labels.index(pick)]
    with c1.form("l2g_rename", clear_on_submit=True):
        new = st.text_input("New name", max_chars=MAX_NAME, key="l2g_rename_to")
        if st.form_submit_button("Rename"):
            try:
                clean = rename_upload(s.uploads_dir, g.path, new)
            except (L2GError, OSError) as e:
                st.error(f"Not renamed: {e}")
            else:
                label = next((x.label for x in list_galleries(s) if x.path == g.path), None)
                if st.session_state.get("l2g_gallery") == g.label and label:
                    st.session_state["l2g_gallery"] = st.session_state["l2g_gallery_pending"] = label
                st.session_state[MSG_KEY] = [("success", f"**{g.label}** renamed to **{clean}**.")]
                st.rerun()
    with c2.form("l2g_delete"):
        sure = st.checkbox(f"Yes, delete **{g.label}** (its images and its index)", key="l2g_delete_sure")
        if st.form_submit_button("Delete", type="primary"):
            if not sure:
                st.warning("Tick the box to confirm first: nothing was deleted.")
            else:
                try:
                    index = s.index_dir(g).parent
                    delete_upload(s.uploads_dir, g.path)
                except (L2GError, OSError) as e:
                    st.error(f"Not deleted: {e}")
                else:
                    if index.resolve().parent == (s.data_dir / "index").resolve():
                        shutil.rmtree(index, ignore_errors=True)
                    if st.session_state.get("l2g_gallery") == g.label:
                        st.session_state["l2g_gallery_pending"] = "demo"
                    st.session_state[MSG_KEY] = [("success", f"**{g.label}** deleted.")]
                    st.rerun()
