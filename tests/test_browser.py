"""End to end in a real browser: `streamlit run app.py` + Debian's Chromium driven by Playwright.

Also takes the README screenshot (full demo config, data/):

    .venv/bin/python tests/test_browser.py --screenshot assets/query_page.png [--query groups/x/y.jpg]
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


def start_server(env: dict, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    fh = open(log, "wb")
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)


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


POINTS = ".js-plotly-plot .scatterlayer .point"


def measure(url: str, queries: list[str]) -> dict:
    """Browser timings: gallery query -> re-ranked list, and k / d / w slider -> updated page."""
    from playwright.sync_api import sync_playwright

    out = {"query_s": [], "slider_s": {}}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1200})
            page.goto(url, timeout=120_000)
            page.wait_for_selector(".js-plotly-plot", timeout=600_000)
            wait_idle(page)
            for q in queries:
                out["query_s"].append(round(choose_query(page, q), 3))
            page.locator(".st-key-l2g_p_k input[type=range]").first.focus()
            page.keyboard.press("ArrowLeft")        # k = M - 1: every candidate is still in the head
            wait_idle(page)
            page.wait_for_timeout(500)
            n = page.locator(POINTS).count()
            out["slider_s"]["k"] = round(nudge_slider(page, "l2g_p_k", "ArrowLeft", lambda p: p.wait_for_function(
                f"document.querySelectorAll('{POINTS}').length == {n - 1}", timeout=120_000)), 3)
            out["slider_s"]["d"] = round(nudge_slider(page, "l2g_p_dim", "ArrowLeft", lambda p: p.get_by_text(
                "· 16-D").first.wait_for(timeout=120_000)), 3)
            out["slider_s"]["w"] = round(nudge_slider(page, "l2g_p_w", "ArrowRight", lambda p: p.get_by_text(
                "(w = 0.05)").first.wait_for(timeout=120_000)), 3)
            out["last_update"] = page.get_by_text("last update").first.inner_text()
        finally:
            browser.close()
    return out


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
            page.wait_for_selector(".js-plotly-plot", timeout=600_000)    # first query runs on load
            wait_idle(page)
            facts = {}
            if query:
                facts["latency_s"] = choose_query(page, query)
            page.wait_for_selector(POINTS, timeout=60_000)
            facts["points"] = page.locator(POINTS).count()
            title = page.locator(".js-plotly-plot .gtitle").first.text_content()
            facts["top_k"] = int(re.search(r"top-(\d+)", title).group(1))
            facts["match_view"] = page.get_by_text("RANSAC inliers").count()
            facts["match_before"] = page.get_by_text("Lines join keypoints").first.inner_text()
            if click_point is not None:     # a point of the 2-D embedding opens that candidate
                pts = page.locator(".js-plotly-plot .scatterlayer .trace").first.locator(".point")
                bb = pts.nth(click_point).bounding_box()
                page.mouse.click(bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2)
                page.wait_for_function(
                    "b => [...document.querySelectorAll('[data-testid=stImageCaption]')]"
                    ".some(e => e.innerText.includes('Lines join') && e.innerText != b)",
                    arg=facts["match_before"], timeout=120_000)
                wait_idle(page)
                facts["match_after"] = page.get_by_text("Lines join keypoints").first.inner_text()
            facts["tables"] = [page.locator(f".st-key-l2g_rank_{m} [data-testid='stDataFrame']").count()
                               for m in ("local", "l2g", "g2l")]
            facts["exceptions"] = page.locator('[data-testid="stException"]').count()
            facts["query"] = page.locator("text=/Query: /").first.inner_text()
            if colour_gt:
                page.locator(".st-key-l2g_mds_colour").get_by_text("ground truth").click()
                wait_idle(page)
            page.mouse.move(0, 0)
            page.screenshot(path=str(shot), full_page=True)
            return facts
        finally:
            browser.close()


@pytest.mark.timeout(1500)
def test_query_in_a_real_browser(tmp_path, tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: install Debian's chromium (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    from tests.conftest import build_small, small_data_dir

    env = build_small(small_data_dir(tmp_path_factory))
    port = free_port()
    proc = start_server(env, port, tmp_path / "streamlit.log")
    try:
        wait_healthy(port, proc)
        shot = tmp_path / "query_page.png"
        facts = drive(f"http://127.0.0.1:{port}/", shot, query="groups/coffee/coffee_crop1.jpg", click_point=5)
        log = (tmp_path / "streamlit.log").read_text(errors="replace")
        assert facts["exceptions"] == 0, log[-3000:]
        assert "coffee_crop1.jpg" in facts["query"]
        assert facts["points"] == facts["top_k"] + 1 >= 4     # query star + k candidates in the MDS chart
        assert facts["match_view"] >= 1 and facts["match_after"] != facts["match_before"]
        assert facts["tables"] == [1, 1, 1]
        assert shot.is_file() and shot.stat().st_size > 50_000
        print(f"browser: {facts}")
    finally:
        stop_server(proc)


if __name__ == "__main__":   # README screenshot with the full demo config (data/)
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--screenshot", default=str(ROOT / "assets" / "query_page.png"))
    ap.add_argument("--query", default=None)
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--measure", nargs="*", help="gallery queries to time instead of taking the screenshot")
    a = ap.parse_args()
    port = free_port()
    proc = start_server({}, port, Path("/tmp/l2g_streamlit_screenshot.log"))
    try:
        wait_healthy(port, proc, timeout=300)
        if a.measure:
            print(measure(f"http://127.0.0.1:{port}/", a.measure))
        else:
            print(drive(f"http://127.0.0.1:{port}/", Path(a.screenshot), a.query, a.width, a.height,
                        colour_gt=True))
            from PIL import Image       # a palette PNG: a third of the size, same look

            with Image.open(a.screenshot) as im:
                im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
                    a.screenshot, optimize=True)
    finally:
        stop_server(proc)
