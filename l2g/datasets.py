"""Ground truth: groups.json folders and Revisited Oxford/Paris (the listing of a gallery folder is
:mod:`l2g.scan`, re-exported here).

Two evaluation layouts are understood by :func:`load_eval_dataset`:

* a ``groups.json`` folder (the demo, realbench-dev): every group image queries
  all the others, its positives are the rest of its group;
* the Revisited Oxford/Paris layout: ``jpg/`` plus ``gnd_roxford5k.pkl`` or
  ``gnd_rparis6k.pkl`` (70 cropped queries with easy/hard/junk lists).

The demo generator lives in :mod:`l2g.demo` and the downloader in
:mod:`l2g.download`; both are re-exported here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from l2g import config
from l2g.errors import DatasetError
from l2g.scan import ARCHIVE_EXTENSIONS, LINK_OUTSIDE, GalleryScan, escapes, list_images, scan_gallery  # noqa: F401
from l2g.unpickle import safe_load_pickle

GROUPS_FILE = "groups.json"
REVISITOP_NAMES = ("roxford5k", "rparis6k")


# ----------------------------------------------------------------------------- groups.json


@dataclass
class GroundTruth:
    """Groups of images showing the same scene, plus distractors (paths relative to ``root``)."""

    root: Path
    groups: dict[str, list[str]]
    distractors: list[str] = field(default_factory=list)
    _group_of: dict[str, str] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._group_of = {p: name for name, paths in self.groups.items() for p in paths}

    def group_of(self, relpath: str) -> str | None:
        """Name of the group ``relpath`` belongs to, or None (distractor or unknown)."""
        return self._group_of.get(PurePosixPath(relpath).as_posix())

    @property
    def images(self) -> list[str]:
        """Every listed image (group members and distractors), sorted."""
        return sorted(set(self._group_of) | set(self.distractors))


def _check_relpath(p: object, where: str) -> str:
    if not isinstance(p, str) or not p:
        raise DatasetError(f"{where}: expected a non-empty relative path string, got {p!r}")
    pp = PurePosixPath(p.replace("\\", "/"))
    if pp.is_absolute() or ".." in pp.parts or (len(p) > 1 and p[1] == ":"):
        raise DatasetError(f"{where}: path {p!r} must be relative and stay inside the dataset folder")
    return pp.as_posix()


def load_groups(root: str | os.PathLike, check_files: bool = True) -> GroundTruth:
    """Read ``root/groups.json`` = {"groups": {name: [relpaths]}, "distractors": [relpaths]}.

    ``root`` may also be the groups.json file itself. With ``check_files`` every listed
    image must exist. Raises DatasetError with a plain message on any problem.
    """
    path = Path(root)
    if path.name == GROUPS_FILE and path.is_file():
        path = path.parent
    gfile = path / GROUPS_FILE
    if not gfile.is_file():
        raise DatasetError(f"{gfile}: not found (a gallery with ground truth needs a {GROUPS_FILE})")
    try:
        raw = json.loads(gfile.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{gfile}: cannot be parsed as JSON ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("groups"), dict):
        raise DatasetError(f"{gfile}: expected an object with a 'groups' mapping of name -> [paths]")
    distractors_raw = raw.get("distractors", [])
    if not isinstance(distractors_raw, list):
        raise DatasetError(f"{gfile}: 'distractors' must be a list of paths")

    seen: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for name, paths in raw["groups"].items():
        if not isinstance(paths, list):
            raise DatasetError(f"{gfile}: group {name!r} must be a list of paths")
        groups[str(name)] = []
        for p in paths:
            rel = _check_relpath(p, f"{gfile} group {name!r}")
            if rel in seen:
                raise DatasetError(f"{gfile}: {rel!r} is listed twice ({seen[rel]!r} and {name!r})")
            seen[rel] = str(name)
            groups[str(name)].append(rel)
    distractors = []
    for p in distractors_raw:
        rel = _check_relpath(p, f"{gfile} distractors")
        if rel in seen:
            raise DatasetError(f"{gfile}: {rel!r} is listed twice ({seen[rel]!r} and the distractors)")
        seen[rel] = "<distractor>"
        distractors.append(rel)

    if check_files:
        missing = [p for p in seen if not (path / p).is_file()]
        if missing:
            raise DatasetError(f"{gfile}: {len(missing)} of {len(seen)} listed images are missing, "
                               f"e.g. {', '.join(missing[:3])}")
    return GroundTruth(root=path, groups=groups, distractors=distractors)


# ----------------------------------------------------------------------------- evaluation sets


@dataclass
class EvalQuery:
    """One query. ``path`` is relative to EvalDataset.query_root; bbox (x0, y0, x1, y1) is in
    original pixels (None: the whole image); easy/hard/junk are gallery relative paths."""

    path: str
    bbox: tuple[float, float, float, float] | None
    easy: list[str]
    hard: list[str]
    junk: list[str]
    exclude_self: bool


@dataclass
class EvalDataset:
    """A gallery (``images`` relative to ``root``) and its queries (relative to ``query_root``)."""

    root: Path
    name: str
    images: list[str]
    queries: list[EvalQuery]
    query_root: Path
    kind: str = "groups"            # 'groups' | 'revisitop'


def _resolve_dataset_path(path_or_name: str | os.PathLike) -> Path:
    """An existing folder, else a named dataset (l2g.paths: the one resolver of the CLI and the app)."""
    from l2g.paths import resolve_dataset

    return resolve_dataset(path_or_name)


def load_eval_dataset(path_or_name: str | os.PathLike) -> EvalDataset:
    """Load an evaluation set from a folder, or by name ('demo', 'realbench-dev', 'roxford5k', 'rparis6k')."""
    root = _resolve_dataset_path(path_or_name)
    if not root.is_dir():
        hint = " (run the download first)" if str(path_or_name) in REVISITOP_NAMES else ""
        raise DatasetError(f"{root}: no such dataset folder{hint}")
    if (root / GROUPS_FILE).is_file():
        return _groups_dataset(root)
    for name in REVISITOP_NAMES:
        if (root / f"gnd_{name}.pkl").is_file():
            return _revisitop_dataset(root, name)
    raise DatasetError(f"{root}: not a dataset folder: expected {GROUPS_FILE} or "
                       f"jpg/ with gnd_roxford5k.pkl / gnd_rparis6k.pkl")


def _groups_dataset(root: Path) -> EvalDataset:
    gt = load_groups(root)
    queries = []
    for name in sorted(gt.groups):
        members = gt.groups[name]
        if len(members) < 2:
            continue                    # a lone image has no positive: it cannot be scored
        for q in members:
            queries.append(EvalQuery(path=q, bbox=None, easy=[m for m in members if m != q],
                                     hard=[], junk=[], exclude_self=True))
    return EvalDataset(root=root, name=root.name, images=gt.images, queries=queries,
                       query_root=root, kind="groups")


def _index_list(value, n: int, where: str) -> list[int]:
    try:
        idx = [int(i) for i in list(value)]
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: expected a list of image indices") from exc
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise DatasetError(f"{where}: index {bad[0]} out of range 0..{n - 1}")
    return idx


def _revisitop_dataset(root: Path, name: str) -> EvalDataset:
    gpath = root / f"gnd_{name}.pkl"
    cfg = safe_load_pickle(gpath)
    if not isinstance(cfg, dict) or not all(k in cfg for k in ("imlist", "qimlist", "gnd")):
        raise DatasetError(f"{gpath}: expected a dict with 'imlist', 'qimlist' and 'gnd'")
    imlist = [str(x) for x in cfg["imlist"]]
    qimlist = [str(x) for x in cfg["qimlist"]]
    gnd = list(cfg["gnd"])
    if len(gnd) != len(qimlist):
        raise DatasetError(f"{gpath}: {len(qimlist)} queries but {len(gnd)} ground-truth entries")
    images = [f"jpg/{x}.jpg" for x in imlist]
    missing = [p for p in images + [f"jpg/{q}.jpg" for q in qimlist] if not (root / p).is_file()]
    if missing:
        raise DatasetError(f"{root}: {len(missing)} images listed in {gpath.name} are missing under jpg/, "
                           f"e.g. {', '.join(missing[:3])} (download the image archives first)")
    queries = []
    for i, (q, g) in enumerate(zip(qimlist, gnd)):
        where = f"{gpath.name} query {i} ({q})"
        if not isinstance(g, dict):
            raise DatasetError(f"{where}: expected a dict with bbx/easy/hard/junk")
        bbx = g.get("bbx")
        bbox = None
        if bbx is not None:
            vals = [float(v) for v in list(bbx)]
            if len(vals) != 4:
                raise DatasetError(f"{where}: bbx must have 4 numbers, got {len(vals)}")
            bbox = (vals[0], vals[1], vals[2], vals[3])
        lists = {k: [images[j] for j in _index_list(g.get(k, []), len(images), f"{where} '{k}'")]
                 for k in ("easy", "hard", "junk")}
        queries.append(EvalQuery(path=f"jpg/{q}.jpg", bbox=bbox, exclude_self=False, **lists))
    return EvalDataset(root=root, name=name, images=images, queries=queries, query_root=root,
                       kind="revisitop")


# ----------------------------------------------------------------------------- re-exports


def build_demo(out_dir: str | os.PathLike = config.DEMO_DIR, progress=None, force: bool = False) -> Path:
    """See :func:`l2g.demo.build_demo`."""
    from l2g.demo import build_demo as _build
    return _build(out_dir, progress=progress, force=force)


def download(name: str, root: str | os.PathLike = config.DATA_DIR, progress=None,
             base_url: str | None = None) -> Path:
    """See :func:`l2g.download.download`."""
    from l2g.download import download as _download
    return _download(name, root, progress=progress, base_url=base_url)
