"""``python -m l2g check DIR [--repair]``: every problem of an index folder, and its repair.

``check_index`` verifies what opening an index verifies, and more: every file the
manifest records is hashed in full (faiss.index and the feature-store shards included),
records are matched to the image list, and leftovers of interrupted builds are listed. ``repair_index``
runs the build (``open_engine(sync=True)``), which rebuilds whatever is damaged or
missing and keeps the rest.
"""
from __future__ import annotations

from pathlib import Path

from . import config as C
from . import store
from .confidence import FILE as CALIBRATION
from .confidence import ensure_calibration
from .errors import IndexFormatError
from .featstore import shard_records
from .index import BuildReport, Progress, load_index
from .lock import lock_problem
from .manifest import entries, read_manifest, stored_config

ORDER_CHECKED = ("graph.npz", "global.npz")   # stage files whose image list must match faiss.index's


def check_index(folder: Path, cfg: C.StoreConfig = C.StoreConfig()) -> list[str]:
    """Every problem found in the index folder (an empty list: the index is intact)."""
    folder = Path(folder)
    try:
        m = read_manifest(folder)
    except IndexFormatError as e:
        return [str(e)]
    files, images = m["files"], entries(m)
    problems = [f"{name}: {why}" for name, rec in sorted(files.items())
                if (why := store.verify(folder / name, rec, True, cfg))]
    covered = sum(b - a for _, r in shard_records(files) for a, b in [(list(r.get("span") or [0, 0]) + [0, 0])[:2]])
    if covered != len(images):
        problems.append(f"manifest.json: its feature-store shards cover {covered} of {len(images)} images")
    order = store.order_hash(images)
    if files["faiss.index"].get("images") != order:
        problems.append("manifest.json: its image list does not match faiss.index (re-ordered or edited)")
    for name in ORDER_CHECKED:
        rec = files.get(name)
        if rec is not None and rec.get("images") != order:
            problems.append(f"{name}: built for another image list")
        elif rec is None and (name == "graph.npz" or (folder / name).is_file()):
            problems.append(f"{name}: not built yet, or not recorded (an interrupted build?)")
    if not problems:
        try:
            load_index(folder, hashed=True)     # every file was just hashed in full, above
        except IndexFormatError as e:
            problems.append(str(e))
    if why := lock_problem(folder):      # every later build would stop on it; --repair cannot fix it
        problems.append(why)
    leftovers = [p for sub in (folder, folder / "features") for p in sub.glob(f".*{store.TMP_SUFFIX}")]
    problems += [f"{p.relative_to(folder)}: temporary file left by an interrupted write" for p in leftovers]
    return problems


def repair_index(folder: Path, gallery: Path | None = None, cfg: C.L2GConfig = C.DEFAULT,
                 progress: Progress = None) -> BuildReport:
    """Rebuild what is damaged or missing in ``folder`` (the rest is kept) and say what.

    The gallery and feature settings come from the manifest; when the manifest itself is
    damaged, ``gallery`` must be given (and ``cfg`` must hold the index's feature settings).
    """
    from .pipeline import open_engine

    folder = Path(folder)
    paths = None
    try:
        m = read_manifest(folder, migrating=True)      # a format-2 folder is migrated by the build
        gallery = Path(gallery or m["root"])
        cfg = stored_config(m, cfg)
        paths = [e["path"] for e in m["images"]] + [f[0] for f in m.get("failed", [])]
        with_global = "global.npz" in m["files"] or (folder / "global.npz").is_file()
        calibrated = CALIBRATION in m["files"] or (folder / CALIBRATION).is_file()
    except IndexFormatError as e:
        if gallery is None:
            raise IndexFormatError(f"{e}\nThe manifest names the gallery folder: pass it with --gallery FOLDER "
                                   "(and the index's feature options) to rebuild the index.") from None
        with_global = (folder / "global.npz").is_file()
        calibrated = (folder / CALIBRATION).is_file()
    eng = open_engine(Path(gallery), folder, cfg, progress, sync=True, with_global=with_global,
                      paths=[p for p in paths if (Path(gallery) / p).exists()] if paths is not None else None)
    if calibrated:      # computed from the index (and groups.json), as `calibrate` does: loaded if intact
        st = ensure_calibration(folder, eng.li, eng.graph, eng.gt, cfg.confidence, cfg.verify, progress)
        if st.action != "loaded":
            eng.report.repaired.append((CALIBRATION, st.reason or "recomputed"))
    return eng.report
