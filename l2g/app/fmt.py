"""How the query page writes names, scores, match counts and progress (no Streamlit here)."""
from __future__ import annotations

import math
from pathlib import PurePosixPath


def short_name(path: str) -> str:
    """A gallery path as a ranking table shows it: the file name when it already starts with its group
    (folder) name ('groups/coffee/coffee_crop1.jpg' -> 'coffee_crop1.jpg'), else 'group/file'."""
    parts = PurePosixPath(str(path)).parts
    if len(parts) < 2 or parts[-1].lower().startswith(parts[-2].lower()):
        return parts[-1] if parts else str(path)
    return "/".join(parts[-2:])


def middle_ellipsis(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters: the middle of a long one replaced by '…', its extension
    kept ('chelsea_homography.jpg', 16 -> 'chelse…raphy.jpg'), so a narrow caption never breaks a word."""
    if len(name) <= width:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > 5:
        stem, ext = name, ""
    else:
        ext = "." + ext
    room = width - len(ext) - 1            # characters of the stem around the '…'
    if room < 2:
        return name[:max(0, width - 1)] + "…"
    head = (room + 1) // 2
    return stem[:head] + "…" + stem[len(stem) - (room - head):] + ext


def distinct_names(names, width: int) -> list[str]:
    """Each name through middle_ellipsis(name, width), a shortened one widened (one character at a time, up
    to whole) while it reads the same as another's, so different names never read the same in one list."""
    names = [str(n) for n in names]
    w = {n: width for n in names}
    while True:
        shown = {n: middle_ellipsis(n, w[n]) for n in names}
        seen: dict = {}
        for n, s in shown.items():
            seen.setdefault(s, set()).add(n)
        grow = {n for group in seen.values() if len(group) > 1 for n in group if shown[n] != n}
        if not grow:
            return [shown[n] for n in names]
        for n in grow:
            w[n] += 1


def is_count(method) -> bool:
    """Whether a registered method (l2g.methods.Method) scores by a count (e.g. RANSAC inliers)."""
    return method.fmt == "%d"


def score_cell(method, score) -> str:
    """A ranking table's score cell for a registered method (l2g.methods.Method): '0.412',
    '165 inliers' for a count, or '' when the image has no score."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return ""
    if is_count(method):
        n = int(round(float(score)))
        unit = method.unit.split()[-1]               # 'RANSAC inliers' -> 'inliers'
        return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"
    return method.fmt % float(score)


def matches_text(n: int, cap: int) -> str:
    """'37 matches', or '≥ 500 matches' when the drawing cap (config search.max_matches) was hit."""
    n = int(n)
    if cap and n >= cap:
        return f"≥ {cap} matches"
    return f"{n} match" + ("" if n == 1 else "es")


def eta_text(done: int, total: int, seconds: float, unit: str = "images") -> str:
    """'12/84, 3.1 images/s, about 23 s left' from a phase's progress and its elapsed time."""
    s = f"{done}/{total}"
    if done > 0 and seconds > 0:
        rate = done / seconds
        s += f", {rate:.1f} {unit}/s"
        if total > done:
            left = (total - done) / rate
            s += f", about {left:.0f} s left" if left < 120 else f", about {left / 60:.1f} min left"
    return s


# (message prefixes, short name, label) of the indexing phases; any other message is an extracted image
BUILD_PHASES = ((("similarity graph",), "similarity graph", "step 2/3: similarity graph between gallery images"),
                (("global descriptor", "sampling descriptors", "computing VLAD"), "global descriptors",
                 "step 3/3: global descriptors (VLAD)"),
                (("building the nearest-neighbour index",), "nearest-neighbour index",
                 "step 1/3: nearest-neighbour index"))
FEATURES_PHASE = ("local features", "step 1/3: local features per image")


def _phase(message: str) -> tuple[str, str]:
    for prefixes, name, label in BUILD_PHASES:
        if str(message).startswith(prefixes):
            return name, label
    return FEATURES_PHASE


def build_phase(message: str) -> str:
    """The indexing phase a progress message belongs to (index.py / graph.py / globaldesc.py messages)."""
    return _phase(message)[1]


def phase_name(message: str) -> str:
    """build_phase's short name: 'local features', 'similarity graph', 'global descriptors' or
    'nearest-neighbour index'."""
    return _phase(message)[0]
