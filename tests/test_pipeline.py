"""l2g.pipeline: one query through the engine (make_query, the refusal of a query without keypoints)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from l2g import config as C
from l2g.features import Extractor, Features, NoKeypointsError
from l2g.pipeline import make_query
from l2g.search import local_search


def test_blank_image_has_no_keypoints_and_query_is_refused(demo_engine):
    blank = np.full((300, 400, 3), 128, np.uint8)
    assert len(Extractor(C.FeatureConfig(num_features=200))(blank)) == 0
    with pytest.raises(NoKeypointsError, match="no keypoints"):
        local_search(demo_engine.li, Features.empty())
    buf = io.BytesIO()
    Image.fromarray(blank).save(buf, "PNG")
    with pytest.raises(NoKeypointsError, match="no keypoints") as e:
        make_query(demo_engine, source=buf.getvalue())
    assert "another image" in str(e.value) and "rectangle" not in str(e.value)    # no box was drawn
    with pytest.raises(NoKeypointsError, match="larger query rectangle"):         # a box on a flat region
        make_query(demo_engine, source=buf.getvalue(), bbox=(10, 10, 200, 200))
