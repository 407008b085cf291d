"""How it works: global-to-local vs local-to-global, and what to look at on the query page."""
from __future__ import annotations

import streamlit as st

from .. import viz_howto
from . import state, tour


@st.cache_data(show_spinner=False)
def _diagram():
    """The two pipelines side by side, step under step (viz_howto.how_it_works_columns): the wide one-row
    diagram (assets/how_it_works.png, the README's) read 5-px letters at a 1000-px window."""
    return viz_howto.how_it_works_columns()


def render() -> None:
    st.title("How it works")
    state.indexing_note()
    tour.links()
    st.image(_diagram(), width=viz_howto.COLUMNS_WIDTH)     # as drawn, smaller in a narrower window: readable
    c1, c2 = st.columns(2)
    c1.markdown("""
### Global-to-local (the classic pipeline)
1. Every image gets **one global descriptor** (here VLAD of the local RootSIFT descriptors).
2. The query's nearest global descriptors form a **shortlist** (top *N*).
3. Each shortlisted image is **spatially verified**: local features are matched and a geometric model
   is fitted with RANSAC; the shortlist is re-ordered by the number of **inliers**.

Cheap and precise at the top, but a relevant image that the global descriptor misses
(a small object, a partial crop, heavy clutter) never reaches verification.
""")
    c2.markdown("""
### Local-to-global (Aiger, Cao, Chen, Araujo, 2025)
1. **Local search first**: every query descriptor looks up its nearest neighbours among *all*
   gallery descriptors and votes for their images (CANN-style kernel). This finds partial matches
   anywhere in the gallery.
2. The top-*k* shortlist and the query form a **(k+1) x (k+1) matrix of local similarities**
   (query row from the search, candidate pairs from a precomputed gallery graph).
3. **Similarity embeddings**: MDS places the k+1 images in *d* dimensions so that distances follow
   1 - similarity; candidates are **re-ranked by cosine to the query** in that space,
   optionally blended with a global descriptor (weight *w*).

The global step sees how the candidates agree **with each other**, not only with the query.
""")
    st.markdown("""
### What to look at on the query page (top to bottom, the order the data flows)
* **Timing line** (under the title): extraction, local search, re-ranking and spatial verification, per query,
  and how long the last update took. Moving *k*, *d* or *w* only re-runs the re-ranking (it says
  *re-ranking only*); a crop or an image seen before re-uses its features.
* **Query** (left): a gallery image or an upload, optionally with a rectangle (a crop).
* **Stage 1 · Local search shortlist** (right of the query): the local scores and matched keypoints of each
  candidate; crops of the query's scene often rank high with few matches.
* **Stage 2 · Similarity embedding**: the diamond is the query (in 2-D and 3-D). With *Colour by: ground truth*
  the positives form a cluster around it; false matches sit apart even when their local score was high.
  *Colour by: rank change* shows which candidates moved up (green) or down (red).
  Stress-1 in the title says how faithfully the picture keeps the similarities (0 = exactly).
  Click a point (2-D), or pick it in *Open a point* (2-D and 3-D), to open it in the match view;
  *Clear selection* goes back. The camera button of the plot's toolbar saves a PNG.
* **Stage 3 · Rankings**: local only, local-to-global with its ↑/↓ moves, and global-to-local (scored in
  RANSAC inliers; it is verified in the background and appears when ready) side by side;
  ✓ marks positives and AP is shown for gallery queries of a gallery with ground truth.
* **Stage 4 · Match view**: pick a candidate (or click a point, or a thumbnail's *matches* button);
  green lines are RANSAC inliers, red ones outliers (*Inliers only* hides them).
  Many inliers but a low local rank is what re-ranking should fix.
* **Evaluation** page: mAP of every method, and the queries re-ranking hurt most.
""")
