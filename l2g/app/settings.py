"""Where the app keeps its data and which galleries it may open (no Streamlit here).

Options, command line (after ``--``) first, then environment:

    --gallery-root DIR   (repeatable)  L2G_GALLERY_ROOTS=DIR1:DIR2   folders whose subfolders may be opened
    --data-dir DIR                      L2G_DATA_DIR=DIR               demo, uploads and indexes (default data/)
    --preset, --num-features, --max-side, ... : the CLI's options (l2g.options), with their L2G_* variables

The page never takes a server path as text: galleries are picked from a list
built here, and every candidate is resolved and checked to lie inside an
allowed root (a folder symlink leading outside is refused). Inside a gallery,
file symlinks leading outside its folder are not indexed and are reported
(``scan.scan_gallery``, the build report's failed list).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import config as C
from .. import options, paths
from ..errors import ConfigError, GalleryError
from .uploads import upload_name

DEMO = "demo"
REALBENCH = "realbench-dev"
# Every widget of the Query page (the query, the sidebar's settings, the stages' view options) is drawn
# with ``persist_state=KEEP``: its value survives a visit to another page, where it is not drawn (by
# default Streamlit drops the state of a widget not drawn on a run). Uploads: query_page.UPLOAD_KEY.
KEEP = "session"
THUMB_NAME_CHARS = 14      # a Stage 1 thumbnail's file name is shortened to this (one line; 4 in a row at 1280 px)
THUMB_BUTTON = "matches"   # a Stage 1 thumbnail's button (opens it in the match view)
RANK_NAME_CHARS = 16       # a ranking table's image name is shortened in the middle to this (its tail kept)
CHAR_PX = 7                # about the width of one character of a table cell
CELL_PAD_PX = 18           # a table cell's padding, both sides
TABLE_COL_PX = {"rank": 36, "thumb": 46, "move": 42, "✓": 26, "score": 52, "count": 78}   # a ranking table's
#                            columns ("count": a score in inliers); its name column: as wide as its longest name
TOUR_LABEL_CHARS = 32      # a tour button's label at most this: whole in the page's width at 1000 px
# What must read whole at a 1000-px window with the sidebar open is sized from these (Chromium, measured):
MAIN_PX = {1280: 820, 1000: 540, 800: 468}          # the page's main column at these window widths
NARROW_MAIN_PX = MAIN_PX[1000]
GAP_PX = {"small": 16, "medium": 32, "large": 64}    # st.columns gaps
QUERY_SPLIT, QUERY_GAP = (2, 3), "large"             # the query's column beside Stage 1
SELECT_CHROME_PX = 44      # a selectbox's padding and arrow
QPICK_CHARS = 16           # the gallery image picker's name shortened to this, its end kept (whole at 800 px too)


def column_px(total: float, split, i: int, gap: str) -> float:
    """Width of column i of st.columns(split, gap=gap) in a container ``total`` px wide."""
    return (total - GAP_PX[gap] * (len(split) - 1)) * split[i] / sum(split)


def table_min_px() -> int:
    """The least width of a ranking table's cell in Stage 3's grid: its rank, thumbnail and a RANK_NAME_CHARS
    name whole (wider when a list's names are longer: the grid gives a list a row of its own rather than squeeze
    it). Three lists fit side by side at a 1280-px window, local and local-to-global still do at 800 px."""
    return TABLE_COL_PX["rank"] + TABLE_COL_PX["thumb"] + CELL_PAD_PX + CHAR_PX * RANK_NAME_CHARS + 2


TABLE_GAP = "small"        # between two lists of Stage 3
BUTTON_PAD_PX = 26         # a button's padding and border, both sides
THUMB_GAP = "small"        # between two thumbnails of Stage 1
HELP_PX = 20               # a label's help icon (?) and its margin (16 + 4, measured)
TOGGLE_PX = 40             # a toggle's switch and its margin (32 + 8, measured)
METRIC_CHAR_PX = 18        # about the width of one character of a metric's value (2.25rem digits)
MATCH_SPLIT = (2, 1)       # Stage 4: the candidate picker beside the "Inliers only" toggle (whole at 800 px)
EVAL_SPLIT = (2, 1)        # Evaluation: the methods beside the number of queries (its − and + shown at 800 px)
NUMBER_STEPPERS_PX = 120   # a number input narrower than this hides its − and + (Streamlit's 7.5rem breakpoint)


def label_px(text: str, pad: int = 0) -> int:
    """The width that shows a label whole: its characters, and ``pad`` for what sits beside it (a button's
    padding, a help icon)."""
    return CHAR_PX * len(text) + pad + 2


def metric_min_px(metrics) -> int:
    """The least width of a cell of a metrics grid (Stage 4): each (label, value, has help) whole."""
    return max(max(label_px(lab, HELP_PX if hlp else 0), METRIC_CHAR_PX * len(str(v)) + 2) for lab, v, hlp in metrics)


def thumb_min_px() -> int:
    """The least width of a Stage 1 thumbnail's cell: its caption lines (rank and score, '≥ 500 matches', a
    THUMB_NAME_CHARS name) and its button's label whole. Four fit in a row beside the query at a 1280-px
    window, two at 1000 and 800 px (three would cut the names)."""
    return max(label_px("x" * THUMB_NAME_CHARS), label_px(THUMB_BUTTON, BUTTON_PAD_PX))


EMBED_SPLIT, EMBED_GAP = (3, 2), "medium"            # Stage 2: the plot's column beside its options
TITLE_PAD_PX = 16          # the plot's left margin and the title's offset in it
# the embedding's title broken into lines this long: whole in the plot's column at 1000 px (41 characters)
EMBED_TITLE_CHARS = int((column_px(NARROW_MAIN_PX, EMBED_SPLIT, 0, EMBED_GAP) - TITLE_PAD_PX) // CHAR_PX)


@dataclass(frozen=True)
class Gallery:
    label: str        # shown in the selectbox, unique
    path: Path        # resolved folder
    kind: str         # 'demo' | 'realbench' | 'root' | 'upload'


@dataclass
class Settings:
    data_dir: Path = C.DATA_DIR
    gallery_roots: list = field(default_factory=list)   # resolved Paths
    cfg: C.L2GConfig = C.DEFAULT

    @property
    def demo_dir(self) -> Path:
        return self.data_dir / "demo"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    def index_dir(self, g: Gallery) -> Path:
        """<data dir>/index/<gallery tag>/<preset>: the CLI's rule (l2g.paths.index_dir)."""
        return paths.index_dir(g.path, self.cfg, self.data_dir)

    @property
    def realbench_dir(self) -> Path:
        return paths.dataset_dir(REALBENCH, self.data_dir)


def parse_settings(argv: list[str] | None = None, env: dict | None = None) -> Settings:
    """Settings from command-line options (unknown ones ignored) and the environment."""
    env = os.environ if env is None else env
    ap = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    ap.add_argument("--gallery-root", action="append", default=[])
    options.add_arguments(ap)
    try:
        args, _ = ap.parse_known_args(argv or [])
    except SystemExit:      # a bad value (e.g. --preset huge): ignored, like an unknown option
        args, _ = argparse.ArgumentParser(add_help=False).parse_known_args([])
    roots = list(args.gallery_root)
    roots += [r for r in env.get("L2G_GALLERY_ROOTS", "").split(os.pathsep) if r.strip()]
    resolved = []
    for r in roots:
        p = Path(r).expanduser()
        if p.is_dir():
            p = p.resolve()
            if p not in resolved:
                resolved.append(p)
    data_dir = paths.data_dir(getattr(args, "data_dir", None), env)
    try:
        cfg = options.config_from_args(args, env)
    except ConfigError:     # a bad environment value: the defaults, as before
        cfg = C.DEFAULT
    return Settings(data_dir, resolved, cfg)


def inside(path: Path, root: Path) -> bool:
    """True when ``path`` resolved (symlinks followed) lies in ``root`` resolved."""
    try:
        Path(path).resolve(strict=True).relative_to(Path(root).resolve(strict=True))
        return True
    except (OSError, ValueError, RuntimeError):
        return False


def _subfolders(root: Path) -> list[Path]:
    try:
        kids = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [k for k in kids if inside(k, root)]


def list_galleries(s: Settings) -> list[Gallery]:
    """Every gallery the page may offer: the demo, realbench-dev when present, past uploads,
    and each allowed root with its direct subfolders."""
    out = [Gallery(DEMO, s.demo_dir.resolve(), "demo")]
    if s.realbench_dir.is_dir():
        out.append(Gallery(REALBENCH, s.realbench_dir.resolve(), "realbench"))
    if s.uploads_dir.is_dir():
        taken = set()
        for k in _subfolders(s.uploads_dir):
            label = upload_label(k, taken)
            taken.add(label)
            out.append(Gallery(label, k.resolve(), "upload"))
    for root in s.gallery_roots:
        for p in [root] + _subfolders(root):
            label = f"{root.name}/{p.relative_to(root).as_posix()}" if p != root else f"{root.name}/"
            out.append(Gallery(label, p.resolve(), "root"))
    seen, uniq = set(), []
    for g in out:
        if g.label not in seen:
            seen.add(g.label)
            uniq.append(g)
    return uniq


def upload_label(folder: Path, taken=()) -> str:
    """'upload: <name>' (the name typed at upload, else the zip's), made unique with the folder's hash;
    'upload <hash>' for a folder without a name."""
    name = upload_name(folder)
    if not name:
        return f"upload {folder.name[:12]}"
    label = f"upload: {name}"
    return label if label not in taken else f"{label} ({folder.name[:6]})"


def check_gallery(g: Gallery, s: Settings) -> Path:
    """The gallery's folder, after checking it is one the app may open; GalleryError otherwise."""
    allowed = [s.demo_dir, s.uploads_dir] + list(s.gallery_roots)
    if s.realbench_dir.is_dir():
        allowed.append(s.realbench_dir)
    if g.kind == "demo" and not g.path.exists():
        if Path(g.path).resolve() == Path(s.demo_dir).resolve():
            return g.path                  # the configured demo folder: built on first use
        raise GalleryError(f"{g.label}: {g.path} does not exist and is not the demo folder {s.demo_dir}")
    if not any(inside(g.path, r) for r in allowed if Path(r).exists()):
        raise GalleryError(f"{g.label}: not inside an allowed gallery root")
    return g.path
