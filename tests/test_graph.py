"""l2g.graph: the gallery similarity graph, built once and extended when images are added."""
from __future__ import annotations

import numpy as np

from l2g.graph import load_graph
from l2g.pipeline import open_engine


def test_graph_is_extended_when_images_are_added(small_gallery, small_cfg, tmp_path):
    """open_engine on a grown gallery keeps the old graph rows and searches only the new images."""
    root, keep = small_gallery
    first = [p for p in keep if "astronaut" in p or "distractors" in p]
    eng1 = open_engine(root, tmp_path / "ix", small_cfg, paths=first, with_global=False)
    g1 = eng1.graph
    assert g1.G.shape == (len(first), len(first)) and g1.G.diagonal().sum() == 0
    eng2 = open_engine(root, tmp_path / "ix", small_cfg, paths=keep, with_global=False)
    g2 = eng2.graph
    n = len(keep)
    assert g2.G.shape == (n, n) and g2.paths == eng2.li.paths and g2.params.get("updated") == n - len(first)
    # old rows keep their neighbours; the new images have rows of their own
    np.testing.assert_allclose(g2.G[: len(first), : len(first)].toarray(), g1.G.toarray())
    new = [eng2.li.id_of(p) for p in keep if p not in first]
    assert all(g2.G[j].nnz > 0 for j in new)
    # a coffee view's strongest neighbour in the graph is another coffee view
    j = eng2.li.id_of("groups/coffee/coffee_orig.jpg")
    best = int(g2.G[j].toarray().ravel().argmax())
    assert eng2.li.paths[best].startswith("groups/coffee/")
    assert load_graph(tmp_path / "ix", eng2.li) is not None
