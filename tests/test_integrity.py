"""An index that cannot silently lie: damaged folders, repair, the build lock, kill -9, stale caches.

Every damaged folder is generated here from a clean tiny index (never committed): the
manifest, faiss.index, graph.npz, global.npz and the feature-store shard (l2g.featstore).
For each: opening it as ``search`` does raises an IndexFormatError naming the
file, ``check`` reports it, and a repair (``index`` / ``check --repair``) gives
an index byte-identical to the clean one, with the same answers.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from l2g import store
from l2g.check import check_index, repair_index
from l2g.cli import main
from l2g.errors import IndexFormatError
from l2g.index import read_manifest
from l2g.pipeline import open_engine

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clean(tiny_gallery, tiny_cfg, tiny_extractor, tmp_path_factory, answers):
    """A clean tiny index (graph and global descriptors included), its manifest and its answers."""
    folder = tmp_path_factory.mktemp("clean") / "ix"
    eng = open_engine(tiny_gallery, folder, tiny_cfg, extractor=tiny_extractor)
    return folder, read_manifest(folder), answers(eng)


# --------------------------------------------------------------------------- the damage corpus
def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _bitflip(p: Path):
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x10
    p.write_bytes(bytes(b))


def _zero(p: Path):
    b = bytearray(p.read_bytes())
    at = len(b) // 3
    b[at:at + 64] = bytes(min(64, len(b) - at))
    p.write_bytes(bytes(b))


def _delete(p: Path):
    p.unlink()


def _reorder(p: Path):
    """Swap the first two images in the manifest, leaving everything else as it is."""
    m = json.loads(p.read_text())
    m["images"][0], m["images"][1] = m["images"][1], m["images"][0]
    p.write_text(json.dumps(m, indent=1))


def _reorder_resigned(p: Path):
    """The same swap with the manifest's own checksum recomputed (a deliberate edit)."""
    m = json.loads(p.read_text())
    m["images"][0], m["images"][1] = m["images"][1], m["images"][0]
    store.write_json(p, m)


DAMAGE = {"truncated": _truncate, "bitflip": _bitflip, "zeroed": _zero, "deleted": _delete}
FILES = ("manifest.json", "faiss.index", "graph.npz", "global.npz", "features")
CASES = [(f, d) for f in FILES for d in DAMAGE] + [("manifest.json", "reordered"),
                                                    ("manifest.json", "reordered+resigned")]


def _damage(folder: Path, target: str, how: str) -> str:
    """Damage ``target`` in ``folder``; returns the name an error message must carry."""
    if target == "features":     # the feature-store shard holding the first image
        target = next(k for k, v in read_manifest(folder)["files"].items() if k.startswith("features/shard-")
                      and v["span"][0] == 0)
    fn = {"reordered": _reorder, "reordered+resigned": _reorder_resigned}.get(how) or DAMAGE[how]
    fn(folder / target)
    return "manifest.json" if how == "deleted" and target == "manifest.json" else target


@pytest.mark.parametrize("target,how", CASES, ids=[f"{t}-{h}" for t, h in CASES])
def test_damaged_index_is_an_error_then_repaired(target, how, clean, tiny_gallery, tiny_cfg, tiny_extractor,
                                                 tmp_path, answers):
    src, manifest, want = clean
    folder = tmp_path / "ix"
    shutil.copytree(src, folder)
    name = _damage(folder, target, how)
    # 1. opening it as `search` does: a clear error naming the file, never an answer
    with pytest.raises(IndexFormatError) as err:
        if target == "manifest.json" and how == "deleted":
            read_manifest(folder)          # what `search` reads first (open_engine would build anew)
        open_engine(tiny_gallery, folder, tiny_cfg, extractor=tiny_extractor, sync=False)
    msg = str(err.value)
    assert name in msg and ("python -m l2g index" in msg or "python -m l2g check" in msg), msg
    # 2. `check` reports it
    problems = check_index(folder)
    assert problems and any(name in p or "manifest" in p for p in problems), problems
    # 3. repair: by `index` (open_engine sync=True) or by `check --repair`, alternately
    if CASES.index((target, how)) % 2:
        report = repair_index(folder, cfg=tiny_cfg, gallery=tiny_gallery if target == "manifest.json" else None)
        eng = open_engine(tiny_gallery, folder, tiny_cfg, extractor=tiny_extractor, sync=False)
    else:
        eng = open_engine(tiny_gallery, folder, tiny_cfg, extractor=tiny_extractor)
        report = eng.report
    if not (target == "manifest.json" and how == "deleted"):   # a missing manifest is a fresh build
        assert any(name in f or name in why for f, why in report.repaired), report.repaired
    assert check_index(folder) == []
    assert read_manifest(folder)["files"] == manifest["files"]    # byte-identical files
    assert answers(eng) == want


def test_check_command(clean, tmp_path, capsys):
    src, manifest, _ = clean
    folder = tmp_path / "ix"
    shutil.copytree(src, folder)
    assert main(["check", str(folder)]) == 0
    assert "intact" in capsys.readouterr().out
    _zero(folder / "faiss.index")
    assert main(["check", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "problem: faiss.index" in out and "--repair" in out
    assert main(["check", str(folder), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "repaired faiss.index" in out and "intact" in out
    assert read_manifest(folder)["files"] == manifest["files"]
    assert (folder / "manifest.json").read_bytes() == (src / "manifest.json").read_bytes()   # byte for byte


def test_a_damaged_manifest_is_not_rebuilt_with_other_features_than_its_folder_name_says(
        clean, tiny_gallery, tiny_cfg, tmp_path, capsys):
    """The default index folder is named after its features. With the manifest damaged, a repair with the
    default options rebuilt it at other settings, and the folder then refused its own name's options."""
    from l2g import config as C

    src, manifest, _ = clean
    folder = tmp_path / tiny_cfg.features.name                     # as data/index/<gallery>/<preset> is named
    shutil.copytree(src, folder)
    _truncate(folder / "manifest.json")
    for repair in (lambda: repair_index(folder, tiny_gallery, C.DEFAULT),
                   lambda: open_engine(tiny_gallery, folder, C.DEFAULT)):
        with pytest.raises(IndexFormatError, match=f"folder's name says its features are {tiny_cfg.features.name}"):
            repair()
    assert main(["check", str(folder), "--repair", "--gallery", str(tiny_gallery)]) == 2
    assert "folder's name says" in capsys.readouterr().err
    assert not (folder / "manifest.json").read_bytes().endswith(b"}")      # nothing was rebuilt
    rep = repair_index(folder, tiny_gallery, tiny_cfg)                      # its own settings repair it
    assert "manifest.json" in dict(rep.repaired) and read_manifest(folder)["preset"] == tiny_cfg.features.name


def test_large_faiss_index_is_sampled_on_open_and_hashed_by_check(clean, tiny_gallery, tiny_cfg, tmp_path):
    """Above full_hash_max, opening checks size + sampled blocks; `check` hashes the whole file."""
    src, _, _ = clean
    folder = tmp_path / "ix"
    shutil.copytree(src, folder)
    cfg = tiny_cfg.replace(store__full_hash_max=0)
    rec = read_manifest(folder)["files"]["faiss.index"]
    store.record_file(folder, "faiss.index", {**rec, "sample": store.record(
        folder / "faiss.index", cfg.store.__class__(hash_samples=2, hash_block=16))["sample"]})
    size = (folder / "faiss.index").stat().st_size
    b = bytearray((folder / "faiss.index").read_bytes())
    b[size // 2] ^= 1                        # between the two sampled blocks (first and last)
    (folder / "faiss.index").write_bytes(bytes(b))
    from l2g.index import load_index

    load_index(folder, cfg=cfg)              # the sample cannot see it ...
    assert any("faiss.index" in p for p in check_index(folder))   # ... the full hash does
    b[5] ^= 1                                # inside the first sampled block
    (folder / "faiss.index").write_bytes(bytes(b))
    with pytest.raises(IndexFormatError, match="faiss.index.*sampled checksum"):
        load_index(folder, cfg=cfg)


# --------------------------------------------------------------------------- stale caches
def test_changed_global_config_rebuilds_global_descriptors(clean, tiny_gallery, tiny_cfg, tiny_extractor, tmp_path):
    """open_engine used to reuse a global.npz built with another GlobalConfig (issue 7)."""
    src, _, _ = clean
    folder = tmp_path / "ix"
    shutil.copytree(src, folder)
    other = tiny_cfg.replace(globaldesc__words=16)
    eng = open_engine(tiny_gallery, folder, other, extractor=tiny_extractor)
    assert eng.gi.params["config"]["words"] == 16 and eng.gi.model.words == 16
    assert eng.report.stages["global.npz"] == "built"
    assert open_engine(tiny_gallery, folder, other, extractor=tiny_extractor, sync=False).gi.model.words == 16
    eng = open_engine(tiny_gallery, folder, tiny_cfg, extractor=tiny_extractor, sync=False)
    assert eng.gi.model.words == tiny_cfg.globaldesc.words


def test_unchanged_index_loads_every_stage(clean, tiny_gallery, tiny_cfg, tiny_extractor, tmp_path):
    src, manifest, _ = clean
    folder = tmp_path / "ix"
    shutil.copytree(src, folder)
    before = (folder / "faiss.index").stat().st_mtime_ns
    eng = open_engine(tiny_gallery, folder, tiny_cfg, extractor=tiny_extractor)
    assert eng.report.stages == {"graph.npz": "loaded", "global.npz": "loaded"}
    assert eng.report.repaired == [] and len(eng.report.skipped) == len(manifest["images"])
    assert (folder / "faiss.index").stat().st_mtime_ns == before     # not rewritten
    assert read_manifest(folder)["files"] == manifest["files"]


# --------------------------------------------------------------------------- the lock
def _cli(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "l2g", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


TINY_OPTS = ("--features", "150", "--max-side", "256")


def test_a_held_lock_refuses_or_delays_a_second_build(tiny_gallery, tmp_path):
    folder = tmp_path / "ix"
    with store.folder_lock(folder):
        p = _cli("index", tiny_gallery, "--out", folder, *TINY_OPTS, "--no-wait")
        out, err = p.communicate(timeout=300)
        assert p.returncode == 2 and "another build holds the lock" in err, (out, err)
        t = time.perf_counter()
        p = _cli("index", tiny_gallery, "--out", folder, *TINY_OPTS, "--wait", "1")
        out, err = p.communicate(timeout=300)
        assert p.returncode == 2 and "another build holds the lock" in err, (out, err)
        assert time.perf_counter() - t >= 1.0
        assert not (folder / "manifest.json").exists()
    p = _cli("index", tiny_gallery, "--out", folder, *TINY_OPTS, "--no-wait")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert check_index(folder) == []


def test_two_concurrent_builds_into_one_folder(tiny_gallery, tmp_path):
    """Two galleries built into one folder at once: one completes, the other is refused."""
    other = tmp_path / "other"
    shutil.copytree(tiny_gallery / "groups" / "coffee", other / "coffee")
    folder = tmp_path / "ix"
    a = _cli("index", tiny_gallery, "--out", folder, *TINY_OPTS)
    b = _cli("index", other, "--out", folder, *TINY_OPTS)
    (oa, ea), (ob, eb) = a.communicate(timeout=600), b.communicate(timeout=600)
    codes = sorted([a.returncode, b.returncode])
    assert codes == [0, 2], (oa, ea, ob, eb)
    assert "holds the gallery" in (ea + eb)
    m = read_manifest(folder)
    winner = tiny_gallery if a.returncode == 0 else other
    assert Path(m["root"]) == winner
    assert len(m["images"]) == (6 if winner == tiny_gallery else 2)
    assert check_index(folder) == []


_STRESS = r"""
import sys, time, numpy as np
from pathlib import Path
from l2g import store
from l2g.features import Features, save_features
folder, tag = Path(sys.argv[1]), int(sys.argv[2])
until = time.time() + float(sys.argv[3])
n = 300 + 50 * tag
f = Features(np.full((n, 5), tag, np.float32), np.full((n, 128), tag, np.float32), (tag, tag))
while time.time() < until:
    for i in range(4):
        save_features(folder / "features" / f"{i}.npz", f)
    store.write_json(folder / "manifest.json", {"writer": tag, "images": [tag] * n})
"""


def test_writers_and_a_reader_never_see_a_half_written_file(tmp_path):
    """2 writer processes replace the same feature files and manifest; a reader checks every read."""
    from l2g.features import load_features

    (tmp_path / "features").mkdir()
    script = tmp_path / "writer.py"
    script.write_text(_STRESS)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    writers = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(t), "4"], env=env)
               for t in (1, 2)]
    reads, bad = 0, []
    while any(w.poll() is None for w in writers):
        for i in range(4):
            p = tmp_path / "features" / f"{i}.npz"
            if not p.exists():
                continue
            try:
                f = load_features(p)
                tag = int(f.desc[0, 0])
                if not (len(f) == 300 + 50 * tag and (f.desc == tag).all() and f.size == (tag, tag)):
                    bad.append(f"mixed content in {p.name}")
            except Exception as e:  # noqa: BLE001 -- any failure to read is what this test looks for
                bad.append(f"{p.name}: {type(e).__name__}: {e}")
            reads += 1
        if (tmp_path / "manifest.json").exists():
            try:
                m = store.read_json(tmp_path / "manifest.json")
                assert m["images"] == [m["writer"]] * len(m["images"])
            except Exception as e:  # noqa: BLE001
                bad.append(f"manifest.json: {type(e).__name__}: {e}")
            reads += 1
    assert all(w.wait() == 0 for w in writers)
    assert reads > 100 and not bad, (reads, bad[:5])
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "features").glob(".*.tmp"))


# --------------------------------------------------------------------------- kill -9
def _reached(folder: Path, stage: str) -> bool:
    """Has a build of ``folder`` got this far? 'features:K' (K files written), 'manifest' (the
    index is saved; graph and global descriptors not yet), 'graph' (graph recorded)."""
    if stage.startswith("features:"):
        d = folder / "features"
        return d.is_dir() and len(list(d.glob("*.npz"))) >= int(stage.split(":")[1])
    try:
        files = store.read_json(folder / "manifest.json").get("files", {})
    except (IndexFormatError, FileNotFoundError):
        return False
    return stage == "manifest" or "graph.npz" in files


def _kill_and_resume(tiny_gallery, folder: Path, kills, want_files, answers, tiny_cfg) -> list[str]:
    """For each (stage, delay): start a CLI build, kill -9 it ``delay`` s after it reached
    ``stage``; then let one build run to the end and compare it with a clean one."""
    seen = []
    for stage, delay in kills:
        p = _cli("index", tiny_gallery, "--out", folder, *TINY_OPTS)
        while p.poll() is None and not _reached(folder, stage):
            time.sleep(0.005)
        time.sleep(delay)
        p.kill()                      # SIGKILL: no cleanup runs
        p.communicate()
        n = len(list((folder / "features").glob("*.npz"))) if (folder / "features").is_dir() else 0
        rec = sorted(store.read_json(folder / "manifest.json").get("files", {})) if (
            folder / "manifest.json").is_file() else []
        seen.append(f"{stage}+{delay:.2f}s: {n} features, manifest records "
                    f"{[r for r in rec if not r.startswith('features/')]}, exit {p.returncode}")
    p = _cli("index", tiny_gallery, "--out", folder, *TINY_OPTS)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert read_manifest(folder)["files"] == want_files, (seen, out)
    assert check_index(folder) == []
    assert answers(open_engine(tiny_gallery, folder, tiny_cfg, sync=False)) == answers.want, seen
    return seen


@pytest.fixture(scope="module")
def cli_clean(tiny_gallery, tiny_cfg, tmp_path_factory, answers):
    """A clean CLI build of the tiny gallery: its manifest's file records and its answers."""
    folder = tmp_path_factory.mktemp("cli") / "ix"
    p = _cli("index", tiny_gallery, "--out", folder, *TINY_OPTS)
    assert p.wait(timeout=600) == 0
    return read_manifest(folder)["files"], answers(open_engine(tiny_gallery, folder, tiny_cfg, sync=False))


def _answers_with(answers, want):
    fn = lambda eng: answers(eng)  # noqa: E731
    fn.want = want
    return fn


def test_kill_during_build_then_resume_fast(cli_clean, tiny_gallery, tiny_cfg, tmp_path, answers):
    """Killed while extracting, then again just after the index was saved: the resume is exact."""
    files, want = cli_clean
    seen = _kill_and_resume(tiny_gallery, tmp_path / "ix", [("features:2", 0.0), ("manifest", 0.0)], files,
                            _answers_with(answers, want), tiny_cfg)
    assert "2 features" in seen[0] or "3 features" in seen[0], seen


@pytest.mark.slow
def test_kill_at_random_points_ten_runs(cli_clean, tiny_gallery, tiny_cfg, tmp_path, answers):
    files, want = cli_clean
    rng = random.Random(0)
    stages = ["features:0", "features:1", "features:3", "features:5", "manifest", "graph"]
    for run in range(10):
        kills = [(rng.choice(stages), rng.uniform(0.0, 0.3)) for _ in range(rng.randint(1, 3))]
        print(_kill_and_resume(tiny_gallery, tmp_path / f"ix{run}", kills, files, _answers_with(answers, want),
                               tiny_cfg))


def test_leftover_features_of_other_settings_are_not_reused(clean, tiny_gallery, tiny_cfg, tiny_extractor, tmp_path):
    """Feature files carry their preset: a build with other settings extracts again instead of resuming."""
    src, _, _ = clean
    folder = tmp_path / "ix"
    shutil.copytree(src, folder)
    (folder / "manifest.json").unlink()          # as if a first build with other settings was killed
    cfg = tiny_cfg.replace(features__num_features=60)
    eng = open_engine(tiny_gallery, folder, cfg)
    assert eng.report.reused == [] and len(eng.report.added) == 6
    assert all("not sift-root-n60" in why for _, why in eng.report.repaired), eng.report.repaired
    assert max(e.n for e in eng.li.images) <= 60


def test_folder_lock_is_reentrant_and_excludes_other_threads(tmp_path):
    import threading

    got = []

    def other():
        try:
            with store.folder_lock(tmp_path, timeout=0.2):
                got.append("acquired")
        except store.IndexBusyError as e:
            got.append(str(e))

    with store.folder_lock(tmp_path), store.folder_lock(tmp_path):   # re-entrant in one thread
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert len(got) == 1 and "another build holds the lock" in got[0]
    other()                                                          # free again
    assert got[1] == "acquired"


# --------------------------------------------------------------------------- the sharded feature store
class _Counting:
    """An extractor that counts the images it extracts (a non-Extractor type: l2g.parallel runs it in-process)."""

    def __init__(self, inner, fail: bool = False):
        self.inner, self.cfg, self.calls, self.fail = inner, inner.cfg, 0, fail

    def __call__(self, rgb):
        self.calls += 1
        if self.fail:
            raise AssertionError("nothing should be extracted")
        return self.inner(rgb)


def _shards(folder: Path) -> dict:
    return {k: v for k, v in read_manifest(folder)["files"].items() if k.startswith("features/shard-")}


@pytest.fixture(scope="module")
def sharded(tiny_gallery, tiny_cfg, tiny_extractor, tmp_path_factory, answers):
    """The tiny index with 2 images per shard (3 shards): folder, config, manifest files, answers."""
    cfg = tiny_cfg.replace(store__shard_images=2)
    folder = tmp_path_factory.mktemp("sharded") / "ix"
    eng = open_engine(tiny_gallery, folder, cfg, extractor=tiny_extractor)
    return folder, cfg, read_manifest(folder)["files"], answers(eng)


def test_a_damaged_shard_is_rebuilt_from_scratch_or_by_extracting_only_its_images(sharded, tiny_gallery,
                                                                                   tiny_extractor, tmp_path, answers):
    src, cfg, files, want = sharded
    assert [v["span"] for v in _shards(src).values()] == [[0, 2], [2, 4], [4, 6]]
    assert not list((src / "features").glob("*.npz"))          # the scratch went once the shards were durable
    folder = tmp_path / "ix"
    shutil.copytree(src, folder)
    name = next(k for k, v in _shards(folder).items() if v["span"] == [2, 4])
    # no scratch left: the two images of the damaged shard (and only they) are extracted again
    _bitflip(folder / name)
    ext = _Counting(tiny_extractor)
    eng = open_engine(tiny_gallery, folder, cfg, extractor=ext)
    assert ext.calls == 2 and any(f == name for f, _ in eng.report.repaired), eng.report.repaired
    assert read_manifest(folder)["files"] == files and answers(eng) == want
    # scratch present (a build killed after extracting): the shard is rebuilt from it, nothing extracted
    li = eng.li
    from l2g.features import save_features
    for i in (2, 3):
        save_features(folder / "features" / f"{li.images[i].sha1}.npz", li.features(i))
    _truncate(folder / name)
    ext = _Counting(tiny_extractor, fail=True)
    eng = open_engine(tiny_gallery, folder, cfg, extractor=ext)
    assert ext.calls == 0 and any(f == name for f, _ in eng.report.repaired)
    assert read_manifest(folder)["files"] == files and answers(eng) == want
    assert not list((folder / "features").glob("*.npz"))


def _as_format_2(folder: Path) -> None:
    """Rewrite a format-3 index folder as format 2 left it: one recorded features/<sha1>.npz per image."""
    from l2g.features import save_features
    from l2g.index import load_index

    li = load_index(folder)
    m = store.read_json(folder / "manifest.json")
    files = {k: v for k, v in m["files"].items() if not k.startswith("features/")}
    for i, e in enumerate(li.images):
        files[f"features/{e.sha1}.npz"] = save_features(folder / "features" / f"{e.sha1}.npz", li.features(i))
    for k in _shards(folder):
        (folder / k).unlink()
    store.write_json(folder / "manifest.json", {**m, "format_version": 2, "files": files})


@pytest.mark.parametrize("how", ["index", "check --repair"])
def test_a_format_2_folder_is_refused_on_open_and_migrated_by_a_build(how, clean, tiny_gallery, tiny_cfg,
                                                                      tiny_extractor, tmp_path, answers, capsys):
    src, manifest, want = clean
    folder = tmp_path / "ix"
    shutil.copytree(src, folder)
    _as_format_2(folder)
    from l2g.index import load_index

    with pytest.raises(IndexFormatError, match=r"format 2 .*python -m l2g index .*nothing is extracted again"):
        load_index(folder)
    assert any("format 2" in p for p in check_index(folder))
    if how == "index":
        eng = open_engine(tiny_gallery, folder, tiny_cfg, extractor=_Counting(tiny_extractor, fail=True))
        report = eng.report
    else:
        assert main(["check", str(folder), "--repair"]) == 0
        assert "format 2 -> 3" in capsys.readouterr().out
        eng = open_engine(tiny_gallery, folder, tiny_cfg, extractor=tiny_extractor, sync=False)
        report = None
    if report is not None:
        assert report.added == [] and report.reused == [] and len(report.skipped) == 6
        assert "6 features files packed into 1 shard(s), 0 re-extracted" in report.migrated
        assert report.stages == {"graph.npz": "loaded", "global.npz": "loaded"}   # kept, not rebuilt
    assert read_manifest(folder)["files"] == manifest["files"]        # the files of a clean format-3 build
    assert not list((folder / "features").glob("*.npz")) and check_index(folder) == []
    assert answers(eng) == want


# --------------------------------------------------------------------------- each file hashed once
def _hashes(folder: Path):
    """A recorder of every full hash (checksum.sha256_bytes / sha256_file) and every whole-file read, by name."""
    from unittest import mock

    seen: list = []
    sizes = {p.stat().st_size: p.name for p in folder.iterdir() if p.suffix == ".npz"}
    from l2g import checksum

    real_bytes, real_file, real_read = checksum.sha256_bytes, checksum.sha256_file, Path.read_bytes

    def by_bytes(data):
        seen.append(("hash", sizes.get(len(data), "?")))
        return real_bytes(data)

    def by_file(path, *a, **kw):
        seen.append(("hash file", Path(path).name))
        return real_file(path, *a, **kw)

    def read(self):
        seen.append(("read", self.name))
        return real_read(self)

    patches = (mock.patch.object(checksum, "sha256_bytes", by_bytes),
               mock.patch.object(checksum, "sha256_file", by_file), mock.patch.object(Path, "read_bytes", read))
    return seen, patches


def test_each_stage_file_is_read_and_hashed_once_per_open(clean, tiny_gallery, tiny_cfg, tiny_extractor, tmp_path):
    """Opening verified graph.npz / global.npz in full and then load_npz hashed (and read) them again."""
    import contextlib

    src, _, want = clean
    folder = tmp_path / "ix"
    shutil.copytree(src, folder)
    seen, patches = _hashes(folder)
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        open_engine(tiny_gallery, folder, tiny_cfg, extractor=tiny_extractor, sync=False)
    for name in ("graph.npz", "global.npz"):
        assert sum(k[0].startswith("hash") and k[1] == name for k in seen) == 1, (name, seen)
        assert seen.count(("read", name)) == 1, (name, seen)


def test_a_stage_just_written_is_recorded_without_hashing_the_file_again(clean, tiny_gallery, tiny_cfg,
                                                                        tiny_extractor, tmp_path):
    import contextlib

    src, manifest, _ = clean
    folder = tmp_path / "ix"
    shutil.copytree(src, folder)
    _bitflip(folder / "graph.npz")
    seen, patches = _hashes(folder)
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        eng = open_engine(tiny_gallery, folder, tiny_cfg, extractor=tiny_extractor)
    assert eng.report.stages["graph.npz"] == "rebuilt"
    # the damaged file is read and hashed once (found damaged), the rebuilt one hashed once, from the
    # bytes written: never read back
    assert ("hash file", "graph.npz") not in seen and seen.count(("read", "graph.npz")) == 1, seen
    assert seen.count(("hash", "graph.npz")) == 2, seen
    assert read_manifest(folder)["files"] == manifest["files"]      # the same record as hashing the file


def test_check_hashes_every_file_once(clean, tmp_path):
    """`check` hashed every file in full, then opened the index, which hashed them again."""
    from collections import Counter
    from unittest import mock

    src, manifest, _ = clean
    folder = tmp_path / "ix"
    shutil.copytree(src, folder)
    from l2g import checksum

    names: Counter = Counter()
    real = checksum.sha256_file

    def count(path, *a, **kw):
        names[Path(path).relative_to(folder).as_posix()] += 1
        return real(path, *a, **kw)

    with mock.patch.object(checksum, "sha256_file", count):
        assert check_index(folder) == []
    assert names == Counter(dict.fromkeys(manifest["files"], 1))


@pytest.fixture
def before_and_after(tiny_gallery, tiny_cfg, tiny_extractor, tmp_path):
    """An index folder of five images, and the faiss.index + manifest.json a build adding a sixth wrote."""
    g = tmp_path / "g"
    shutil.copytree(tiny_gallery, g)
    last = sorted(p for p in g.rglob("*.jpg"))[-1]
    kept = last.read_bytes()
    last.unlink()
    folder = tmp_path / "ix"
    open_engine(g, folder, tiny_cfg, extractor=tiny_extractor, with_global=False)
    old = {n: (folder / n).read_bytes() for n in ("faiss.index", "manifest.json", "graph.npz")}
    shards = {p.name: p.read_bytes() for p in (folder / "features").iterdir()}
    last.write_bytes(kept)
    open_engine(g, folder, tiny_cfg, extractor=tiny_extractor, with_global=False)
    new = {n: (folder / n).read_bytes() for n in old}
    for n, b in old.items():
        store.write_bytes(folder / n, b)
    for n, b in shards.items():          # the build removes the shards it re-packed once it has finished
        store.write_bytes(folder / "features" / n, b)
    return folder, new


def test_a_search_while_a_build_renames_in_its_files_reads_one_build(before_and_after, monkeypatch):
    """The build renamed its new faiss.index between the reader's check and its read (its manifest came
    later): the reader said 'inconsistent ... Repair it' of a healthy index. Now it reads again."""
    from l2g import index as I
    from l2g import lock

    folder, new = before_and_after
    assert I.load_index(folder).n_images == 5
    real, events = I.read_faiss, []

    def racing(path, **kw):
        if not events:
            events.append("faiss")
            store.write_bytes(folder / "faiss.index", new["faiss.index"])   # the writer's rename
        return real(path, **kw)

    def pause(seconds):
        events.append("pause")
        if events.count("pause") == 1:
            store.write_bytes(folder / "manifest.json", new["manifest.json"])   # the writer finishes

    monkeypatch.setattr(I, "read_faiss", racing)
    monkeypatch.setattr(lock, "_pause", pause, raising=False)
    li = I.load_index(folder)
    assert events[:2] == ["faiss", "pause"]
    assert li.n_images == 6 and li.ix.ntotal == li.ntotal == read_manifest(folder)["ntotal"]


@pytest.mark.parametrize("builder", ["thread", "process"])
def test_a_mismatch_while_another_build_holds_the_lock_says_so(builder, before_and_after, monkeypatch):
    """Half-written (faiss.index new, manifest.json old) while a build holds the folder (another thread or
    another process): 'a build is updating', never 'repair'; with no build at work: a damage, with its fix."""
    import threading

    from l2g import lock
    from l2g.index import load_index

    folder, new = before_and_after
    store.write_bytes(folder / "faiss.index", new["faiss.index"])
    monkeypatch.setattr(lock, "_pause", lambda s: None, raising=False)
    held, done = threading.Event(), threading.Event()

    def build():
        with store.folder_lock(folder, 5):
            held.set()
            done.wait(10)

    if builder == "thread":
        t = threading.Thread(target=build)
        t.start()
        assert held.wait(10)
    else:
        code = ("import sys, time; from l2g.lock import folder_lock\n"
                "with folder_lock(sys.argv[1], 5):\n    print('held', flush=True); time.sleep(30)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
    try:
        with pytest.raises(store.IndexBusyError, match="a build is updating") as e:
            load_index(folder)
        assert "epair" not in str(e.value)
    finally:
        if builder == "thread":
            done.set()
            t.join()
        else:
            proc.kill()
            proc.wait()
    with pytest.raises(IndexFormatError, match="faiss.index") as e:
        load_index(folder)
    assert not isinstance(e.value, store.IndexBusyError)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_are_written_with_the_mode_the_umask_gives(mask, mode, tmp_path):
    """Every file was 0600 (tempfile.mkstemp) whatever the umask: another user sharing the data folder
    could not read the index."""
    old = os.umask(mask)
    try:
        store.write_text(tmp_path / "results.json", "{}")
        with store.atomic_path(tmp_path / "faiss.index") as tmp:
            Path(tmp).write_bytes(b"x")
    finally:
        os.umask(old)
    for name in ("results.json", "faiss.index"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("how", [_delete, _truncate])
def test_check_repair_recomputes_a_damaged_calibration(how, clean, tiny_gallery, tiny_cfg, tiny_extractor,
                                                       tmp_path, capsys):
    """check --repair left confidence.json 'still a problem' (exit 1, no fix named)."""
    from l2g import confidence as CF

    folder = tmp_path / "ix"
    shutil.copytree(clean[0], folder)
    eng = open_engine(tiny_gallery, folder, tiny_cfg, extractor=tiny_extractor)
    CF.ensure_calibration(folder, eng.li, eng.graph, eng.gt, eng.cfg.confidence, eng.cfg.verify)
    def calibration():      # what it says (not how long it took)
        d = json.loads((folder / CF.FILE).read_text())
        return {k: v for k, v in d.items() if k not in ("timings", "checksum")}

    before = calibration()
    how(folder / CF.FILE)
    assert any(p.startswith(CF.FILE) for p in check_index(folder))
    assert main(["check", str(folder), "--repair"]) == 0
    out = capsys.readouterr().out
    assert f"repaired {CF.FILE}" in out and "still a problem" not in out and "intact" in out
    assert check_index(folder) == [] and calibration() == before
