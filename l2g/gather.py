"""Which features a build indexes, image by image (the first stage of ``l2g.index.build_index``).

Every image of the gallery (or of ``paths``) is hashed first. An image already indexed with the same
content keeps its entry; features already on disk (in an intact shard, found by content hash, or in
the extraction scratch of an interrupted build) are taken as they are; the rest are extracted
(``l2g.parallel``) once every image is hashed. Unreadable images, archives and symbolic links leading
outside the gallery are reported in the ``BuildReport``; none stops the build.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import config as C
from . import featstore, parallel
from .errors import ImageError
from .features import Extractor
from .images import file_sha1, load_image
from .manifest import ImageEntry, feature_name
from .scan import LINK_OUTSIDE, escapes, scan_gallery

Progress = Callable[[int, int, str], None] | None


@dataclass
class BuildReport:
    added: list = field(default_factory=list)      # relative paths newly indexed
    reused: list = field(default_factory=list)     # features found on disk (resumed)
    skipped: list = field(default_factory=list)    # already indexed, unchanged
    failed: list = field(default_factory=list)     # (relative path, reason)
    empty: list = field(default_factory=list)      # readable but 0 keypoints
    ignored: list = field(default_factory=list)    # (relative path, reason): archives, other files, folder links
    migrated: str = ""                             # what migrating an older format did ('' when none)
    repaired: list = field(default_factory=list)   # (file in the index folder, what was wrong): rebuilt
    stages: dict = field(default_factory=dict)     # stage -> 'loaded' | 'built' | 'extended' | 'rebuilt'
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


@dataclass
class Gathered:
    paths: list            # the images asked for (relative, sorted)
    chosen: dict           # relative path -> ImageEntry of every image to index
    redone: int = 0        # kept images whose stored features were damaged (from scratch or extracted again)
    extracted_kept: int = 0   # of those, extracted again


def gather(gallery: Path, out: Path, cfg: C.L2GConfig, paths: list[str] | None, extractor: Extractor | None,
           progress: Progress, report: BuildReport, old: dict, old_files: dict, src: dict) -> Gathered:
    """The features of each image to index (see the module doc). ``old``: path -> ImageEntry of the
    index being extended; ``old_files``: its manifest's records; ``src``: sha1 -> loader of the
    features already at hand (``featstore.old_sources``), completed here with scratch and extractions."""
    scan = scan_gallery(gallery) if paths is None else None
    paths = sorted(paths if paths is not None else scan.images)
    report.failed.extend(scan.refused if scan else [])      # file symlinks leading outside the gallery
    report.ignored.extend(scan.ignored if scan else [])
    chosen: dict[str, ImageEntry] = {}
    todo: list[parallel.Job] = []   # images to extract (l2g.parallel), after every image is hashed
    redone = 0   # kept images whose stored features were damaged: taken from scratch or extracted again
    for i, rel in enumerate(paths):
        if progress:
            progress(i - len(todo), len(paths), rel)
        p = gallery / rel
        if escapes(gallery, rel):
            report.failed.append((rel, LINK_OUTSIDE))
            continue
        try:
            sha = file_sha1(p)
        except (OSError, ImageError) as e:
            report.failed.append((rel, f"cannot read: {e}"))
            continue
        name = feature_name(sha)    # the extraction scratch
        kept = rel in old and old[rel].sha1 == sha
        if sha in src:              # in an intact shard (this image's, or a copy's) or in scratch already read
            f = None if kept else src[sha]()
        else:
            redone += kept
            f = featstore.scratch(out, name, old_files.get(name) if kept else None, old[rel].n if kept else None,
                                  cfg.features.name, report.repaired)
            if f is None:
                todo.append(parallel.Job(rel, p, name, sha, kept))
                continue
            src[sha] = featstore.loader(out / name)
        if kept:
            chosen[rel] = old[rel]
            report.skipped.append(rel)
            continue
        try:
            img = load_image(p, max_side=cfg.features.max_side)
        except ImageError as e:
            report.failed.append((rel, str(e)))
            continue
        report.reused.append(rel)
        _choose(report, chosen, old, rel, sha, len(f), f.size, img.scale, kept)
    extracted_kept = 0
    for job, r, first in parallel.extract(todo, out, cfg, extractor, progress, len(paths) - len(todo), len(paths)):
        if isinstance(r, str):
            report.failed.append((job.rel, r))
            continue
        src[job.sha] = featstore.loader(out / job.name)
        extracted_kept += job.kept
        (report.reused if not first and not job.kept else report.added if not job.kept else report.skipped
         ).append(job.rel)
        _choose(report, chosen, old, job.rel, job.sha, r.n, r.size, r.scale, job.kept)
    at = {p: i for i, p in enumerate(paths)}   # reports in path order, as a serial build lists them
    for lst in (report.added, report.reused, report.skipped, report.failed, report.empty):
        lst.sort(key=lambda x: at.get(x if isinstance(x, str) else x[0], -1))
    return Gathered(paths, chosen, redone, extracted_kept)


def _choose(report: BuildReport, chosen: dict, old: dict, rel: str, sha: str, n: int, size, scale, kept: bool):
    if n == 0:
        report.empty.append(rel)
    chosen[rel] = old[rel] if kept else ImageEntry(rel, sha, n, tuple(size), float(scale))
