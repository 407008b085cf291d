"""Tests for l2g.datasets, l2g.download and l2g.demo (everything generated in tmp_path, no network)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import socket
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from l2g import config, demo, demo_views
from l2g import download as dl
from l2g.datasets import (
    DatasetError,
    EvalDataset,
    GroundTruth,
    list_images,
    load_eval_dataset,
    load_groups,
    safe_load_pickle,
)
from l2g.images import load_image


def _jpeg_bytes(seed: int, size=(40, 30)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- listing and groups.json


def test_list_images(tmp_path):
    for rel in ("b.JPG", "sub/a.png", "sub/deeper/e.TiFF", ".hidden/c.jpg", "sub/.d.jpg", "notes.txt", "x.jpg.bak"):
        _write(tmp_path / rel, b"x")
    assert list_images(tmp_path) == ["b.JPG", "sub/a.png", "sub/deeper/e.TiFF"]
    assert list_images(tmp_path / "sub") == ["a.png", "deeper/e.TiFF"]
    with pytest.raises(DatasetError, match="no such folder"):
        list_images(tmp_path / "nope")


def _textured_png(seed: int) -> bytes:
    blocks = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.kron(blocks, np.ones((10, 10, 1), np.uint8))).save(buf, format="PNG")
    return buf.getvalue()


def _gallery_with_links(tmp_path: Path) -> Path:
    """g/ with two images, a file symlink leading outside, one staying inside, a folder link, a zip."""
    g, outside = tmp_path / "g", tmp_path / "outside"
    _write(g / "a.png", _textured_png(1))
    _write(g / "sub" / "b.png", _textured_png(2))
    _write(outside / "secret.png", _textured_png(3))
    (g / "leak.png").symlink_to(outside / "secret.png")
    (g / "sub" / "same.png").symlink_to(g / "a.png")
    (g / "linked_dir").symlink_to(outside, target_is_directory=True)
    _write(g / "photos.zip", b"PK\x05\x06" + b"\x00" * 18)
    _write(g / "notes.txt", b"hello")
    return g


def test_scan_gallery_refuses_file_links_leading_outside(tmp_path):
    from l2g.datasets import scan_gallery

    g = _gallery_with_links(tmp_path)
    scan = scan_gallery(g)
    assert scan.images == list_images(g) == ["a.png", "sub/b.png", "sub/same.png"]
    assert [p for p, _ in scan.refused] == ["leak.png"] and "outside" in scan.refused[0][1]
    ignored = dict(scan.ignored)
    assert "archive" in ignored["photos.zip"] and "not an image" in ignored["notes.txt"]
    assert "not followed" in ignored["linked_dir"]


def test_path_order_is_the_order_a_gallery_is_listed_in(tmp_path):
    """One helper (l2g.scan.path_order) puts images in path order for the IVF training sample, the VLAD
    sample and the ranking tie-break (ann, globaldesc and search each had their own argsort)."""
    from l2g import ann
    from l2g import config as C
    from l2g.datasets import scan_gallery
    from l2g.scan import path_order

    g = tmp_path / "g"
    names = ["b.png", "B.png", "sub/c.png", "sub-x/d.png", "a b.png", "\u00e9t\u00e9.png", "sub/a/z.png"]
    for n in names:
        _write(g / n, b"x")
    listed = scan_gallery(g).images
    shuffled = [listed[i] for i in np.random.default_rng(0).permutation(len(listed))]
    order = path_order(shuffled)
    assert order.dtype == np.int64 and [shuffled[i] for i in order] == listed == sorted(names)
    # the IVF sample: the same descriptors (each image's own rows) whatever the order the store holds them in
    counts = np.arange(1, len(listed) + 1) * 7
    cfg = C.IndexConfig(train_sample=20)
    by_path = {p: c for p, c in zip(listed, counts)}

    def picked(paths):
        rows = ann.train_rows_in(paths, [by_path[p] for p in paths], cfg)
        start = np.concatenate([[0], np.cumsum([by_path[p] for p in paths])])
        img = np.searchsorted(start, rows, side="right") - 1
        return sorted((paths[i], int(r - start[i])) for i, r in zip(img, rows))
    assert picked(shuffled) == picked(listed)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_with_an_image_name_is_ignored_not_read(tmp_path):
    """Opening a FIFO blocks until a writer comes: a build that read one would hang, holding its lock."""
    import subprocess
    import sys

    from l2g.datasets import scan_gallery

    g = tmp_path / "g"
    g.mkdir()
    Image.fromarray((np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)).save(g / "a.png")
    os.mkfifo(g / "pipe.jpg")
    scan = scan_gallery(g)
    assert scan.images == ["a.png"] and "named pipe" in dict(scan.ignored)["pipe.jpg"]
    r = subprocess.run([sys.executable, "-m", "l2g", "index", str(g), "--out", str(tmp_path / "ix"), "--features",
                        "100", "--no-global"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and "skipped pipe.jpg: not a regular file" in r.stdout, r.stdout + r.stderr
    # a build given the paths itself (check --repair, the app) hashes each file: the pipe is refused unopened
    from l2g.errors import ImageError
    from l2g.images import file_sha1

    got = []

    def sha():
        try:
            file_sha1(g / "pipe.jpg")
        except ImageError as e:
            got.append(str(e))

    t = threading.Thread(target=sha, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive() and got and "not a regular file" in got[0]


def test_cli_index_reports_links_and_archives_and_skips_them(tmp_path, capsys):
    from l2g.cli import main
    from l2g.index import load_index

    g = _gallery_with_links(tmp_path)
    assert main(["index", str(g), "--out", str(tmp_path / "ix"), "--features", "100", "--no-global"]) == 0
    out = capsys.readouterr().out
    assert "skipped leak.png: a symbolic link to a file outside" in out
    assert "skipped photos.zip: an archive" in out and "skipped linked_dir: a symbolic link to a folder" in out
    li = load_index(tmp_path / "ix")
    assert sorted(li.paths) == ["a.png", "sub/b.png", "sub/same.png"]
    assert ("leak.png", "a symbolic link to a file outside the gallery folder: refused") in li.failed
    # an explicit path list (groups.json, the evaluation) is checked too
    from l2g.index import build_index

    li, rep = build_index(g, tmp_path / "ix2", paths=["a.png", "leak.png", "linked_dir/secret.png"])
    assert li.paths == ["a.png"] and {p for p, _ in rep.failed} == {"leak.png", "linked_dir/secret.png"}


def _groups_folder(root: Path) -> Path:
    files = {"g/a1.jpg": 1, "g/a2.jpg": 2, "g/a3.jpg": 3, "h/b1.jpg": 4, "h/b2.jpg": 5, "lone/c.jpg": 6, "d/x.jpg": 7}
    for rel, seed in files.items():
        _write(root / rel, _jpeg_bytes(seed))
    meta = {"groups": {"a": ["g/a1.jpg", "g/a2.jpg", "g/a3.jpg"], "b": ["h/b1.jpg", "h/b2.jpg"],
                       "lone": ["lone/c.jpg"]},
            "distractors": ["d/x.jpg"]}
    (root / "groups.json").write_text(json.dumps(meta))
    return root


def test_load_groups_and_group_of(tmp_path):
    gt = load_groups(_groups_folder(tmp_path))
    assert isinstance(gt, GroundTruth)
    assert gt.group_of("g/a2.jpg") == "a" and gt.group_of("h/b1.jpg") == "b"
    assert gt.group_of("d/x.jpg") is None and gt.group_of("unknown.jpg") is None
    assert gt.distractors == ["d/x.jpg"] and len(gt.images) == 7
    assert load_groups(tmp_path / "groups.json").groups == gt.groups


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("{not json", "cannot be parsed"),
    (json.dumps({"distractors": []}), "'groups' mapping"),
    (json.dumps({"groups": {"a": ["../outside.jpg"]}}), "must be relative"),
    (json.dumps({"groups": {"a": ["g/a1.jpg"], "b": ["g/a1.jpg"]}}), "listed twice"),
    (json.dumps({"groups": {"a": ["g/missing.jpg"]}}), "missing"),
])
def test_load_groups_errors(tmp_path, content, message):
    _write(tmp_path / "g/a1.jpg", _jpeg_bytes(0))
    if content is not None:
        (tmp_path / "groups.json").write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_groups(tmp_path)


def test_eval_dataset_from_groups(tmp_path):
    ds = load_eval_dataset(_groups_folder(tmp_path))
    assert isinstance(ds, EvalDataset) and ds.kind == "groups"
    assert ds.root == tmp_path and ds.query_root == tmp_path and ds.name == tmp_path.name
    assert len(ds.images) == 7 and "d/x.jpg" in ds.images
    assert len(ds.queries) == 5                       # the lone image has no positive
    q = next(q for q in ds.queries if q.path == "g/a2.jpg")
    assert q.easy == ["g/a1.jpg", "g/a3.jpg"] and q.hard == [] and q.junk == []
    assert q.exclude_self and q.bbox is None


def test_eval_dataset_unknown_folder(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset folder"):
        load_eval_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such dataset"):
        load_eval_dataset(tmp_path / "absent")


@pytest.mark.skipif(not (config.REALBENCH_DIR / "groups.json").is_file(), reason="realbench-dev not present")
def test_realbench_dev_loads():
    ds = load_eval_dataset("realbench-dev")
    assert ds.queries and all(q.easy for q in ds.queries)


# ----------------------------------------------------------------------------- Revisited Oxford layout


IMLIST = ["all_souls_000001", "all_souls_000002", "ashmolean_000007", "balliol_000011", "bodleian_000033"]
QIMLIST = ["all_souls_000001", "ashmolean_000007"]


def _fake_gnd() -> dict:
    return {"imlist": IMLIST, "qimlist": QIMLIST,
            "gnd": [{"bbx": [10.5, 4.0, 30.0, 25.0], "easy": np.array([1], np.int64),
                     "hard": np.array([4], np.int64), "junk": np.array([], np.int64)},
                    {"bbx": np.array([1.0, 2.0, 3.0, 4.0]), "easy": np.array([], np.int64),
                     "hard": np.array([3, 1], np.int64), "junk": np.array([0], np.int64)}]}


def _fake_revisitop(root: Path, protocol: int = 4, write_images: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if write_images:
        for i, name in enumerate(IMLIST):
            _write(root / "jpg" / f"{name}.jpg", _jpeg_bytes(i))
    (root / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(_fake_gnd(), protocol=protocol))
    return root


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_revisitop_layout(tmp_path, protocol):
    ds = load_eval_dataset(_fake_revisitop(tmp_path, protocol))
    assert ds.kind == "revisitop" and ds.name == "roxford5k"
    assert ds.images == [f"jpg/{n}.jpg" for n in IMLIST]
    assert [q.path for q in ds.queries] == ["jpg/all_souls_000001.jpg", "jpg/ashmolean_000007.jpg"]
    q0, q1 = ds.queries
    assert q0.bbox == (10.5, 4.0, 30.0, 25.0) and q1.bbox == (1.0, 2.0, 3.0, 4.0)
    assert q0.easy == ["jpg/all_souls_000002.jpg"] and q0.hard == ["jpg/bodleian_000033.jpg"] and q0.junk == []
    assert q1.hard == ["jpg/balliol_000011.jpg", "jpg/all_souls_000002.jpg"]
    assert q1.junk == ["jpg/all_souls_000001.jpg"] and not q1.exclude_self


def test_revisitop_by_name_and_missing_images(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DATA_DIR", tmp_path)
    _fake_revisitop(tmp_path / "roxford5k", write_images=False)
    with pytest.raises(DatasetError, match="missing under jpg/"):
        load_eval_dataset("roxford5k")
    _fake_revisitop(tmp_path / "roxford5k")
    assert len(load_eval_dataset("roxford5k").queries) == 2


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"imlist": IMLIST, "qimlist": QIMLIST, "gnd": [_Evil(marker)]}
    (tmp_path / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(payload))
    with pytest.raises(DatasetError, match="refusing to load .*system"):
        load_eval_dataset(tmp_path)
    assert not marker.exists()
    (tmp_path / "evil2.pkl").write_bytes(pickle.dumps(eval, protocol=2))
    with pytest.raises(DatasetError, match="refusing"):
        safe_load_pickle(tmp_path / "evil2.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"\x00garbage")
    with pytest.raises(DatasetError, match="not a readable"):
        safe_load_pickle(tmp_path / "junk.pkl")


class _Call:
    """Pickles as a call fn(*args) (then state, if given): how a forged pickle asks for memory."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def _huge_pickles() -> dict:
    from numpy._core.multiarray import _reconstruct

    big = (1 << 32,)                                                    # x 8 bytes = 32 GiB
    return {
        "ndarray": pickle.dumps({"gnd": _Call(np.ndarray, (big, "f8"))}, protocol=2),
        "reconstruct": pickle.dumps([_Call(_reconstruct, (np.ndarray, big, b"b"))], protocol=4),
        "object-array state": pickle.dumps(_Call(_reconstruct, (np.ndarray, (0,), b"b"),
                                                 (1, big, np.dtype("O"), False, [])), protocol=2),
        "bytearray": pickle.dumps(_Call(bytearray, (1 << 35,)), protocol=2),
        "list of a range": pickle.dumps(_Call(list, (range(1 << 40),)), protocol=4),
        "bytes length field": b"\x80\x04\x8e" + (1 << 35).to_bytes(8, "little") + b"ab.",
    }


@pytest.mark.parametrize("kind", list(_huge_pickles()))
def test_pickle_asking_for_huge_memory_is_refused_before_allocating(tmp_path, kind):
    import resource

    p = tmp_path / "gnd_roxford5k.pkl"
    p.write_bytes(_huge_pickles()[kind])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DatasetError, match="refusing|truncated|not a readable") as err:
        safe_load_pickle(p)
    assert str(p) in str(err.value) and "MemoryError" not in str(err.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024      # KiB: < 512 MiB
    if kind != "bytes length field":
        assert "limit" in str(err.value)
    with pytest.raises(DatasetError):                       # the same through the dataset loader
        load_eval_dataset(tmp_path)


def test_pickle_file_over_the_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "PICKLE_MAX_BYTES", 1000)
    p = tmp_path / "big.pkl"
    p.write_bytes(pickle.dumps(list(range(2000))))
    with pytest.raises(DatasetError, match=r"pickle file of 5,762 bytes .*limit 1,000"):
        safe_load_pickle(p)
    p.write_bytes(pickle.dumps(_Call(np.ndarray, ((250,), "f8"))))   # 2,000 bytes asked by a tiny file
    monkeypatch.setattr(config, "PICKLE_MAX_BYTES", 1500)
    with pytest.raises(DatasetError, match=r"numpy array of shape \(250,\) of 2,000 bytes"):
        safe_load_pickle(p)
    monkeypatch.setattr(config, "PICKLE_MAX_BYTES", 2000)          # the limit itself is allowed
    assert safe_load_pickle(p).shape == (250,)


# ----------------------------------------------------------------------------- download


class _Server:
    """A tiny HTTP file server on 127.0.0.1 that honours 'Range: bytes=N-' and logs requests."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None]] = []
        self.honour_range = True
        self.delay = 0.0            # seconds each response waits before its body (a slow mirror)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.log.append((self.path, rng))
                data = outer.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].rstrip("-")) if rng and outer.honour_range else 0
                if start >= len(data) > 0:
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                time.sleep(outer.delay)
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _fake_remote(server, monkeypatch, tar_members=None, tar_sha=None):
    gnd = pickle.dumps(_fake_gnd())
    members = tar_members or {f"oxbuild/{n}.jpg": _jpeg_bytes(i, (300, 200)) for i, n in enumerate(IMLIST)}
    tar = _tarball(members)
    server.files = {"gnd_roxford5k.pkl": gnd, "oxbuild_images-v1.tgz": tar}
    table = (dl.RemoteFile("http://unused.invalid/gnd_roxford5k.pkl", "gnd_roxford5k.pkl", _sha(gnd)),
             dl.RemoteFile("http://unused.invalid/oxbuild_images-v1.tgz", "oxbuild_images-v1.tgz",
                           tar_sha if tar_sha is not None else None, extract_to="jpg"))
    monkeypatch.setitem(dl.DATASETS, "roxford5k", table)
    return gnd, tar


def test_download_resume_verify_extract(tmp_path, server, monkeypatch):
    _, tar = _fake_remote(server, monkeypatch)
    folder = tmp_path / "roxford5k"
    half = len(tar) // 2
    _write(folder / "oxbuild_images-v1.tgz.part", tar[:half])
    calls = []
    out = dl.download("roxford5k", tmp_path, progress=lambda d, t, m: calls.append((d, t, m)),
                      base_url=server.url + "/")
    assert out == folder
    assert ("/oxbuild_images-v1.tgz", f"bytes={half}-") in server.log          # resumed, not restarted
    final = folder / "oxbuild_images-v1.tgz"
    assert dl.sha256_file(final) == _sha(tar)
    assert (folder / "oxbuild_images-v1.tgz.sha256").read_text().split()[0] == _sha(tar)
    assert not (folder / "oxbuild_images-v1.tgz.part").exists()
    assert any(t == len(tar) and d == len(tar) for d, t, m in calls)
    ds = load_eval_dataset(folder)                                            # the result is usable
    assert len(ds.images) == 5 and load_image(folder / ds.queries[0].path).rgb.shape == (200, 300, 3)
    n_requests = len(server.log)
    dl.download("roxford5k", tmp_path, base_url=server.url)                  # complete: nothing fetched
    assert len(server.log) == n_requests
    final.write_bytes(b"corrupted since")                                     # sidecar catches it
    dl.download("roxford5k", tmp_path, base_url=server.url)
    assert dl.sha256_file(final) == _sha(tar) and len(server.log) == n_requests + 1


def test_concurrent_downloads_of_one_dataset_wait_for_each_other(tmp_path, server, monkeypatch):
    """Two downloads of the same dataset at once: the second waits for the first (folder lock), so
    the archive is fetched once, never appended to by two writers, and every image arrives whole."""
    _, tar = _fake_remote(server, monkeypatch)
    server.delay = 0.5          # both downloads are in flight at once
    errors = []

    def run():
        try:
            dl.download("roxford5k", tmp_path, base_url=server.url)
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    folder = tmp_path / "roxford5k"
    assert not errors
    assert [p for p, _ in server.log].count("/oxbuild_images-v1.tgz") == 1
    assert dl.sha256_file(folder / "oxbuild_images-v1.tgz") == _sha(tar)
    ds = load_eval_dataset(folder)
    assert len(ds.images) == 5
    assert not [p.name for p in (folder / "jpg").iterdir() if not p.name.endswith(".jpg")]   # no temporaries


def test_download_server_ignoring_range_restarts(tmp_path, server, monkeypatch):
    gnd, _ = _fake_remote(server, monkeypatch)
    server.honour_range = False
    _write(tmp_path / "roxford5k" / "gnd_roxford5k.pkl.part", b"WRONG-PREFIX")
    dl.download("roxford5k", tmp_path, base_url=server.url)
    assert (tmp_path / "roxford5k" / "gnd_roxford5k.pkl").read_bytes() == gnd


def test_download_checksum_mismatch(tmp_path, server, monkeypatch):
    _fake_remote(server, monkeypatch, tar_sha="0" * 64)
    with pytest.raises(DatasetError, match="checksum mismatch for oxbuild_images-v1.tgz"):
        dl.download("roxford5k", tmp_path, base_url=server.url)
    folder = tmp_path / "roxford5k"
    assert not (folder / "oxbuild_images-v1.tgz").exists()
    assert not (folder / "oxbuild_images-v1.tgz.part").exists()
    assert not (folder / "jpg").exists()


def test_download_rejects_unsafe_tar(tmp_path, server, monkeypatch):
    _fake_remote(server, monkeypatch, tar_members={"ok/a.jpg": _jpeg_bytes(1), "../evil.jpg": b"x"})
    with pytest.raises(DatasetError, match="unsafe member path '../evil.jpg'"):
        dl.download("roxford5k", tmp_path, base_url=server.url)
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "roxford5k" / "evil.jpg").exists()
    assert not (tmp_path / "roxford5k" / "jpg" / "a.jpg").exists()           # nothing extracted at all


def test_download_errors(tmp_path, server, monkeypatch):
    with pytest.raises(DatasetError, match="unknown dataset"):
        dl.download("imagenet", tmp_path)
    _fake_remote(server, monkeypatch)
    server.files = {}
    with pytest.raises(DatasetError, match="HTTP 404"):
        dl.download("roxford5k", tmp_path, base_url=server.url)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed_port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(DatasetError, match="cannot reach"):
        dl.download("roxford5k", tmp_path, base_url=f"http://127.0.0.1:{closed_port}")


def test_official_table():
    for name in ("roxford5k", "rparis6k"):
        files = dl.DATASETS[name]
        assert files[0].filename == f"gnd_{name}.pkl" and files[0].url.startswith("http")
        assert any(f.extract_to == "jpg" for f in files)


# ----------------------------------------------------------------------------- demo


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return demo.build_demo(tmp_path_factory.mktemp("demo") / "demo")


def _tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha(p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_is_deterministic(demo_dir, tmp_path):
    again = demo.build_demo(tmp_path / "again")
    a, b = _tree_hashes(demo_dir), _tree_hashes(again)
    assert a == b and len(a) > 50


def test_demo_groups_consistent(demo_dir):
    gt = load_groups(demo_dir)                       # every listed file exists
    meta = json.loads((demo_dir / "groups.json").read_text())
    assert 9 <= len(gt.groups) <= 12 and 80 <= len(gt.distractors) <= 130
    assert len(gt.images) <= 220                     # the test suite indexes the whole demo once
    assert "motorcycle_view1.jpg" in " ".join(gt.groups["motorcycle"])  # the real stereo partner
    for name, paths in gt.groups.items():
        assert 8 <= len(paths) <= 11
        crops = [p for p in paths if "_crop" in p]
        assert len(crops) == len(demo_views.CROP_AREAS), f"group {name}: {crops}"
        boxes = [meta["views"][p]["box"] for p in crops]
        for i, p in enumerate(crops):
            assert 0.1 <= meta["views"][p]["area"] <= 0.25           # small partial views
            for b in boxes[:i]:                                       # nearly disjoint from the earlier crops
                assert demo_views._overlap(boxes[i], b) <= demo_views.CROP_MAX_OVERLAP + 1e-9, (p, b)
    for rel in gt.images:
        img = load_image(demo_dir / rel, max_side=None)
        assert max(img.rgb.shape[:2]) <= demo.DEMO_MAX_SIDE and min(img.rgb.shape[:2]) >= 100
    for rel in gt.distractors:                                        # distractors are smaller (fast to index)
        assert max(load_image(demo_dir / rel, max_side=None).rgb.shape[:2]) <= demo.DISTRACTOR_SIDE
    crop = load_image(demo_dir / gt.groups["astronaut"][-1]).rgb
    assert max(crop.shape[:2]) >= demo.CROP_MIN_SIDE                  # enlarged, not a tiny cut-out
    ds = load_eval_dataset(demo_dir)
    assert len(ds.queries) == sum(len(p) for p in gt.groups.values())


def test_demo_distractors_come_in_families(demo_dir):
    """Every distractor belongs to a family of variants of one base (its own cluster in the graph),
    photographs and procedural textures both, and a global top 10 is at most ~5 % of the gallery."""
    meta = json.loads((demo_dir / "groups.json").read_text())
    families: dict[str, list[str]] = {}
    for rel in meta["distractors"]:
        families.setdefault(meta["views"][rel]["source"], []).append(rel)
    assert {meta["views"][r]["kind"] for r in meta["distractors"]} == {"photo", "procedural"}
    assert all(len(m) == len(demo.FAMILY_VARIANTS) for m in families.values()), families
    assert {"brick.png", "grass.png", "gravel.png"} <= set(families)
    n = len(meta["distractors"]) + sum(len(p) for p in meta["groups"].values())
    assert 10 / n <= 0.055


def test_demo_uses_other_packages_photos_only_when_installed(monkeypatch):
    real = demo.package_dir
    monkeypatch.setattr(demo, "package_dir", lambda name: None if name != "skimage" else real(name))
    assert set(demo.group_photos()) == set(demo.GROUP_SOURCES)
    assert demo.package_dir("no_such_package_l2g") is None


def test_demo_skips_when_complete_and_force_rebuilds(demo_dir):
    gfile = demo_dir / "groups.json"
    stamp = gfile.stat().st_mtime_ns
    assert demo.build_demo(demo_dir) == demo_dir and gfile.stat().st_mtime_ns == stamp
    assert demo.demo_is_complete(demo_dir)


def test_demo_needs_no_network_and_is_atomic(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("build_demo tried to open a network connection")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    calls = {"n": 0}
    real_save = demo._save_jpeg

    def flaky_save(rgb, path):
        calls["n"] += 1
        if calls["n"] == 20:
            raise OSError("disk full (simulated)")
        real_save(rgb, path)
    monkeypatch.setattr(demo, "_save_jpeg", flaky_save)
    with pytest.raises(OSError, match="simulated"):
        demo.build_demo(tmp_path / "demo")
    assert list(tmp_path.iterdir()) == []                  # no half demo, no temp folder left
    monkeypatch.setattr(demo, "_save_jpeg", real_save)
    out = demo.build_demo(tmp_path / "demo", force=True)
    assert demo.demo_is_complete(out)
