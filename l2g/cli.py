"""Command line: ``python -m l2g {demo,index,check,search,eval,calibrate,download,bench} ...``.

This module is what a user can type (the parser) and the one error rule (``main``); what each
command does is in ``l2g.commands``.
"""
from __future__ import annotations

import argparse
import math
import sys

from . import commands as K
from . import config as C
from . import methods as M
from . import options
from .errors import L2GError


def _at_least_1(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _pixels(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number of pixels, got {text!r}")
    return v


def parser() -> argparse.ArgumentParser:
    DEFAULT_METHODS = M.names(default=True)
    p = argparse.ArgumentParser(prog="python -m l2g", description="l2g: local-to-global image retrieval.")
    sub = p.add_subparsers(dest="cmd", required=True)

    feat_opts = options.add_arguments

    def lock_opts(sp):
        g = sp.add_mutually_exclusive_group()
        g.add_argument("--wait", type=float, metavar="SECONDS",
                       help="wait at most this long for another build of the same index folder "
                            "(default: wait until it is done)")
        g.add_argument("--no-wait", dest="wait", action="store_const", const=0.0,
                       help="fail at once if another build holds the index folder")

    s = sub.add_parser("demo", help="build the demo gallery (data/demo) and its index")
    s.add_argument("--out", help="where to write the demo gallery (default <data dir>/demo)")
    s.add_argument("--force", action="store_true", help="rebuild even if a complete demo is there")
    s.add_argument("--no-index", action="store_true", help="only write the images, do not index them")
    feat_opts(s)
    lock_opts(s)
    s.set_defaults(fn=K.cmd_demo)

    s = sub.add_parser("index", help="index a folder of photos (resumable; re-run to add new photos)")
    s.add_argument("folder", help="folder of images (searched recursively)")
    s.add_argument("--out", help="index folder (default <data dir>/index/<folder tag>/<preset>)")
    s.add_argument("--no-global", action="store_true", help="skip the global (VLAD) descriptors")
    feat_opts(s)
    lock_opts(s)
    s.set_defaults(fn=K.cmd_index)

    s = sub.add_parser("check", help="verify an index folder (every file's checksum); "
                                     "--repair rebuilds what is damaged")
    s.add_argument("dir", help="index folder made by `index`")
    s.add_argument("--repair", action="store_true", help="rebuild damaged or missing files (the rest is kept)")
    s.add_argument("--gallery", help="gallery folder, needed only when the manifest itself is damaged")
    feat_opts(s)
    lock_opts(s)
    s.set_defaults(fn=K.cmd_check)

    s = sub.add_parser("search", help="search an index with a query image")
    s.add_argument("image", help="query image file")
    s.add_argument("--index", required=True, help="index folder made by `index`")
    s.add_argument("--top", type=_at_least_1, default=10, help="results to print (default 10)")
    s.add_argument("--method", choices=list(M.METHODS), default="local",
                   help="ranking to print: local (local-search shortlist, default), l2g (MDS re-ranked), ...")
    s.add_argument("--bbox", type=_pixels, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                   help="query rectangle in pixels of the loaded (max-side capped) image")
    s.add_argument("--json", action="store_true", help="print JSON: {query, results: [{rank, path, score, matches}]}")
    options.add_device(s)
    s.set_defaults(fn=K.cmd_search)

    s = sub.add_parser("eval", help="evaluate methods on a dataset (groups.json folder or Revisited Oxford/Paris)")
    s.add_argument("dataset", help="dataset folder, or demo | realbench-dev | roxford5k | rparis6k")
    s.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(M.METHODS),
                   help=f"methods to run (default {' '.join(DEFAULT_METHODS)})")
    s.add_argument("--out", default="results.json", help="results file (default results.json)")
    s.add_argument("--max-queries", type=_at_least_1, help="evaluate only the first N queries")
    feat_opts(s)
    s.set_defaults(fn=K.cmd_eval)

    s = sub.add_parser("calibrate", help="calibrate the 'no confident match' thresholds of a gallery "
                                         "(saved beside its index); with groups.json, false accept / reject rates")
    s.add_argument("dataset", help="gallery folder, or demo | realbench-dev")
    s.add_argument("--fa-target", type=float,
                   help=f"false-accept rate aimed at (default {C.ConfidenceConfig.fa_target})")
    s.add_argument("--folds", type=int, default=2, help="folds (by group) of the error rates (default 2)")
    s.add_argument("--no-rates", action="store_true", help="only calibrate, skip the error rates")
    feat_opts(s)
    s.set_defaults(fn=K.cmd_calibrate)

    s = sub.add_parser("download", help="download Revisited Oxford / Paris (needs a network)")
    s.add_argument("name", choices=["roxford5k", "rparis6k"])
    s.add_argument("--root", help="parent folder (default the data dir)")
    s.add_argument("--data-dir", help=f"data folder (default data/; ${C.DATA_DIR_ENV})")
    s.set_defaults(fn=K.cmd_download)

    s = sub.add_parser("bench", help="speed and memory benchmark; writes JSON")
    s.add_argument("--out", default="bench.json", help="output JSON (default bench.json)")
    s.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000], help="gallery sizes (images)")
    s.add_argument("--quick", action="store_true", help="small sizes and few queries (smoke run)")
    s.set_defaults(fn=K.cmd_bench)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from .sift import keep_freed_memory

    keep_freed_memory()          # the command line's own process (not the app's: its thread arenas would keep peaks)
    try:
        return args.fn(args) or 0
    except KeyboardInterrupt:
        print("\ninterrupted: finished work is saved; re-run the same command to resume", file=sys.stderr)
        return 130
    except (L2GError, OSError) as e:     # bad input, a missing file: a message; a bug keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
