"""End to end in a real browser: the README's `.venv/bin/streamlit run app.py` + Debian's Chromium
driven by Playwright. One server per module (the small demo preset), started with the README's command
from the repository root (settings from .streamlit/config.toml; only headless / address / port come
from STREAMLIT_* variables).

Also takes the README screenshot and the README timings (full demo config, data/):

    .venv/bin/python tests/test_browser.py --screenshot assets/query_page.png [--query groups/x/y.jpg]
    .venv/bin/python tests/test_browser.py --measure groups/coffee/coffee_crop1.jpg
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


README_CMD = [".venv/bin/streamlit", "run", "app.py"]     # the README's command, run from the repository root
VENV_LINK = ROOT / ".venv"


def venv_in_repo() -> bool:
    """Make ``.venv/`` exist in the repository as the README has it (CI, a fresh clone): when the running
    virtualenv lives elsewhere, a temporary link to it. True when a link was made (remove it after)."""
    if VENV_LINK.exists() or VENV_LINK.is_symlink():
        return False
    VENV_LINK.symlink_to(Path(sys.prefix), target_is_directory=True)
    return True


def start_server(env: dict, port: int, log: Path) -> subprocess.Popen:
    """The README's command in the repository root; headless, address and port through the environment,
    every other setting (the file watcher included) from .streamlit/config.toml."""
    if not (ROOT / README_CMD[0]).exists():
        raise FileNotFoundError(f"{README_CMD[0]} missing: create the virtualenv as the README says")
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    server_env = {"STREAMLIT_SERVER_HEADLESS": "true", "STREAMLIT_SERVER_ADDRESS": "127.0.0.1",
                  "STREAMLIT_SERVER_PORT": str(port)}
    cmd = list(README_CMD)
    if VENV_LINK.is_symlink():     # the venv's scripts name its real python: run them through the link's one,
        cmd = [".venv/bin/python"] + cmd   # so that the server imports its packages from .venv/ as in a clone
    fh = open(log, "wb")
    return subprocess.Popen(cmd, cwd=ROOT, env={**base, **server_env, **env}, stdout=fh,
                            stderr=subprocess.STDOUT, start_new_session=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def session_cpu_seconds(sid: int) -> float:
    """CPU seconds used by every process of session ``sid`` (the server and its extraction workers,
    living ones plus the children they have reaped): an unloaded-time estimate on a loaded machine."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[3]) == sid:       # field 6 (session id) after the ')' split: index 3
            total += sum(int(x) for x in f[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("streamlit did not become healthy")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)       # its own session: the server and nothing else
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_idle(page, timeout_ms: int = 300_000) -> None:
    """Until the script run is over (Streamlit's 'running' status widget gone)."""
    status = '[data-testid="stStatusWidget"]'
    t0 = time.time()
    while True:        # the widget shows up only after a short delay: wait until it stays away
        page.wait_for_timeout(600)
        if page.locator(status).count() == 0:
            page.wait_for_timeout(600)
            if page.locator(status).count() == 0:
                return
        page.wait_for_selector(status, state="detached", timeout=max(1, int(timeout_ms - 1000 * (time.time() - t0))))


def choose_query(page, name: str) -> float:
    """Pick a gallery image as the query; returns seconds from the choice to the re-ranked list."""
    page.locator(".st-key-l2g_qpick input").click()
    page.keyboard.type(name)
    page.keyboard.press("Enter")
    t0 = time.perf_counter()
    page.get_by_text(f"Rankings for {name} ready").wait_for(timeout=300_000)
    dt = time.perf_counter() - t0
    wait_idle(page)
    return dt


def nudge_slider(page, key: str, key_press: str, done) -> float:
    """Move a sidebar slider one step with the keyboard; seconds until ``done(page)`` has waited for
    the visible effect of the change."""
    page.locator(f".st-key-{key} input[type=range]").first.focus()
    t0 = time.perf_counter()
    page.keyboard.press(key_press)
    done(page)
    dt = time.perf_counter() - t0
    wait_idle(page)
    return dt


PLOT = ".st-key-l2g_mds_plot .js-plotly-plot"      # the embedding (the query image is a plot too)
POINTS = f"{PLOT} .scatterlayer .point"


G2L_READY = ("() => !document.body.innerText.includes('running in the background') && "
             "document.querySelector('.st-key-l2g_rank_g2l [data-testid=stDataFrame]') != null")


def _timing_text(page) -> str:
    return page.get_by_text("last update").first.inner_text()


def _timed(page, act) -> dict:
    """Seconds from ``act(page)`` to the next 'Rankings … ready' caption (the lists redrawn), to the
    global-to-local list, and to an idle page (no script running)."""
    before = page.get_by_text("after the interaction").first.inner_text()
    t0 = time.perf_counter()
    act(page)
    page.wait_for_function("b => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
                           ".some(e => e.innerText.includes('after the interaction') && e.innerText != b)",
                           arg=before, timeout=300_000)
    t_lists = time.perf_counter() - t0
    page.wait_for_function(G2L_READY, timeout=300_000)
    t_g2l = time.perf_counter() - t0
    wait_idle(page)
    return {"lists_s": round(t_lists, 2), "g2l_s": round(t_g2l, 2), "idle_s": round(time.perf_counter() - t0, 2),
            "caption": _timing_text(page).split("\n")[0]}


def _key(page, key: str, press: str, nth: int = 0):
    page.locator(f".st-key-{key} [role=slider], .st-key-{key} input[type=range]").nth(nth).focus()
    page.keyboard.press(press)


def measure(url: str, queries: list[str]) -> dict:
    """README timings in Chromium: a gallery query to its ranked lists (and to an idle page), a crop
    change, a crop back to a box seen before, and a query-feature-count change."""
    from playwright.sync_api import sync_playwright

    out = {"query": [], "crop_on": None, "crop_change": None, "crop_back": None, "n_features": None}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            t0 = time.perf_counter()
            page.goto(url, timeout=120_000)
            page.wait_for_function(G2L_READY, timeout=900_000)
            wait_idle(page)
            out["first_page_idle_s"] = round(time.perf_counter() - t0, 2)
            for q in queries:
                def pick(p, q=q):
                    p.locator(".st-key-l2g_qpick input").click()
                    p.keyboard.type(q)
                    p.keyboard.press("Enter")
                out["query"].append({"query": q, **_timed(page, pick)})
            out["crop_on"] = _timed(page, lambda p: p.locator(".st-key-l2g_crop_on label").click())
            out["crop_change"] = _timed(page, lambda p: _crop_nudge(p, "ArrowLeft"))
            out["crop_back"] = _timed(page, lambda p: _crop_nudge(p, "ArrowRight"))
            out["n_features"] = _timed(page, lambda p: _key(p, "l2g_p_nfeat", "ArrowLeft"))
        finally:
            browser.close()
    return out


def _crop_nudge(page, press: str) -> None:
    """Move the left edge of the query rectangle (the x-range slider's first thumb) one step."""
    page.locator("[data-testid=stSlider]", has_text="x range").locator("input[type=range], [role=slider]").first.focus()
    page.keyboard.press(press)


def drive(url: str, shot: Path, query: str | None = None, width: int = 1500, height: int = 3400,
          click_point: int | None = None, colour_gt: bool = False) -> dict:
    """Load the app, run a query, check the stages, save a full-page screenshot; returns facts seen."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        try:
            # Streamlit scrolls inside its main container, so a tall viewport is what captures the whole page
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url, timeout=120_000)
            page.wait_for_selector(PLOT, timeout=600_000)    # first query runs on load
            wait_idle(page)
            facts = {}
            if query:
                facts["latency_s"] = choose_query(page, query)
            page.wait_for_selector(POINTS, timeout=60_000)
            facts["points"] = page.locator(POINTS).count()
            title = page.locator(f"{PLOT} .gtitle").first.text_content()
            facts["top_k"] = int(re.search(r"top-(\d+)", title).group(1))
            facts["match_view"] = page.get_by_text("RANSAC inliers").count()
            facts["match_before"] = page.get_by_text("Lines join").first.inner_text()
            if click_point is not None:     # a point of the 2-D embedding opens that candidate
                pts = page.locator(f"{PLOT} .scatterlayer .trace").first.locator(".point")
                bb = pts.nth(click_point).bounding_box()
                page.mouse.click(bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2)
                page.wait_for_function(
                    "b => [...document.querySelectorAll('[data-testid=stImageCaption]')]"
                    ".some(e => e.innerText.includes('Lines join') && e.innerText != b)",
                    arg=facts["match_before"], timeout=120_000)
                wait_idle(page)
                facts["match_after"] = page.get_by_text("Lines join").first.inner_text()
            facts["tables"] = [page.locator(f".st-key-l2g_rank_{m} [data-testid='stDataFrame']").count()
                               for m in ("local", "l2g", "g2l")]
            facts["exceptions"] = page.locator('[data-testid="stException"]').count()
            facts["query"] = page.locator("text=/Query: /").first.inner_text()
            if colour_gt:
                page.locator(".st-key-l2g_mds_colour").get_by_text("ground truth").click()
                wait_idle(page)
            page.wait_for_function(G2L_READY, timeout=300_000)
            wait_idle(page)
            page.mouse.move(0, 0)
            page.screenshot(path=str(shot), full_page=True)
            return facts
        finally:
            browser.close()


SITECUSTOMIZE = """import json, os
from l2g import demo_tour
if not demo_tour.TOUR and os.environ.get("L2G_TEST_TOUR"):
    demo_tour.TOUR = tuple(demo_tour.TourStop(**d) for d in json.loads(os.environ["L2G_TEST_TOUR"]))
"""
TEST_TOUR: list = []      # the tour the module's server shows (the demo's own once it has one)


def tour_env(demo: Path, folder: Path) -> dict:
    """While l2g.demo_tour.TOUR is empty (the demo's author fills it): a one-stop tour on an existing
    demo image, put into the server's l2g.demo_tour by a sitecustomize module (a test-only monkeypatch)."""
    import json

    from l2g import demo_tour

    if demo_tour.TOUR:
        TEST_TOUR[:] = list(demo_tour.TOUR)
        return {}
    groups = [m for m in json.loads((demo / "groups.json").read_text())["groups"].values() if len(m) > 2]
    stop = demo_tour.TourStop("browser-test", groups[1][2], "A test stop", "Look at the shortlist: TOUR-MARK.")
    TEST_TOUR[:] = [stop]
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"L2G_TEST_TOUR": json.dumps([stop.__dict__]),
            "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")])}


IDLE_S = 30
IDLE_CPU_MAX_S = 3.0       # CPU seconds the server may use in IDLE_S idle seconds (the watcher burnt ~23)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module: the README's command, the small demo preset; yields (url, proc, log)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: install Debian's chromium (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    from tests.conftest import build_small, small_data_dir

    env = build_small(small_data_dir(tmp_path_factory))
    env.update(tour_env(Path(env["L2G_DATA_DIR"]) / "demo", tmp_path_factory.mktemp("tour")))
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    made = venv_in_repo()
    port = free_port()
    try:
        if not (ROOT / README_CMD[0]).exists():
            pytest.skip(f"{README_CMD[0]} missing: these tests run the README's command in its virtualenv")
        proc = start_server(env, port, log)
        try:
            wait_healthy(port, proc)
            yield f"http://127.0.0.1:{port}/", proc, log, env["L2G_DATA_DIR"]
        finally:
            stop_server(proc)
    finally:
        if made:
            VENV_LINK.unlink()


@pytest.fixture(scope="module")
def page(server):
    """A Chromium page on the query page, after its first query is fully drawn (g2l list included)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1500, "height": 2400})
            pg.goto(server[0], timeout=120_000)
            pg.locator(".st-key-l2g_rank_g2l [data-testid='stDataFrame']").wait_for(timeout=600_000)
            wait_idle(pg)
            yield pg
        finally:
            browser.close()


def _log(server) -> str:
    return server[2].read_text(errors="replace")[-3000:]


@pytest.mark.timeout(1500)
def test_first_start_to_a_usable_query_page(tmp_path):
    """From a clean data folder, the README's command (default preset): the Query page is usable while
    the rest of the demo is indexed in the background, and How it works stays usable meanwhile.
    (First in the module: Playwright's sync API cannot nest in the module page's.)"""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing")
    pytest.importorskip("playwright.sync_api")
    res = first_start(tmp_path / "data", tmp_path / "streamlit.log")
    print(f"first start: {res}")
    assert res["exceptions"] == 0, (tmp_path / "streamlit.log").read_text(errors="replace")[-3000:]
    assert re.search(r"indexing \d+/\d+ images in the background, [\d.]+ img/s, ~\d+ (s|min) left", res["progress"])
    assert res["how_it_works_progress"] and res["how_it_works_s"] < _bound(10), res
    assert res["query_page_s"] <= _bound(FIRST_START_MAX_S), res
    assert res["cpu_s"] <= 2 * FIRST_START_MAX_S, res        # CPU work that fits 60 s on 2 idle cores


@pytest.mark.timeout(900)
def test_idle_server_cpu_with_the_readme_command(server, page):
    """The server started as the README says, a page open and idle: almost no CPU (no file watcher)."""
    proc = server[1]
    c0, t0 = cpu_seconds(proc.pid), time.time()
    page.wait_for_timeout(1000 * IDLE_S)
    used, dt = cpu_seconds(proc.pid) - c0, time.time() - t0
    print(f"idle server: {used:.2f} CPU s in {dt:.1f} s")
    assert used < IDLE_CPU_MAX_S, f"{used:.1f} CPU s in {dt:.0f} idle s\n" + _log(server)
    assert "Inotify" not in server[2].read_text(errors="replace")


def _heading_y(page, prefix: str) -> float:
    h = page.locator("h3", has_text=prefix).first
    h.scroll_into_view_if_needed()
    return h.evaluate("e => e.getBoundingClientRect().top + document.querySelector("
                      "'[data-testid=stMain]').scrollTop")


@pytest.mark.timeout(900)
def test_stages_in_data_order_and_readable_cells(server, page):
    ys = [_heading_y(page, f"Stage {n}") for n in (1, 2, 3, 4)]
    q = page.locator(".st-key-l2g_qpick").evaluate(
        "e => e.getBoundingClientRect().top + document.querySelector('[data-testid=stMain]').scrollTop")
    qx = page.locator(".st-key-l2g_qpick").bounding_box()["x"]
    sx = page.locator("h3", has_text="Stage 1").first.bounding_box()["x"]
    assert q < ys[1] and qx < sx, (q, qx, sx)        # the query beside Stage 1 (left of it), above Stage 2
    assert ys[0] < ys[1] < ys[2] < ys[3], ys
    cells = {}
    for m in ("local", "l2g", "g2l"):
        grid = page.locator(f".st-key-l2g_rank_{m} [role=gridcell]")
        cells[m] = [t.strip() for t in grid.all_inner_texts()]
        assert len(cells[m]) >= 20, (m, cells[m][:10])
        assert not any(t in ("None", "nan", "NaN") for t in cells[m]), (m, cells[m])
    inl = [t for t in cells["g2l"] if "inlier" in t]
    assert len(inl) >= 20 and all(re.fullmatch(r"\d+ inliers?", t) for t in inl), inl
    caps = page.locator(".st-key-l2g_shortlist [data-testid=stCaptionContainer]").all_inner_texts()   # Stage 1
    counts = [re.search(r"(≥ )?(\d+) matches", c) for c in caps if c.startswith("#")]
    assert counts and all(c is not None for c in counts)
    assert all(c.group(1) for c in counts if int(c.group(2)) >= 500), caps     # the cap reads "≥ 500"
    assert page.locator('[data-testid="stException"]').count() == 0, _log(server)


def _match_caption(page) -> str:
    return page.get_by_text("Lines join").first.inner_text()


@pytest.mark.timeout(900)
def test_point_in_3d_opens_the_match_view(server, page):
    """3-D plots report no clicks to Streamlit: the 'Open a point' box next to the plot stands in."""
    before = _match_caption(page)
    page.locator(".st-key-l2g_mds_dim").get_by_text("3-D").click()
    wait_idle(page)
    page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')]"      # the 3-D plot is shown
                           ".some(p => p.data && p.data[0].type == 'scatter3d')", timeout=60_000)
    page.locator(".st-key-l2g_mds_pick").click()
    opts = page.locator("[role=option]")
    opts.nth(4).wait_for(timeout=30_000)
    want = opts.nth(4).inner_text().split(": ", 1)[1]
    opts.nth(4).click()
    page.wait_for_function("b => [...document.querySelectorAll('[data-testid=stImageCaption]')]"
                           ".some(e => e.innerText.includes('Lines join') && e.innerText != b)", arg=before,
                           timeout=120_000)
    wait_idle(page)
    after = _match_caption(page)
    assert after != before and want.split("/")[-1] in after, (want, after)
    page.locator(".st-key-l2g_mds_clear button").click()        # and back
    wait_idle(page)
    assert page.locator(".st-key-l2g_mds_clear button").is_disabled()
    page.locator(".st-key-l2g_mds_dim").get_by_text("2-D").click()
    wait_idle(page)


@pytest.mark.timeout(900)
def test_point_click_in_2d_opens_the_match_view(server, page):
    before = _match_caption(page)
    pts = page.locator(f"{PLOT} .scatterlayer .trace").first.locator(".point")
    pts.nth(5).scroll_into_view_if_needed()
    bb = pts.nth(5).bounding_box()
    page.mouse.click(bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2)
    page.wait_for_function("b => [...document.querySelectorAll('[data-testid=stImageCaption]')]"
                           ".some(e => e.innerText.includes('Lines join') && e.innerText != b)", arg=before,
                           timeout=120_000)
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0, _log(server)


@pytest.mark.timeout(900)
def test_gallery_selector_follows_an_upload(server, page, tmp_path):
    import numpy as np
    from PIL import Image

    files = []
    for i in range(3):
        p = tmp_path / f"pic{i}.png"
        Image.fromarray(np.random.default_rng(10 + i).integers(0, 255, (120, 120, 3), dtype=np.uint8)).save(p)
        files.append(str(p))
    name = f"browser {int(time.time()) % 100000}"
    page.goto(server[0] + "galleries", timeout=120_000)
    page.get_by_label("Gallery name (optional)").fill(name)
    page.locator(".st-key-l2g_gal_files input[type=file]").set_input_files(files)
    page.get_by_text("Create gallery").click()
    page.get_by_text("saved as gallery").wait_for(timeout=300_000)
    wait_idle(page)
    assert f"upload: {name}" in _gallery_box(page)
    page.locator("[data-testid=stSidebarNav]").get_by_text("Query").click()   # same session: the query page
    page.get_by_text("Stage 1").first.wait_for(timeout=300_000)
    assert f"upload: {name}" in _gallery_box(page)


def _fresh(page, url: str) -> None:
    """A new session on the query page, its first query drawn."""
    page.goto(url, timeout=120_000)
    page.get_by_text("after the interaction").first.wait_for(timeout=600_000)
    wait_idle(page)


def _ready_text(page) -> str:
    return page.get_by_text("after the interaction").first.inner_text()


def _wait_new_ready(page, before: str, timeout: int = 300_000) -> None:
    page.wait_for_function("b => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
                           ".some(e => e.innerText.includes('after the interaction') && e.innerText != b)",
                           arg=before, timeout=timeout)


def _settled_box(page, loc, tries: int = 40) -> dict:
    """``loc``'s bounding box once it has stayed put for 0.5 s (a drag aimed at a box that then moves
    lands elsewhere: the background verification redraws parts of the page above the plot)."""
    bb = loc.bounding_box()
    for _ in range(tries):
        page.wait_for_timeout(500)
        now = loc.bounding_box()
        if now == bb:
            return now
        bb = now
    return bb


@pytest.mark.timeout(900)
def test_drawn_box_sets_the_query_rectangle_and_searches_again(server, page):
    _fresh(page, server[0])
    plot = page.locator(".st-key-l2g_qbox .js-plotly-plot")
    plot.scroll_into_view_if_needed()
    bb = _settled_box(page, plot.locator(".nsewdrag").first)   # content drawn late above it moves it
    before = _ready_text(page)
    page.mouse.move(bb["x"] + 0.2 * bb["width"], bb["y"] + 0.25 * bb["height"])
    page.mouse.down()
    page.mouse.move(bb["x"] + 0.6 * bb["width"], bb["y"] + 0.7 * bb["height"], steps=10)
    page.mouse.up()
    page.get_by_text(re.compile(r"rectangle \(\d+, \d+, \d+, \d+\)")).first.wait_for(timeout=120_000)
    _wait_new_ready(page, before)             # the shortlist re-ran on the crop
    wait_idle(page)
    cap = page.get_by_text(re.compile(r"px at feature resolution")).first.inner_text()
    w, h = (int(v) for v in re.search(r"\((\d+) x (\d+) px", cap).groups())
    x0, y0, x1, y1 = (int(v) for v in re.search(r"rectangle \((\d+), (\d+), (\d+), (\d+)\)", cap).groups())
    assert abs(x0 - 0.2 * w) < 0.08 * w and abs(x1 - 0.6 * w) < 0.08 * w, (cap, w, h)
    assert abs(y0 - 0.25 * h) < 0.08 * h and abs(y1 - 0.7 * h) < 0.08 * h, (cap, w, h)
    assert page.locator("[data-testid=stSlider]", has_text="x range").count() == 1     # the sliders follow
    assert "new search" in _timing_text(page), _timing_text(page)
    assert page.locator('[data-testid="stException"]').count() == 0, _log(server)


def _upload(page, path: Path) -> float:
    """Upload ``path`` as the query; seconds from the file choice to its 'Rankings … ready' caption."""
    page.locator(".st-key-l2g_qkind").get_by_text("Upload").click()
    page.locator(".st-key-l2g_upload input[type=file]").wait_for(state="attached", timeout=60_000)
    wait_idle(page)
    t0 = time.perf_counter()
    page.locator(".st-key-l2g_upload input[type=file]").set_input_files(str(path))
    page.get_by_text(f"Rankings for {path.name} ready").wait_for(state="attached", timeout=300_000)
    return time.perf_counter() - t0


UPLOAD_MAX_S = 1.5           # unloaded, 2 cores (issue 10)
LOADED_MARGIN = 2.0          # a loaded machine: the bound times its oversubscription times this


def _bound(seconds: float) -> float:
    """The bound, stretched when the machine is loaded (more runnable tasks than cores: each test then
    gets that much less of a core); the measured time is printed either way."""
    over = os.getloadavg()[0] / (os.cpu_count() or 1)
    return seconds if over <= 1.0 else seconds * over * LOADED_MARGIN


@pytest.mark.timeout(900)
def test_upload_to_the_reranked_list(server, page, tmp_path):
    _fresh(page, server[0])
    rel = _demo_files(server)[5]
    path = tmp_path / ("upload_" + Path(rel).name)
    path.write_bytes((_demo_dir(server) / rel).read_bytes())
    dt = _upload(page, path)
    wait_idle(page)
    split = _timing_text(page).split("\n")[0]
    print(f"upload {path.name} -> re-ranked list: {dt:.2f} s (load {os.getloadavg()[0]:.1f}); {split}")
    assert page.locator('[data-testid="stException"]').count() == 0, _log(server)
    assert dt <= _bound(UPLOAD_MAX_S), (dt, split)


@pytest.mark.timeout(900)
def test_no_match_message_for_a_photo_from_outside_the_gallery(server, page, tmp_path):
    from tests.conftest import outside_photo

    name, data = outside_photo()
    path = tmp_path / name
    path.write_bytes(data)
    _fresh(page, server[0])
    dt = _upload(page, path)
    page.get_by_text("No confident match in this gallery").wait_for(timeout=60_000)
    wait_idle(page)
    print(f"outside photo {name}: 'no confident match' after {dt:.2f} s")
    msg = page.locator("[data-testid=stAlert]", has_text="No confident match in this gallery").first.inner_text()
    assert "threshold" in msg and "inliers" in msg, msg
    exp = page.locator("[data-testid=stExpander]", has_text="no confident match")
    assert exp.count() == 1
    assert not exp.locator("details").first.evaluate("d => d.open")        # the lists are collapsed
    assert page.locator('[data-testid="stException"]').count() == 0, _log(server)


@pytest.mark.timeout(900)
def test_tour_link_opens_the_query_page_with_its_caption(server, page):
    from l2g.app import tour

    stop = TEST_TOUR[0]
    page.goto(server[0] + "how-it-works", timeout=120_000)
    page.get_by_role("button", name=tour.label(stop)[0]).click()
    page.locator(".st-key-l2g_tour_caption").get_by_text(stop.caption[:30]).wait_for(timeout=300_000)
    page.get_by_text(f"Rankings for {stop.query} ready").wait_for(state="attached", timeout=300_000)
    wait_idle(page)
    assert stop.query in page.locator(".st-key-l2g_qpick").inner_text() + page.locator(
        ".st-key-l2g_qpick input").input_value()
    assert page.locator('[data-testid="stException"]').count() == 0, _log(server)


FIRST_START_MAX_S = 60      # unloaded, 2 cores (issue 10)


def first_start(data: Path, log: Path, env: dict | None = None) -> dict:
    """The README's command on a clean data folder: seconds from the command to a usable Query page
    (its first ranked lists), the background indexing's progress text, and How it works meanwhile."""
    from playwright.sync_api import sync_playwright

    made = venv_in_repo()
    port = free_port()
    out = {}
    t0 = time.perf_counter()
    proc = start_server({"L2G_DATA_DIR": str(data), **(env or {})}, port, log)
    try:
        wait_healthy(port, proc, timeout=300)
        out["healthy_s"] = round(time.perf_counter() - t0, 2)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1400})
                page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
                page.get_by_text("after the interaction").first.wait_for(state="attached", timeout=900_000)
                out["query_page_s"] = round(time.perf_counter() - t0, 2)
                out["cpu_s"] = round(session_cpu_seconds(proc.pid), 1)
                print(f"first start: {out}", flush=True)
                note = ("document.body.innerText.match(/indexing \\d+\\/\\d+ images in the background"
                        "(, [\\d.]+ img\\/s, ~\\d+ (s|min) left)?/)")
                page.wait_for_function(f"() => {{ const m = {note}; return m && m[1]; }}", timeout=300_000)
                out["progress"] = page.evaluate(f"() => {note}[0]")
                t1 = time.perf_counter()
                page.locator("[data-testid=stSidebarNav]").get_by_text("How it works").click()
                page.get_by_text("Global-to-local (the classic pipeline)").wait_for(timeout=120_000)
                out["how_it_works_s"] = round(time.perf_counter() - t1, 2)
                out["how_it_works_progress"] = page.get_by_text(re.compile("images in the background")).count() > 0
                out["exceptions"] = page.locator('[data-testid="stException"]').count()
            finally:
                browser.close()
    finally:
        stop_server(proc)
        if made:
            VENV_LINK.unlink()
    out["load"] = round(os.getloadavg()[0], 1)
    return out


def _demo_dir(server) -> Path:
    return Path(server[3]) / "demo"


def _demo_files(server) -> list:
    import json

    meta = json.loads((_demo_dir(server) / "groups.json").read_text())
    return [p for m in meta["groups"].values() for p in m]


def _gallery_box(page) -> str:
    """The sidebar gallery selectbox's shown value (its text, or its input's value)."""
    box = page.locator("[data-testid=stSidebar] .st-key-l2g_gallery_box")
    inp = box.locator("input")
    return box.inner_text() + " | " + (inp.first.input_value() if inp.count() else "")


if __name__ == "__main__":   # README screenshot with the full demo config (data/)
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--screenshot", default=str(ROOT / "assets" / "query_page.png"))
    ap.add_argument("--query", default=None)
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--measure", nargs="*", help="gallery queries to time instead of taking the screenshot")
    ap.add_argument("--first-start", action="store_true", help="time a first start from a clean data folder")
    ap.add_argument("--measure-upload", nargs="*", help="image files to upload as queries, timed")
    a = ap.parse_args()
    if a.first_start:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            print(first_start(Path(tmp) / "data", Path(tmp) / "streamlit.log"))
        sys.exit(0)
    port = free_port()
    made = venv_in_repo()
    import tempfile

    proc = start_server({}, port, Path(tempfile.gettempdir()) / "l2g_streamlit_screenshot.log")
    try:
        wait_healthy(port, proc, timeout=300)
        if a.measure_upload:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
                pg = browser.new_page(viewport={"width": 1500, "height": 1400})
                for f in a.measure_upload:
                    _fresh(pg, f"http://127.0.0.1:{port}/")
                    dt = _upload(pg, Path(f))
                    wait_idle(pg)
                    print(f"upload {f}: {dt:.2f} s to the ranked lists; {_timing_text(pg).splitlines()[0]}; "
                          f"load {os.getloadavg()[0]:.1f}")
                browser.close()
        elif a.measure:
            print(measure(f"http://127.0.0.1:{port}/", a.measure))
        else:
            print(drive(f"http://127.0.0.1:{port}/", Path(a.screenshot), a.query, a.width, a.height,
                        colour_gt=True))
            from PIL import Image  # a palette PNG: a third of the size, same look

            with Image.open(a.screenshot) as im:
                im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
                    a.screenshot, optimize=True)
    finally:
        stop_server(proc)
        if made:
            VENV_LINK.unlink()
