"""The Streamlit app, driven headless by streamlit.testing.v1.AppTest on a small demo index.

A session fixture builds the demo gallery and its index into a temporary data
folder with a small feature preset; the app finds it through L2G_DATA_DIR,
L2G_NUM_FEATURES and L2G_MAX_SIDE (read by l2g/app/settings.py).
"""
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from l2g import methods as M
from l2g import pipeline as P
from l2g.app import core, matchview
from l2g.app.settings import Gallery, check_gallery, list_galleries, parse_settings
from l2g.app.uploads import safe_member_path, save_uploads
from l2g.viz import count_points
from tests.conftest import build_small, outside_photo, small_data_dir

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> dict:
    """Env of a data folder holding the demo and its small index (built once per session)."""
    return build_small(small_data_dir(tmp_path_factory))


@pytest.fixture
def small_env(small_data, monkeypatch) -> dict:
    """The app's environment for one test, restored after it: the CLI reads the same L2G_* variables,
    so a session-wide setting would leak into every later test of the command line."""
    for k, v in small_data.items():
        monkeypatch.setenv(k, v)
    return small_data


@pytest.fixture(scope="session")
def engine(small_data):
    s = parse_settings([], small_data)
    return P.open_engine(s.demo_dir, s.index_dir(Gallery("demo", s.demo_dir.resolve(), "demo")), s.cfg, sync=False)


def _app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    return at


def _errors(at):
    return [e.value for e in at.error]


def _embedding_specs(at) -> list:
    """The plotly charts other than the query image (the drawn box's figure)."""
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return [s for s in specs if not any(t.get("type") == "image" for t in s["data"])]


def _plotly_points(at) -> int:
    """Points of the embedding plot."""
    specs = _embedding_specs(at)
    assert specs, "no embedding plot on the page"
    return count_points(specs[0])


def _png(rgb, mode="RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buf, kw.pop("fmt", "PNG"), **kw)
    return buf.getvalue()


# ----------------------------------------------------------------------------- the query page


def _settle(at):
    """Wait for the background global-to-local job (if one runs), then run the page again to show it."""
    try:
        job = at.session_state["l2g_g2l_job"]
    except KeyError:
        return at
    assert job.wait(TIMEOUT), "global-to-local verification did not finish"
    return at.run()


def test_query_page_shows_every_stage(small_env, engine, monkeypatch):
    at = _settle(_app().run())
    assert not at.exception, at.exception
    assert not _errors(at)
    run = at.session_state["l2g_run"]
    q = run.query
    assert q.gallery_id is not None and engine.gt.group_of(q.name) is not None   # a group image by default
    # (a) the shortlist: thumbnails with rank, score and matched keypoints
    caps = [c.value for c in at.caption if c.value.startswith("#")]     # Stage 1: rank · score, matches, name
    top = int(run.local.ids[0])
    assert len(caps) >= 12 and f"{run.local.scores[0]:.3f}" in caps[0] and "matches" in caps[0]
    assert caps[0].startswith("#1") and f"{run.local.n_matches(top)} matches" in caps[0]
    # (b) the embedding: k + 1 points
    k = len(run.l2g.head)
    assert k >= 3 and _plotly_points(at) == k + 1
    # (c) three ranking lists side by side, with AP (ground truth known) and rank moves
    tables = {m: at.get_by_key(f"l2g_rank_{m}").dataframe[0].value for m in ("local", "l2g", "g2l")}
    names = {m: list(tables[m]["path"]) for m in ("local", "l2g", "g2l")}
    assert names["local"] == [engine.li.paths[j] for j in run.local.ids[:len(names["local"])]]
    assert names["l2g"] == [engine.li.paths[j] for j in run.l2g.ids[:len(names["l2g"])]]
    assert names["g2l"] == [engine.li.paths[j] for j in run.g2l.ids[:len(names["g2l"])]]
    assert len(names["local"]) == 20 and all(m[0] in "↑↓=" for m in tables["l2g"]["move"])
    assert tables["local"]["✓"].iloc[0] in ("✓", "")
    heads = " ".join(m.value for m in at.markdown)
    assert heads.count("AP **") >= 3
    # (d) the match view: an image with inlier / outlier counts
    assert any("RANSAC inliers" in c for im in at.image for c in im.captions)
    assert {m.label for m in at.metric} >= {"matches", "inliers", "local rank", "l2g rank"}


def test_rerank_sliders_do_not_search_again(small_env, monkeypatch):
    at = _app().run()
    assert not at.exception
    calls = {"search": 0, "extract": 0}
    real_search = P.local_search

    def counting_search(*a, **kw):
        calls["search"] += 1
        return real_search(*a, **kw)

    from l2g.features import Extractor
    real_call = Extractor.__call__

    def counting_call(self, rgb):
        calls["extract"] += 1
        return real_call(self, rgb)

    monkeypatch.setattr(P, "local_search", counting_search)
    monkeypatch.setattr(Extractor, "__call__", counting_call)
    k_slider = next(s for s in at.sidebar.slider if s.label.startswith("Re-ranked head k"))
    k_slider.set_value(10).run()
    assert not at.exception
    assert _plotly_points(at) == 11
    assert at.session_state["l2g_last_action"][0] == "rerank"
    d = next(s for s in at.sidebar.select_slider if s.label.startswith("Embedding dimension"))
    d.set_value(2).run()
    w = next(s for s in at.sidebar.slider if s.label.startswith("Global blend"))
    w.set_value(0.3).run()
    assert not at.exception
    assert at.session_state["l2g_run"].l2g.X.shape == (11, 2)
    assert calls == {"search": 0, "extract": 0}
    # the shortlist size does search again
    m = next(s for s in at.sidebar.slider if s.label.startswith("Shortlist size"))
    m.set_value(30).run()
    assert calls["search"] == 1 and at.session_state["l2g_last_action"][0] == "search"


@pytest.mark.parametrize("name,data,expect", [
    ("notes.txt", b"just some text, not an image", "not an image"),
    ("empty.jpg", b"", "empty file"),
    ("broken.jpg", _png(np.zeros((64, 64, 3), np.uint8), fmt="JPEG")[:200], "corrupt"),
    ("flat.png", _png(np.full((200, 200, 3), 128, np.uint8)), "No keypoints"),
])
def test_bad_upload_shows_error_and_keeps_index(small_env, name, data, expect):
    at = _app()
    at.session_state["l2g_query_upload"] = (name, data)
    at.run()
    assert not at.exception, at.exception
    errs = _errors(at)
    assert errs and any(expect.lower() in e.lower() for e in errs), errs
    assert not _embedding_specs(at)
    # the index is still loaded: the gallery query works in the same session
    del at.session_state["l2g_query_upload"]
    at.radio(key="l2g_qkind").set_value("Gallery image").run()
    assert not at.exception and not _errors(at)
    assert at.get("plotly_chart")


def test_good_upload_runs_and_warns_when_downscaled(small_env, engine):
    big = np.asarray(Image.open(engine.li.image_path(0)).convert("RGB").resize((1800, 1350)))
    at = _app()
    at.session_state["l2g_query_upload"] = ("big.jpg", _png(big, fmt="JPEG", quality=90))
    at.run()
    assert not at.exception and not _errors(at)
    assert any("downscaled" in w.value for w in at.warning)
    assert at.session_state["l2g_run"].query.gallery_id is None and at.get("plotly_chart")


def _switch(at, url_path: str):
    """Open the app's page served at ``url_path`` ('' is the Query page, served at /) and run it.
    AppTest.switch_page takes page files, and the app's pages are functions (st.Page(callable)): the page
    is picked by its URL path in the registry AppTest keeps of the last run (a private field)."""
    at._page_hash = next(h for h, info in at._registered_pages.items() if info.get("url_pathname") == url_path)
    return at.run()


def test_query_and_sidebar_settings_survive_a_page_switch(small_env, engine):
    """Leaving the Query page for another page and coming back keeps the query (a gallery image or an
    upload) and every setting of the sidebar (Streamlit drops the state of widgets not drawn on a run)."""
    from l2g.app import budget

    at = _app().run()
    rel = next(p for p in engine.li.paths if p != at.session_state["l2g_qpick"])
    at.selectbox(key="l2g_qpick").set_value(rel).run()
    n = min(budget.options(engine))
    values = {"l2g_p_k": 7, "l2g_p_dim": 16, "l2g_p_w": 0.3, budget.KEY: n}
    for key, v in values.items():
        w = next(x for x in list(at.sidebar.slider) + list(at.sidebar.select_slider) if x.key == key)
        w.set_value(v).run()
    assert not at.exception, at.exception
    for page in ("galleries", "how-it-works", ""):
        _switch(at, page)
        assert not at.exception, (page, at.exception)
    assert at.selectbox(key="l2g_qpick").value == rel and at.session_state["l2g_run"].query.name == rel
    for key, v in values.items():
        assert at.session_state[key] == v, key
    assert at.session_state["l2g_run"].l2g.X.shape[1] == 16
    assert any(f"N = {n} verified" in m.value for m in _settle(at).markdown)
    # an uploaded query survives too, until the user removes it
    at.radio(key="l2g_qkind").set_value("Upload").run()
    data = _png(np.asarray(Image.open(engine.li.image_path(3)).convert("RGB")))
    at.get("file_uploader")[0].set_value(("kept.png", data, "image/png")).run()
    assert not at.exception and at.session_state["l2g_run"].query.name == "kept.png"
    _switch(_switch(at, "galleries"), "")
    assert not at.exception, at.exception
    assert at.radio(key="l2g_qkind").value == "Upload" and at.session_state["l2g_run"].query.name == "kept.png"
    assert any("kept.png" in c.value and "uploaded earlier" in c.value for c in at.caption)
    at.button(key="l2g_upload_forget").click().run()                   # removed: gone
    assert any("Upload an image" in i.value for i in at.info) and not _embedding_specs(at)
    again = _png(np.asarray(Image.open(engine.li.image_path(4)).convert("RGB")))
    at.get("file_uploader")[0].set_value(("again.png", again, "image/png")).run()
    assert at.session_state["l2g_run"].query.name == "again.png"
    at.get("file_uploader")[0].set_value(None).run()                   # removed in the uploader: gone too
    assert any("Upload an image" in i.value for i in at.info) and not _embedding_specs(at)


# ----------------------------------------------------------------------------- handlers


def test_make_query_safe_handles_odd_images(engine):
    rgb = np.asarray(Image.open(engine.li.image_path(5)).convert("RGB"))
    rgb = np.ascontiguousarray(rgb[: rgb.shape[0] * 2 // 3])            # landscape
    assert rgb.shape[1] > rgb.shape[0]
    cmyk = _png(rgb, "CMYK", fmt="JPEG")
    sixteen = io.BytesIO()
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(sixteen, "PNG")
    rotated = io.BytesIO()
    im = Image.fromarray(rgb)
    ex = im.getexif()
    ex[0x0112] = 6
    im.save(rotated, "JPEG", exif=ex)
    for data in (cmyk, sixteen.getvalue(), rotated.getvalue()):
        out = core.make_query_safe(engine, source=data, name="odd")
        assert out.error is None and out.query is not None and len(out.query.feats) > 0
    out = core.make_query_safe(engine, source=rotated.getvalue())
    assert out.query.image.rgb.shape[0] > out.query.image.rgb.shape[1]      # EXIF 6: portrait
    assert "No keypoints" in core.make_query_safe(engine, source=_png(np.zeros((50, 50, 3), np.uint8))).error
    assert "rectangle" in core.make_query_safe(engine, gallery_id=0, bbox=(0, 0, 5, 5)).error


def test_exports(engine):
    q = P.make_query(engine, gallery_id=engine.li.id_of(engine.gt.groups["coffee"][0]))
    run = P.run_query(engine, q)
    pos = core.positives_for(engine, q)
    assert pos and q.gallery_id not in pos
    lines = core.export_csv(engine, run, pos).splitlines()
    assert lines[0] == "method,rank,id,path,score,positive" and len(lines) > 3 * len(run.local.ids)
    doc = json.loads(core.export_json(engine, run, pos, {"k": 5}))
    assert set(doc["rankings"]) == set(run.rankings()) and 0 <= doc["ap"]["l2g"] <= 1
    assert len(doc["embedding"]["X"]) == len(run.l2g.head) + 1


# ----------------------------------------------------------------------------- galleries


def test_gallery_roots_refuse_escapes(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    s = parse_settings(["--gallery-root", str(root), "--data-dir", str(tmp_path / "data")], env={})
    labels = {g.label: g for g in list_galleries(s)}
    assert "root/a" in labels and "root/" in labels and not any("escape" in x for x in labels)
    assert check_gallery(labels["root/a"], s) == (root / "a").resolve()
    with pytest.raises(ValueError):
        check_gallery(Gallery("evil", outside.resolve(), "root"), s)
    with pytest.raises(ValueError):
        check_gallery(Gallery("evil", Path("/etc"), "root"), s)
    env = parse_settings([], env={"L2G_GALLERY_ROOTS": f"{root}{os.pathsep}/no/such/dir"})
    assert env.gallery_roots == [root.resolve()]


def test_zip_upload_is_extracted_safely(tmp_path):
    ok = _png(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("set/inner/deep/a.png", ok)
        z.writestr("set/b.png", ok)
        z.writestr("../evil.png", ok)
        z.writestr("/abs/evil.png", ok)
        z.writestr("readme.txt", b"hello")
        z.writestr("set/broken.jpg", b"\xff\xd8garbage")
        z.writestr("__MACOSX/set/._b.png", b"x")
        info = zipfile.ZipInfo("set/link.png")
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "/etc/passwd")
    rep = save_uploads([("photos.zip", buf.getvalue()), ("loose.png", ok), ("doc.pdf", b"%PDF")], tmp_path / "up")
    assert rep.images == ["loose.png", "photos/set/b.png", "photos/set/inner/deep/a.png"]
    assert (rep.folder / "photos/set/inner/deep/a.png").is_file()
    reasons = dict(rep.skipped)
    assert "unsafe" in reasons["photos.zip:../evil.png"] and "unsafe" in reasons["photos.zip:/abs/evil.png"]
    assert "link" in reasons["photos.zip:set/link.png"] and "not an image" in reasons["doc.pdf"]
    assert "not an image" in reasons["photos.zip:readme.txt"] and "photos.zip:set/broken.jpg" in reasons
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "up" / "evil.png").exists()
    again = save_uploads([("photos.zip", buf.getvalue()), ("loose.png", ok)], tmp_path / "up")
    assert again.folder == rep.folder                     # content-addressed
    assert save_uploads([("x.txt", b"no")], tmp_path / "up").folder is None
    assert safe_member_path("a/../../b.jpg") is None and safe_member_path("C:/x.jpg") is None
    assert safe_member_path("./a//b.jpg") == "a/b.jpg"


def _gallery_page():
    from l2g.app import gallery_page

    gallery_page.render()


def _eval_page():
    from l2g.app import eval_page

    eval_page.render()


def test_gallery_upload_page_creates_and_opens_gallery(small_env):
    from streamlit.testing.v1 import AppTest

    ok = _png(np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    at = AppTest.from_function(_gallery_page, default_timeout=TIMEOUT)
    at.session_state["l2g_inject_gallery"] = [("a.png", ok), ("notes.txt", b"x")]
    at.run()
    assert not at.exception, at.exception
    assert any("notes.txt" in w.value and "not an image" in w.value for w in at.warning)
    assert any("1 image(s) saved" in m.value for m in at.success)
    assert at.session_state["l2g_gallery"].startswith("upload: ")     # named (no zip, no name typed: '1 image')
    assert at.sidebar.selectbox(key="l2g_gallery_box").value == at.session_state["l2g_gallery"]


def test_evaluation_page(small_env):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_eval_page, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    at.multiselect[0].set_value(["local", "l2g"])
    at.number_input[0].set_value(4)
    at.button[0].click().run()
    assert not at.exception, at.exception
    summary = at.dataframe[0].value
    assert list(summary["method"]) == ["local only", "local-to-global"]
    assert summary["mAP"].between(0, 100).all()
    scatter = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert count_points(scatter) == 2 + 4                 # the diagonal + one point per query
    hurt = at.dataframe[1].value
    assert len(hurt) == 4 and list(hurt["ΔAP"]) == sorted(hurt["ΔAP"])


def test_bad_galleries_keep_the_loaded_index(small_env, tmp_path, monkeypatch):
    from l2g.app import state

    root = tmp_path / "roots"
    (root / "empty").mkdir(parents=True)
    (root / "broken").mkdir()
    (root / "broken" / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "broken" / "zero.png").write_bytes(b"")
    monkeypatch.setenv("L2G_GALLERY_ROOTS", str(root))
    state.settings.clear()
    try:
        at = _app().run()
        assert not at.exception and at.get("plotly_chart")
        box = at.sidebar.selectbox(key="l2g_gallery_box")
        assert {"roots/empty", "roots/broken"} <= set(box.options)
        for label, why in (("roots/empty", "holds no images"), ("roots/broken", "could be indexed")):
            at.sidebar.selectbox(key="l2g_gallery_box").set_value(label).run()
            assert not at.exception, at.exception
            errs = _errors(at)
            assert any(why in e and "Staying on **demo**" in e for e in errs), errs
            assert at.sidebar.selectbox(key="l2g_gallery_box").value == "demo"
            assert at.get("plotly_chart")                    # the demo query is still shown
    finally:
        monkeypatch.delenv("L2G_GALLERY_ROOTS")
        state.settings.clear()


def test_query_rectangle_crops_the_query(small_env):
    at = _app().run()
    full = at.session_state["l2g_run"].query
    assert full.bbox is None
    at.checkbox(key="l2g_crop_on").check().run()
    assert not at.exception and not _errors(at)
    q = at.session_state["l2g_run"].query
    assert q.bbox is not None and q.image is not None
    x0, y0, x1, y1 = q.bbox
    assert q.image.rgb.shape[:2] == (y1 - y0, x1 - x0)            # the features come from the crop
    assert any("rectangle" in c.value for c in at.caption)
    assert at.get("plotly_chart")


def _howto_page():
    from l2g.app import howto_page

    howto_page.render()


def test_how_it_works_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_howto_page, default_timeout=60).run()
    assert not at.exception, at.exception
    assert len(at.image) == 1
    text = " ".join(m.value for m in at.markdown)
    assert "Global-to-local" in text and "Local-to-global" in text and "Match view" in text


def test_tour_buttons_show_their_labels_whole(monkeypatch):
    """Each tour button's label fits the room the layout gives it (TOUR_LABEL_CHARS); what the label leaves
    out of the title is written under it, so every stop's whole title is on the page."""
    from streamlit.testing.v1 import AppTest

    from l2g import demo_tour
    from l2g.app.settings import TOUR_LABEL_CHARS

    long = demo_tour.TourStop("long", "groups/a/a.jpg", "A title with no colon that runs far beyond what one "
                              "button of the tour can show whole", "c")
    monkeypatch.setattr(demo_tour, "TOUR", demo_tour.TOUR + (long,))
    at = AppTest.from_function(_howto_page, default_timeout=60).run()
    assert not at.exception, at.exception
    captions = [c.value for c in at.caption]
    for stop in demo_tour.TOUR:
        b = at.button(key=f"l2g_tour_{stop.key}")
        assert len(b.label) <= TOUR_LABEL_CHARS, (b.label, TOUR_LABEL_CHARS)
        assert b.help == stop.title
        shown = b.label.rstrip("…")
        assert stop.title.startswith(shown), (b.label, stop.title)
        rest = stop.title[len(shown):].lstrip(" :")
        assert not rest or any(rest in c or stop.title in c for c in captions), (stop.title, captions)
        assert any(f"`{stop.query}`" in c for c in captions)
    assert at.button(key="l2g_tour_long").label.endswith("…")


# ----------------------------------------------------------------------------- tiny galleries


def _tiny_gallery(small_env, root: Path, n: int) -> str:
    """A gallery folder of n demo images of one group (groups.json included) under ``root``."""
    demo = Path(small_env["L2G_DATA_DIR"]) / "demo"
    members = next(v for v in json.loads((demo / "groups.json").read_text())["groups"].values())[:n]
    g = root / f"tiny{n}"
    g.mkdir(parents=True)
    names = []
    for i, rel in enumerate(members):
        name = f"img{i}{Path(rel).suffix}"
        (g / name).write_bytes((demo / rel).read_bytes())
        names.append(name)
    (g / "groups.json").write_text(json.dumps({"groups": {"one": names}}))
    return f"{root.name}/tiny{n}"


@pytest.fixture
def roots_env(small_env, tmp_path, monkeypatch):
    """tmp_path/roots as the app's allowed gallery root (its cached settings reset before and after)."""
    from l2g.app import state

    monkeypatch.setenv("L2G_GALLERY_ROOTS", str(tmp_path / "roots"))
    state.settings.clear()
    yield tmp_path / "roots"
    state.settings.clear()


def _query_page_on(label: str):
    """The query page, run once on gallery ``label``."""
    at = _app()
    at.session_state["l2g_gallery"] = label
    at.run()
    assert not at.exception, at.exception
    return at


def test_kept_settings_fit_a_smaller_gallery(small_env, roots_env):
    """Sidebar values kept from a large gallery are brought within a small one's ranges."""
    label = _tiny_gallery(small_env, roots_env, 3)
    at = _app().run()
    at.sidebar.slider(key="l2g_p_shortlist").set_value(100).run()
    at.sidebar.selectbox(key="l2g_gallery_box").set_value(label).run()
    assert not at.exception, at.exception
    s = at.sidebar.slider(key="l2g_p_shortlist")
    assert s.value == s.max == 3 and at.session_state["l2g_p_shortlist"] == 3


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_gallery_query_and_evaluation_pages(small_env, roots_env, n):
    """Galleries of 1-3 images: no slider whose minimum equals its maximum (it used to crash)."""
    from streamlit.testing.v1 import AppTest

    label = _tiny_gallery(small_env, roots_env, n)
    at = _query_page_on(label)
    assert at.sidebar.selectbox(key="l2g_gallery_box").value == label
    run = at.session_state["l2g_run"]
    assert run.query.gallery_id is not None
    assert len(run.local.ids) == n - 1          # every other image, never the query itself
    # a 1-image upload to the same gallery runs too
    up = Path(small_env["L2G_DATA_DIR"]) / "demo"
    rel = json.loads((up / "groups.json").read_text())["groups"]
    data = (up / next(iter(rel.values()))[0]).read_bytes()
    at.session_state["l2g_query_upload"] = ("one.jpg", data)
    at.radio(key="l2g_qkind").set_value("Upload").run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    assert len(at.session_state["l2g_run"].local.ids) == n

    ev = AppTest.from_function(_eval_page, default_timeout=TIMEOUT)
    ev.session_state["l2g_gallery"] = label
    ev.run()
    assert not ev.exception, ev.exception
    if n > 1:          # a query needs another image of its group
        ev.button[0].click().run()
        assert not ev.exception, ev.exception
        assert ev.dataframe[0].value["mAP"].between(0, 100).all()


# ----------------------------------------------------------------------------- input hardening (issue 9)


def test_upload_is_decoded_once_and_named_by_its_file_name(small_env, engine, monkeypatch):
    """An upload is decoded once per query (was 3 times), and every message names its file."""
    from l2g import images

    labels = []
    real = images._decode

    def counting(im, name, label, *a, **kw):
        labels.append(label)
        return real(im, name, label, *a, **kw)

    monkeypatch.setattr(images, "_decode", counting)
    big = np.asarray(Image.open(engine.li.image_path(0)).convert("RGB").resize((1800, 1350)))
    at = _app()
    at.session_state["l2g_query_upload"] = ("holiday.jpg", _png(big, fmt="JPEG", quality=90))
    at.run()
    assert not at.exception and not _errors(at), _errors(at)
    assert at.session_state["l2g_run"].query.name == "holiday.jpg"
    uploads = [x for x in labels if not Path(x).is_absolute()]       # gallery files are named by path
    assert uploads == ["holiday.jpg"], labels
    assert any("holiday.jpg" in w.value and "downscaled" in w.value for w in at.warning)
    # a slider that only re-ranks decodes nothing again
    at.sidebar.slider(key="l2g_p_k").set_value(5).run()
    assert not at.exception and [x for x in labels if not Path(x).is_absolute()] == ["holiday.jpg"]

    bad = _png(np.zeros((64, 64, 3), np.uint8), fmt="JPEG")[:200]
    at = _app()
    at.session_state["l2g_query_upload"] = ("broken photo.jpg", bad)
    at.run()
    errs = _errors(at)
    assert errs and all("<bytes>" not in e for e in errs) and any("broken photo.jpg" in e for e in errs)
    out = core.make_query_safe(engine, source=bad, name="scan.jpg")
    assert "scan.jpg" in out.error and "<bytes>" not in out.error


def test_make_query_takes_a_loaded_image(engine):
    from l2g.images import load_image

    img = load_image(engine.li.image_path(3), max_side=engine.cfg.features.max_side)
    q = P.make_query(engine, source=img, name="mine")
    assert q.image is img and q.name == "mine" and len(q.feats) > 0
    with pytest.raises(ValueError, match="max_side"):
        P.make_query(engine, source=load_image(engine.li.image_path(3), max_side=None))


def test_check_gallery_refuses_a_missing_demo_path(tmp_path):
    s = parse_settings(["--data-dir", str(tmp_path / "data")], env={})
    assert not s.demo_dir.exists()
    assert check_gallery(Gallery("demo", s.demo_dir.resolve(), "demo"), s) == s.demo_dir.resolve()  # built later
    with pytest.raises(ValueError, match="does not exist"):
        check_gallery(Gallery("demo", tmp_path / "elsewhere", "demo"), s)


def test_file_symlink_leading_outside_a_gallery_is_not_indexed_nor_shown(small_env, roots_env, tmp_path):
    """A gallery under an allowed root with a file symlink to an image outside it: the build
    reports the link, the index and the page's image list do not hold it."""
    from l2g.index import load_index

    label = _tiny_gallery(small_env, roots_env, 3)
    g = roots_env / "tiny3"
    secret = tmp_path / "private" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(next(g.glob("img0*")).read_bytes())
    (g / "leak.jpg").symlink_to(secret)
    at = _query_page_on(label)
    assert any("leak.jpg" in w.value and "outside" in w.value for w in at.warning), [w.value for w in at.warning]
    assert "leak.jpg" not in at.selectbox(key="l2g_qpick").options
    s = parse_settings([], dict(small_env, L2G_GALLERY_ROOTS=str(tmp_path / "roots")))
    li = load_index(s.index_dir(Gallery(label, g.resolve(), "root")))
    assert "leak.jpg" not in li.paths and len(li.paths) == 3
    assert any(p == "leak.jpg" and "outside" in r for p, r in li.failed)


# ----------------------------------------------------------------------------- issue 11: a new user's visit


def test_streamlit_config_matches_the_caps():
    import tomllib

    from l2g.app.uploads import MAX_TOTAL_BYTES

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["fileWatcherType"] == "none"        # no watcher walking .venv/ while idle
    assert cfg["server"]["maxUploadSize"] * 1_000_000 == MAX_TOTAL_BYTES


def test_cell_formats():
    from l2g.app import fmt

    assert fmt.short_name("groups/coffee/coffee_crop1.jpg") == "coffee_crop1.jpg"     # the group is in the name
    assert fmt.short_name("distractors/brick.jpg") == "distractors/brick.jpg"
    assert fmt.short_name("brick.jpg") == "brick.jpg"
    assert fmt.middle_ellipsis("chelsea_homography.jpg", 16) == "chelse…raphy.jpg"      # extension kept
    assert fmt.middle_ellipsis("chelsea_orig.jpg", 16) == "chelsea_orig.jpg"
    assert fmt.middle_ellipsis("a_very_long_name_without_extension", 10) == "a_ver…sion"
    assert all(len(fmt.middle_ellipsis("x" * n + ".jpeg", w)) <= w for n in range(30) for w in range(1, 20))
    g2l, local, qe, l2g = (M.get(m) for m in ("g2l", "local", "local_qe", "l2g"))
    assert fmt.score_cell(g2l, 165.0) == "165 inliers" and fmt.score_cell(g2l, 1.0) == "1 inlier"
    assert fmt.score_cell(local, 0.41234) == "0.412"
    assert fmt.score_cell(qe, 0.5) == "0.500" and fmt.score_cell(l2g, None) == ""     # QE has a real score
    assert fmt.matches_text(500, 500) == "≥ 500 matches" and fmt.matches_text(37, 500) == "37 matches"
    assert fmt.eta_text(10, 40, 5.0) == "10/40, 2.0 images/s, about 15 s left"
    assert fmt.eta_text(0, 40, 0.0) == "0/40"
    assert fmt.build_phase("similarity graph: a.jpg").startswith("step 2/3")
    assert fmt.build_phase("groups/a/b.jpg").startswith("step 1/3")


def _subheaders(at) -> list[str]:
    return [h.value for h in at.subheader]


def _names_read_whole(at) -> None:
    """Each ranking table's image names fit their column whole (no cut by the grid), a long one shortened
    in the middle with its distinguishing end kept, so two images never read the same; the column sits next
    to the thumbnail (in view without scrolling sideways)."""
    from l2g.app.settings import CELL_PAD_PX, CHAR_PX

    cut = 0
    for m in ("local", "l2g", "g2l"):
        el = at.get_by_key(f"l2g_rank_{m}").dataframe[0]
        df, width = el.value, json.loads(el.proto.columns)["name"].get("width")
        order = list(el.proto.column_order)
        assert order.index("name") == order.index("thumb") + 1, order
        assert isinstance(width, int), width
        for cell, path in zip(df["name"], df["path"]):
            assert len(cell) * CHAR_PX + CELL_PAD_PX <= width, (cell, width)
            head, _, tail = cell.rpartition("…")
            assert path.endswith(tail) and len(tail) >= len(Path(path).suffix) + 2, (cell, path)
            assert Path(path).name.startswith(head.rsplit("/", 1)[-1]) or path.startswith(head), (cell, path)
            cut += bool(head)
        assert len(set(df["name"])) == len(set(df["path"])), list(df["name"])    # no two read the same
    assert cut, "no long name in the tables: the test shows nothing"


def test_query_page_stages_in_data_order_and_readable_cells(small_env, engine):
    at = _settle(_app().run())
    assert not at.exception, at.exception
    heads = _subheaders(at)
    pos = [next(i for i, h in enumerate(heads) if h.startswith(f"Stage {n}")) for n in (1, 2, 3, 4)]
    assert pos == sorted(pos), heads
    run = at.session_state["l2g_run"]
    assert run.g2l is not None        # verified in the background, shown on the next run
    cap = engine.cfg.search.max_matches
    for m in ("local", "l2g", "g2l"):
        df = at.get_by_key(f"l2g_rank_{m}").dataframe[0].value
        cells = df.astype(str).to_numpy().ravel().tolist()
        assert not any(c in ("None", "nan") for c in cells), (m, cells)
        assert all(n.count("/") <= 1 and len(n) < len(p) or n == p for n, p in zip(df["name"], df["path"]))
    _names_read_whole(at)
    g2l = at.get_by_key("l2g_rank_g2l").dataframe[0].value
    inl = {int(j): int(n) for j, n in zip(run.results["g2l"].ids, run.results["g2l"].scores)}
    for path, cell in zip(g2l["path"], g2l["score"]):
        n = inl[engine.li.id_of(path)]
        assert cell == f"{n} inlier" + ("" if n == 1 else "s")
    caps = [c.value for c in at.caption if c.value.startswith("#")]     # Stage 1: rank · score, matches, name
    for c, j in zip(caps, run.local.ids):
        n = run.local.n_matches(int(j))
        assert (f"≥ {cap} matches" in c) == (n >= cap) and ("None" not in c)
    # the thumbnails' file names: one line each (a long one shortened in the middle, its extension kept);
    # the full path on the button's tooltip
    from l2g.app.settings import THUMB_NAME_CHARS
    small = [c.value.split("  \n")[-1] for c in at.caption]
    for j in run.local.ids[:len(caps)]:
        name = Path(engine.li.paths[int(j)]).name
        short = next(s for s in small if s == name or ("…" in s and name.endswith(s.split("…")[1])
                                                       and name.startswith(s.split("…")[0])))
        assert len(short) <= THUMB_NAME_CHARS and short.endswith(Path(name).suffix), (name, short)
        assert engine.li.paths[int(j)] in at.button(key=f"l2g_sl_{int(j)}").help
    assert any(len(Path(engine.li.paths[int(j)]).name) > THUMB_NAME_CHARS for j in run.local.ids[:len(caps)])
    # each list's header says what its time is
    heads = {m: next(x.value for x in at.markdown if x.value.startswith(f"**{core.METHOD_LABELS[m]}**"))
             for m in ("local", "l2g", "g2l")}
    assert " · local search " in heads["local"] and " · re-rank (MDS) " in heads["l2g"], heads
    assert " · spatial verification " in heads["g2l"] and heads["g2l"].split(" · spatial verification ")[1][0].isdigit()


def test_query_features_cached_per_crop(small_env, monkeypatch):
    at = _app().run()
    assert not at.exception
    from l2g.features import Extractor

    calls = {"extract": 0}
    real_call = Extractor.__call__

    def counting_call(self, rgb):
        calls["extract"] += 1
        return real_call(self, rgb)

    monkeypatch.setattr(Extractor, "__call__", counting_call)
    at.checkbox(key="l2g_crop_on").check().run()
    assert calls["extract"] == 1
    xs = [s for s in at.slider if s.label.startswith("x range")][0]
    first = xs.value
    xs.set_value((0, first[1])).run()
    assert calls["extract"] == 2
    [s for s in at.slider if s.label.startswith("x range")][0].set_value(first).run()   # back to a seen box
    assert calls["extract"] == 2 and at.session_state["l2g_last_action"][0] == "reuse"
    nf = next(s for s in at.sidebar.slider if s.label.startswith("Query features"))
    nf.set_value(nf.value - 50).run()
    assert not at.exception
    assert calls["extract"] == 2 and at.session_state["l2g_last_action"][0] == "search"
    assert "last update" in " ".join(m.value for m in at.markdown)


def test_point_picker_and_inliers_only_toggle(small_env, engine):
    at = _settle(_app().run())
    run = at.session_state["l2g_run"]
    at.radio(key="l2g_mds_dim").set_value("3-D").run()
    j = int(run.l2g.ids[2])
    at.selectbox(key="l2g_mds_pick").set_value(j).run()     # the 3-D plot's stand-in for a click
    assert not at.exception, at.exception
    assert at.session_state["l2g_selected"] == j
    assert at.selectbox(key="l2g_match_pick").value == j
    cap = next(c for im in at.image for c in im.captions if "Lines join" in c)
    assert engine.li.paths[j] in cap and "red = outliers" in cap
    at.toggle(key="l2g_inliers_only").set_value(True).run()
    cap = next(c for im in at.image for c in im.captions if "Lines join" in c)
    assert "red = outliers" not in cap
    at.button(key="l2g_mds_clear").click().run()
    assert "l2g_selected" not in at.session_state


def test_uploaded_gallery_named_renamed_deleted(tmp_path):
    from l2g.app.settings import upload_label
    from l2g.app.uploads import NAME_FILE, delete_upload, rename_upload, upload_name

    ok = _png(np.random.default_rng(2).integers(0, 255, (80, 80, 3), dtype=np.uint8))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x/a.png", ok)
    up = tmp_path / "uploads"
    rep = save_uploads([("holiday pics.zip", buf.getvalue())], up)
    assert upload_name(rep.folder) == "holiday pics" and upload_label(rep.folder) == "upload: holiday pics"
    rep2 = save_uploads([("b.png", ok)], up, name="  my/gallery\n ")
    assert upload_name(rep2.folder) == "my-gallery"
    assert rename_upload(up, rep.folder, "trip") == "trip" and upload_name(rep.folder) == "trip"
    with pytest.raises(ValueError):
        rename_upload(up, rep.folder, "   ")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.png").write_bytes(ok)
    for bad in (outside, up, up / ".." / "elsewhere", rep.folder / "x"):
        with pytest.raises(ValueError):
            delete_upload(up, bad)
    (up / "link").symlink_to(outside)
    with pytest.raises(ValueError):
        delete_upload(up, up / "link")
    assert (outside / "keep.png").is_file()
    delete_upload(up, rep.folder)
    assert not rep.folder.exists() and rep2.folder.is_dir() and (rep2.folder / NAME_FILE).is_file()


def test_gallery_selector_follows_an_upload_and_delete(small_env):
    from streamlit.testing.v1 import AppTest

    ok = _png(np.random.default_rng(3).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    at = AppTest.from_function(_gallery_page, default_timeout=TIMEOUT)
    at.run()
    assert at.sidebar.selectbox(key="l2g_gallery_box").value == "demo"
    at.session_state["l2g_inject_gallery"] = ([("one.png", ok)], "follow me")
    at.run()
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="l2g_gallery_box").value == "upload: follow me"
    at.sidebar.button[0].click().run()          # Re-scan: says what it found
    assert any("images indexed" in s.value or "nothing new" in s.value for s in at.sidebar.success)
    at.selectbox(key="l2g_manage_pick").set_value("upload: follow me").run()
    sub = [b for b in at.get("button") if getattr(b, "label", "") == "Delete"]
    assert sub, "no Delete button"
    sub[0].click().run()
    assert any("Tick the box" in w.value for w in at.warning)           # not confirmed: nothing deleted
    assert "upload: follow me" in at.sidebar.selectbox(key="l2g_gallery_box").options
    at.checkbox(key="l2g_delete_sure").check()
    [b for b in at.get("button") if getattr(b, "label", "") == "Delete"][0].click().run()
    assert not at.exception, at.exception
    assert "upload: follow me" not in at.sidebar.selectbox(key="l2g_gallery_box").options
    assert at.sidebar.selectbox(key="l2g_gallery_box").value == "demo"


def test_failed_background_verification_is_shown_once(small_env, monkeypatch):
    import threading

    real = M.Context.inliers

    def boom(*a, **kw):
        if threading.current_thread().name == "l2g-deferred":     # the background job (l2g.app.background)
            raise RuntimeError("RANSAC exploded")
        return real(*a, **kw)         # the page's verdict shares this memo (l2g.app.verdict.shared_inliers)

    monkeypatch.setattr(M.Context, "inliers", boom)     # the spatial verification of every g2l method
    at = _app().run()
    at = _settle(at)                     # the job fails: the next run says so and does not start it again
    assert not at.exception, at.exception
    assert any("RANSAC exploded" in e for e in _errors(at))
    assert "l2g_g2l_job" not in at.session_state
    at.run()
    assert "l2g_g2l_job" not in at.session_state and any("RANSAC exploded" in e for e in _errors(at))


def test_rankings_latency_is_timed_from_the_interaction_not_from_the_page_s_own_rerun(small_env):
    """When the background global-to-local list is ready, the page re-runs itself: that run keeps the
    interaction's latency, and adds the time until the global-to-local list was shown, counted from the
    interaction; the next real interaction starts a new record."""
    import time

    from l2g.app import latency

    def ready_caption(at):
        return next(c.value for c in at.caption if "after the interaction" in c.value)

    at = _app().run()
    t_first = time.perf_counter()
    assert not at.exception, at.exception
    first = dict(at.session_state[latency.KEY])
    assert first["lists"] > 0 and first["deferred"] is None             # g2l still verifying
    assert "global-to-local list" not in ready_caption(at)
    assert at.session_state["l2g_g2l_job"].wait(TIMEOUT)
    time.sleep(0.5)
    gap = time.perf_counter() - t_first
    at.session_state[latency.FOLLOW_KEY] = True     # what the page's poll sets before it re-runs the page
    at.run()                                        # (AppTest does not run fragments on a timer)
    rec = at.session_state[latency.KEY]
    assert rec["t0"] == first["t0"] and rec["lists"] == first["lists"]        # not the follow-up's own time
    assert rec["deferred"] >= gap + first["lists"] > rec["lists"]
    assert at.get_by_key("l2g_rank_g2l").dataframe
    cap = ready_caption(at)
    assert f"ready {matchview._ms(first['lists'])} after the interaction" in cap
    assert f"global-to-local list {matchview._ms(rec['deferred'])} after it" in cap
    at.select_slider(key="l2g_nrank").set_value(10).run()               # an interaction: a new record
    new = at.session_state[latency.KEY]
    assert new["t0"] > rec["t0"] and new["lists"] == new["deferred"] < gap
    assert "global-to-local list" not in ready_caption(at)


# ----------------------------------------------------------------------------- verification budget N (issue 12)


def test_evaluation_page_plots_map_against_the_verification_budget(small_env, engine):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_eval_page, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    budgets = list(M.budget_methods(engine.cfg).values())[:2]        # g2l@5, g2l@10: cheap to verify
    flat = ["local", M.MAIN]
    at.multiselect[0].set_value(flat + budgets)
    at.number_input[0].set_value(2)
    at.button[0].click().run()
    assert not at.exception, at.exception
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    fig = next(s for s in specs if s["layout"]["title"]["text"].startswith("mAP against the verification budget"))
    summary = at.dataframe[0].value
    mAP = {m: float(summary.loc[summary["method"] == core.METHOD_LABELS[m], "mAP"].iloc[0]) for m in flat + budgets}
    curve = [t for t in fig["data"] if t["mode"] == "lines+markers"]
    lines = [t for t in fig["data"] if t["mode"] == "lines"]
    assert len(curve) == 1 and len(lines) == len(flat)            # one line per N-independent method
    assert _xs(curve[0]) == [M.budget(M.get(m), engine.cfg) for m in budgets]    # one g2l point per budget
    assert _ys(curve[0]) == pytest.approx([mAP[m] for m in budgets])
    assert {t["name"] for t in lines} == {core.METHOD_LABELS[m] for m in flat}
    for t in lines:                                                # flat at the method's mAP
        m = next(m for m in flat if core.METHOD_LABELS[m] == t["name"])
        assert _ys(t) == pytest.approx([mAP[m]] * 2)
    # no verifying method chosen: no budget figure
    from l2g.viz import budget_figure
    assert budget_figure({"methods": {m: {"map": mAP[m]} for m in flat}}) is None


def _xs(trace) -> list:
    from l2g.viz import array_of
    return array_of(trace["x"]).tolist()


def _ys(trace) -> list:
    from l2g.viz import array_of
    return array_of(trace["y"]).tolist()


def test_budget_control_shows_g2l_at_n_without_new_work(small_env, engine, monkeypatch):
    at = _settle(_app().run())
    assert not at.exception, at.exception
    base = at.session_state["l2g_run"]
    g2l = base.results["g2l"]
    assert g2l is not None
    inl = g2l.score_of()                                  # inliers of the verified head (VerifyConfig.top)
    calls = {"search": 0, "extract": 0, "verify": 0}
    real_search = P.local_search

    def counting_search(*a, **kw):
        calls["search"] += 1
        return real_search(*a, **kw)

    from l2g import verify
    from l2g.features import Extractor
    real_call, real_verify = Extractor.__call__, verify.verify_pair

    def counting_call(self, rgb):
        calls["extract"] += 1
        return real_call(self, rgb)

    def counting_verify(*a, **kw):
        calls["verify"] += 1
        return real_verify(*a, **kw)

    monkeypatch.setattr(P, "local_search", counting_search)
    monkeypatch.setattr(Extractor, "__call__", counting_call)
    monkeypatch.setattr(verify, "verify_pair", counting_verify)
    ctl = next(s for s in at.sidebar.select_slider if s.label.startswith("Verification budget N"))
    by_n = M.budget_methods(engine.cfg)
    assert ctl.value == engine.cfg.verify.top and by_n[ctl.value] == "g2l"
    for n in sorted((k for k in by_n if k < engine.cfg.verify.top), reverse=True):
        ctl.set_value(n).run()
        assert not at.exception, at.exception
        run = at.session_state["l2g_run"]
        name = by_n[n]
        head = run.global_ids[:n]                          # g2l@N: the global top N by the known inliers
        want = list(head[np.argsort([-inl[int(j)] for j in head], kind="stable")]) + list(run.global_ids[n:])
        assert list(run.results[name].ids) == want
        df = at.get_by_key(f"l2g_rank_{name}").dataframe[0].value
        assert list(df["path"]) == [engine.li.paths[j] for j in want[:len(df)]]
        scored = [c for c in df["score"] if c]
        assert 0 < len(scored) <= n and all("inlier" in c for c in scored)   # at most N verified
        assert any(f"N = {min(n, len(run.global_ids))} verified" in m.value for m in at.markdown)
        pos = core.positives_for(engine, run.query)
        miss = [j for j in run.global_ids[n:] if j in pos]            # positives beyond the N verified
        notes = [c.value for c in at.caption if "positives lie beyond the N verified" in c.value]
        assert (notes and notes[0].startswith(f"{len(miss)} of the query's {len(pos)} positives")) if miss \
            else not notes
    assert calls == {"search": 0, "extract": 0, "verify": 0}
    # back to the default N: the background job's own list again
    ctl.set_value(engine.cfg.verify.top).run()
    assert at.get_by_key("l2g_rank_g2l").dataframe[0] is not None and calls["verify"] == 0


# ----------------------------------------------------------------------------- no match, tour, first start


def test_no_confident_match_for_a_photo_from_outside_the_gallery(small_env):
    at = _app()
    at.session_state["l2g_query_upload"] = outside_photo()
    at.run()
    assert not at.exception, at.exception
    warn = [w.value for w in at.warning if "No confident match in this gallery" in w.value]
    assert warn and "threshold" in warn[0] and "inliers" in warn[0], [w.value for w in at.warning]
    exp = [e for e in at.expander if "no confident match" in e.label]
    assert len(exp) == 1 and exp[0].dataframe                 # the ranked lists, collapsed below the message
    assert any("No confident match for this query" in w.value for w in at.warning)   # the match view too
    assert not any("Confident match" in s.value for s in at.success)
    # a demo query from its own group: a confident match, the lists shown as usual
    del at.session_state["l2g_query_upload"]
    at.radio(key="l2g_qkind").set_value("Gallery image").run()
    assert not at.exception and any("Confident match" in s.value for s in at.success)
    assert not [e for e in at.expander if "no confident match" in e.label]


def test_query_features_slider_above_the_keypoints_does_not_search_again(small_env, monkeypatch):
    at = _app().run()
    n = len(at.session_state["l2g_query"].feats)
    calls = {"search": 0}
    real = P.local_search

    def counting(*a, **kw):
        calls["search"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(P, "local_search", counting)
    nf = at.sidebar.slider(key="l2g_p_nfeat")
    above = [v for v in range(int(nf.min), int(nf.max) + 1, 50) if v >= n and v != nf.value]
    if above:
        nf.set_value(above[0]).run()
        assert not at.exception and calls["search"] == 0          # the same features: the same search
    below = max(int(nf.min), (n // 2) // 50 * 50)
    at.sidebar.slider(key="l2g_p_nfeat").set_value(below).run()
    assert calls["search"] == 1 and len(at.session_state["l2g_run"].query.feats) == below


def test_tour_stop_opens_the_query_page_with_its_caption(small_env, engine, monkeypatch):
    from l2g import demo_tour

    rel = [m for m in engine.gt.groups.values() if len(m) > 2][1][2]
    stop = demo_tour.TourStop("crop-test", rel, "A partial crop", "Look at the shortlist: CAPTION-MARK.")
    monkeypatch.setattr(demo_tour, "TOUR", (stop,))
    at = _app()
    at.query_params["tour"] = "crop-test"
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["l2g_run"].query.name == rel
    # the address the tour documents: the Query page is served at / (the default page has no other path)
    from l2g.app import tour
    served = {info["page_name"]: info["url_pathname"] for info in at._registered_pages.values()}
    assert served["Query"] == "" and "``/?tour=KEY``" in tour.__doc__ and "``/query?tour" not in tour.__doc__
    assert any("CAPTION-MARK" in i.value and "Tour 1/1" in i.value for i in at.info)
    at.selectbox(key="l2g_qpick").set_value(engine.li.paths[0]).run()     # moving on ends the stop
    assert not any("CAPTION-MARK" in i.value for i in at.info)


def test_a_rectangle_on_the_tour_query_ends_the_stop(small_env, engine, monkeypatch):
    """The caption is about the stop's whole image: a rectangle drawn on it (or turned on) makes another
    query, and the caption goes, on that run and after it (the stop has ended)."""
    from l2g import demo_tour
    from l2g.app import tour

    rel = [m for m in engine.gt.groups.values() if len(m) > 2][1][2]
    monkeypatch.setattr(demo_tour, "TOUR", (demo_tour.TourStop("crop-test", rel, "t", "See CAPTION-MARK."),))
    at = _app()
    at.query_params["tour"] = "crop-test"
    at.run()
    assert any("CAPTION-MARK" in i.value for i in at.info) and at.session_state[tour.TOUR_KEY] == "crop-test"
    at.checkbox(key="l2g_crop_on").check().run()
    assert not at.exception, at.exception
    assert at.session_state["l2g_run"].query.bbox is not None and at.session_state["l2g_run"].query.name == rel
    assert not any("CAPTION-MARK" in i.value for i in at.info)
    at.checkbox(key="l2g_crop_on").uncheck().run()                      # back to the whole image: the stop
    assert not any("CAPTION-MARK" in i.value for i in at.info)          # has ended, its caption stays gone


def test_a_tour_stop_about_a_budget_sets_the_verification_budget(small_env, engine, monkeypatch):
    """Opening a stop that carries a budget N sets the sidebar's N (g2l@N shown); a stop without one
    leaves the user's N as it is."""
    from l2g import demo_tour
    from l2g.app import budget

    opts = sorted(budget.options(engine))
    rels = [m for m in engine.gt.groups.values() if len(m) > 2]
    monkeypatch.setattr(demo_tour, "TOUR", (demo_tour.TourStop("with-n", rels[0][1], "t", "c", budget=opts[0]),
                                            demo_tour.TourStop("no-n", rels[1][1], "t", "c")))
    at = _app()
    at.query_params["tour"] = "with-n"
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["l2g_run"].query.name == rels[0][1]
    assert at.sidebar.select_slider(key=budget.KEY).value == opts[0] != engine.cfg.verify.top
    assert any(f"N = {opts[0]} verified" in m.value for m in _settle(at).markdown)
    at.sidebar.select_slider(key=budget.KEY).set_value(opts[1]).run()
    at.query_params["tour"] = "no-n"
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["l2g_run"].query.name == rels[1][1]
    assert at.sidebar.select_slider(key=budget.KEY).value == opts[1]


@pytest.mark.timeout(900)
def test_first_start_indexes_part_of_the_demo_then_the_rest_in_the_background(tmp_path, monkeypatch):
    from l2g.app import background, state
    from l2g.demo_tour import index_order
    from tests.conftest import SMALL_APP_ENV

    for k, v in {"L2G_DATA_DIR": str(tmp_path / "data"), **SMALL_APP_ENV}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(state, "FIRST_N", 10)
    state.settings.clear()
    try:
        at = _app().run()
        assert not at.exception, at.exception
        eng = at.session_state["l2g_run"].ctx.li
        order = index_order(json.loads((tmp_path / "data" / "demo" / "groups.json").read_text()))
        assert eng.paths == sorted(order[:10])                      # the first images, searched at once
        job = background.last_index_job(eng.folder)
        assert job is not None and job.total == len(order)
        assert job.wait(800) and job.error is None, job.error
        at.run()
        assert not at.exception, at.exception
        assert at.session_state["l2g_run"].ctx.li.n_images == len(order)      # the engine was swapped
        assert (eng.folder / "confidence.json").is_file()
    finally:
        state.settings.clear()


def test_drawn_box_is_read_from_the_selection_event_and_clamped():
    from l2g.app.qbox import drawn_box

    ev = {"selection": {"points": [], "box": [{"x": [250.4, 40.2], "y": [-5, 120.6]}]}}
    assert drawn_box(ev, 200, 100) == (40, 0, 200, 100)            # sorted, clamped to the image
    assert drawn_box({"selection": {"box": [{"x": [10, 10], "y": [0, 50]}]}}, 200, 100) is None   # empty
    assert drawn_box({"selection": {"points": []}}, 200, 100) is None
    assert drawn_box({}, 200, 100) is None
    assert drawn_box({"selection": {"box": [{"x": ["a"], "y": []}]}}, 200, 100) is None


def test_background_indexing_job_reports_rate_and_time_left():
    import threading
    import time

    from l2g.app import background

    gate = threading.Event()

    def work(job):
        job.progress(20, 60, "groups/a/a_orig.jpg")
        gate.wait(10)
        job.progress(60, 60, "similarity graph: groups/a/a_orig.jpg")

    folder = f"/nonexistent/l2g-test-{os.getpid()}"
    job = background.start_indexing(work, folder, 60, 10)
    assert background.start_indexing(work, folder, 60, 10) is job        # one job per folder at a time
    deadline = time.time() + 10
    while job.done < 20 and time.time() < deadline:
        time.sleep(0.01)
    text = job.text()
    assert text.startswith("indexing 20/60 images in the background, ") and "img/s, ~" in text, text
    assert background.index_job(folder) is job and background.generation(folder) == 0
    gate.set()
    assert job.wait(10) and job.error is None and job.done == 60
    assert background.index_job(folder) is None and background.generation(folder) == 1

    def broken(job):
        raise OSError("disk full")

    bad = background.start_indexing(broken, folder, 60, 10)
    assert bad.wait(10) and "disk full" in bad.error and "failed" in bad.text()


def test_the_demo_order_is_read_once_per_version_of_groups_json(tmp_path):
    """_demo_order read and parsed groups.json on every rerun of a demo page."""
    from unittest import mock

    from l2g.app import state

    meta = {"groups": {"a": ["groups/a/a_1.jpg", "groups/a/a_2.jpg"]}, "distractors": ["distractors/x.jpg"]}
    (tmp_path / "groups.json").write_text(json.dumps(meta))
    with mock.patch.object(state, "index_order", wraps=state.index_order) as parsed:
        first = state._demo_order(tmp_path)
        assert state._demo_order(tmp_path) == first and set(first) == {*meta["groups"]["a"], "distractors/x.jpg"}
        assert parsed.call_count == 1
        meta["distractors"].append("distractors/y.jpg")             # a rebuilt demo: read again
        (tmp_path / "groups.json").write_text(json.dumps(meta))
        assert set(state._demo_order(tmp_path)) == {*first, "distractors/y.jpg"} and parsed.call_count == 2
    assert state._demo_order(tmp_path / "none") == []


def test_budget_labels_and_the_evaluation_estimate_count_what_runs():
    """The audit: a 4-image gallery's slider read '50 (1250%)', and the evaluation's estimate used a run's
    'total' taken before the background global-to-local job added its seconds (about 2.4x too low)."""
    from types import SimpleNamespace

    from l2g.app.budget import share_label
    from l2g.app.eval_page import query_seconds

    assert share_label(10, 217) == "10 (5%)" and share_label(4, 4) == "4 (the whole gallery)"
    assert share_label(50, 4) == "50 (the whole gallery)" and share_label(3, 4) == "3 (75%)"
    run = SimpleNamespace(timings={"extract": 0.1, "search": 0.2, "rerank": 0.05, "total": 0.35, "g2l": 1.3})
    assert query_seconds(run) == pytest.approx(1.65)
    assert query_seconds(SimpleNamespace(timings={"search": 0.2, "total": 0.2})) is None    # g2l not run yet
    assert query_seconds(None) is None


def test_long_names_in_one_list_keep_their_distinguishing_ends():
    from l2g.app.fmt import distinct_names, middle_ellipsis
    from l2g.app.settings import RANK_NAME_CHARS

    stem = "IMG_20240612_holiday_photos_from_the_trip_to_the_museum_chelsea"
    names = [f"{stem}_crop1_2.jpg", f"{stem}_crop1_12.jpg", "distractors/cells1_warp.jpg",
             "distractors/moon_warp.jpg", "coffee_crop3.jpg"]
    assert middle_ellipsis(names[2], RANK_NAME_CHARS) == middle_ellipsis(names[3], RANK_NAME_CHARS)  # the trap
    shown = distinct_names(names, RANK_NAME_CHARS)
    assert len(set(shown)) == len(names), shown
    for name, s in zip(names, shown):
        head, _, tail = s.rpartition("…")
        assert name.startswith(head) and name.endswith(tail) and len(s) <= len(name), (name, s)
    assert shown[-1] == names[-1] and len(shown[0]) < len(names[0])      # a short name whole, a long one cut


def test_query_picker_and_rectangle_read_whole_in_a_narrow_window(small_env, engine):
    """At a 1000-px window with the sidebar open the query's column is narrow (settings.NARROW_MAIN_PX): the
    gallery image picker's label starts with the image's name shortened to what that column shows whole (its
    distinguishing end kept, no two alike), then the full path (typed to search); its value stays the path.
    The query rectangle's checkbox wraps its label instead of cutting it."""
    from l2g.app import fmt
    from l2g.app import settings as S

    CHAR_PX, QPICK_CHARS = S.CHAR_PX, S.QPICK_CHARS

    at = _app().run()
    assert not at.exception, at.exception
    pick = at.selectbox(key="l2g_qpick")
    assert pick.value in engine.li.paths
    room = S.column_px(S.NARROW_MAIN_PX, S.QUERY_SPLIT, 0, S.QUERY_GAP) - S.SELECT_CHROME_PX
    assert QPICK_CHARS * CHAR_PX <= room, (QPICK_CHARS, room)
    heads = []
    for label, path in zip(pick.options, engine.li.paths):
        assert label.endswith(path), (label, path)                   # the full path: typed to search
        head = label[:-len(path)].removesuffix(" · ") or path
        short = fmt.short_name(path)
        at_most = [fmt.middle_ellipsis(fmt.short_name(p), QPICK_CHARS) for p in engine.li.paths]
        # whole at 1000 px, or widened (as little as it takes) only to tell two names apart
        assert len(head) <= QPICK_CHARS or at_most.count(fmt.middle_ellipsis(short, QPICK_CHARS)) > 1, head
        start, _, tail = head.rpartition("…")
        assert path.endswith(tail) and len(tail) >= len(Path(path).suffix) + 2, (head, path)
        heads.append(head)
    assert len(set(heads)) == len(heads)                             # no two read the same
    assert any("…" in h for h in heads) and any(len(p) * CHAR_PX > room for p in engine.li.paths)
    assert at.checkbox(key="l2g_crop_on").proto.wrap is True


def test_embedding_title_fits_the_plot_s_column_in_a_narrow_window(small_env, engine):
    """The embedding's title, in every view (2-D/3-D, PCA/fresh MDS), is broken into lines that fit the plot's
    column at a 1000-px window with the sidebar open (settings.NARROW_MAIN_PX, the Stage 2 split): none is cut
    at the right."""
    from l2g.app import settings as S

    room = S.column_px(S.NARROW_MAIN_PX, S.EMBED_SPLIT, 0, S.EMBED_GAP) - S.TITLE_PAD_PX
    at = _app().run()
    longest = 0
    for dim, view in [("2-D", "PCA"), ("3-D", "PCA"), ("2-D", "fresh MDS"), ("3-D", "fresh MDS")]:
        at.radio(key="l2g_mds_dim").set_value(dim)
        at.radio(key="l2g_mds_view").set_value(view).run()
        assert not at.exception, at.exception
        title = _embedding_specs(at)[0]["layout"]["title"]["text"]
        lines = title.split("<br>")
        assert all(len(x) * S.CHAR_PX <= room for x in lines), (lines, room)
        assert "stress-1" in title and ("PCA view" in title if view == "PCA" else "MDS view" in title)
        longest = max(longest, len(title))
    assert longest * S.CHAR_PX > room          # one line would not fit: the test shows something


def test_rankings_sit_in_a_grid_that_wraps_rather_than_squeeze_the_names(small_env, engine):
    """Stage 3's lists are cells of a grid whose least column width keeps each table's rank, thumbnail and image
    name whole: the browser puts as many side by side as fit (the server cannot tell the window's width), and
    wraps the rest below instead of squeezing the names out of view. Local and local-to-global come first, so
    they stay side by side at a 1000-px and an 800-px window with the sidebar open; all three at 1280 px."""
    from l2g.app import settings as S

    at = _settle(_app().run())
    assert not at.exception, at.exception
    grid = at.get_by_key("l2g_rankings")
    keys = [e.key for e in grid if str(getattr(e, "key", "")).startswith("l2g_rank_")]
    assert keys == ["l2g_rank_local", "l2g_rank_l2g", "l2g_rank_g2l"], keys
    least, gap = grid.min_column_width, S.GAP_PX[grid.gap]

    def fit(main: int, least: int = least) -> int:               # columns the browser makes at that width
        return min(len(keys), (main + gap) // (least + gap))

    assert fit(S.MAIN_PX[1280]) == 3 and fit(S.MAIN_PX[1000]) == 2
    assert fit(S.MAIN_PX[800], S.table_min_px()) == 2             # names of RANK_NAME_CHARS: two side by side
    cell_1000 = (S.MAIN_PX[1000] - gap) / 2
    for k in keys:
        cols = json.loads(at.get_by_key(k).dataframe[0].proto.columns)
        need = sum(cols[c]["width"] for c in ("rank", "thumb", "name"))
        assert need <= cell_1000, (k, need, cell_1000)            # every list's names whole at 1000 px
        if k != "l2g_rank_g2l":
            assert need <= least, (k, need, least)                # the pair's names whole in a cell of least width
        order = list(at.get_by_key(k).dataframe[0].proto.column_order)
        if k == "l2g_rank_l2g":      # the re-ranking's rank moves, the point of its list, in view at 1000 px too
            assert order.index("move") == order.index("name") + 1, order
            assert need + cols["move"]["width"] <= cell_1000, (need, cols["move"]["width"], cell_1000)

