"""One option -> config mapper for the CLI and the app, with named presets.

    --preset NAME                    L2G_PRESET           fast|default|accurate|draft|classic (config.PRESETS)
    --num-features N (--features N)  L2G_NUM_FEATURES     keypoints per image
    --max-side PX                    L2G_MAX_SIDE         longest image side for features
    --extractor NAME                 L2G_EXTRACTOR        local feature extractor (features.EXTRACTORS)
    --index-kind KIND                L2G_INDEX_KIND       nearest-neighbour index
    --workers N                      L2G_WORKERS          feature-extraction processes of a build (default all cores)
    --device auto|cpu|cuda           L2G_DEVICE           where features are extracted (auto: CUDA if torch sees one)
    --backend NAME                   L2G_BACKEND          SIFT: pyramid (default), patch (fast on a GPU, less accurate),
                                                          pyramid-nd (no doubled first octave: faster, less accurate)
    --upright                        L2G_UPRIGHT=1        SIFT without orientation (its own index folder)
    --data-dir DIR                   L2G_DATA_DIR         demo, uploads and indexes (l2g.paths)

Precedence: an explicit option, then the environment, then the preset, then config's default.
"""
from __future__ import annotations

import argparse
import os

from . import config as C
from .ann import KINDS
from .errors import ConfigError
from .featkey import for_extractor

# option dest -> (L2GConfig.replace key, type, environment variable)
OPTIONS = {
    "num_features": ("features__num_features", int, "L2G_NUM_FEATURES"),
    "max_side": ("features__max_side", int, "L2G_MAX_SIDE"),
    "extractor": ("features__extractor", str, "L2G_EXTRACTOR"),
    "index_kind": ("index__kind", str, "L2G_INDEX_KIND"),
    "workers": ("build__workers", int, "L2G_WORKERS"),
    "device": ("build__device", str, "L2G_DEVICE"),
    "backend": ("features__backend", str, "L2G_BACKEND"),
    "upright": ("features__upright", bool, "L2G_UPRIGHT"),
}
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = C.SIFT_BACKENDS
_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
PRESET_ENV = "L2G_PRESET"
INDEX_KINDS = ("auto", *KINDS)     # l2g.ann.KINDS: each an index_factory string


def add_arguments(p: argparse.ArgumentParser, data_dir: bool = True) -> None:
    """The config options of every command that builds or opens an index (and of the app)."""
    d = C.DEFAULT
    p.add_argument("--preset", choices=list(C.PRESETS),
                   help="named settings (" + "; ".join(f"{k}: {_describe(k)}" for k in C.PRESETS if k != "default")
                        + f"); ${PRESET_ENV}")
    p.add_argument("--num-features", "--features", dest="num_features", type=int,
                   help=f"keypoints per image (default {d.features.num_features})")
    p.add_argument("--max-side", type=int, help=f"longest image side in px (default {d.features.max_side})")
    p.add_argument("--extractor", help="local feature extractor: sift (default), disk or aliked (learned: their "
                                       "weights are read from $L2G_WEIGHTS, data/weights or ../shared/weights)")
    p.add_argument("--index-kind", choices=list(INDEX_KINDS),
                   help=f"nearest-neighbour index (default auto: exact up to {d.index.exact_max:,} descriptors, "
                        f"IVF above, {d.index.compact_kind} (fast-scan PQ re-scored exactly from the feature store) "
                        f"above {d.index.compact_min:,})")
    p.add_argument("--workers", type=int, help="feature-extraction processes of a build, one torch thread each "
                                               "(default all cores; 1 = in the build's own process)")
    add_device(p)
    p.add_argument("--backend", choices=list(BACKENDS),
                   help="Kornia SIFT backend: pyramid (default), patch (~8x faster batched on a GPU, 3.3 points of "
                        "realbench-dev l2g mAP less), pyramid-nd (no doubled first octave: ~1.8x faster on the CPU, "
                        "3.5 points less); part of the index folder's name; $L2G_BACKEND")
    p.add_argument("--upright", action="store_const", const=True,
                   help="SIFT without orientation estimation (its own index folder)")
    if data_dir:
        p.add_argument("--data-dir", help=f"demo, uploads and indexes (default data/; ${C.DATA_DIR_ENV})")


def check_device(value: str) -> str:
    """``value`` when it names a device features can be extracted on: auto, cpu, cuda or cuda:N;
    else ConfigError (said at parse time, not by the extractor after the gallery was scanned)."""
    kind, colon, n = str(value).partition(":")
    if kind not in DEVICES or (colon and not (kind == "cuda" and n.isdigit())):
        raise ConfigError(f"device must be one of {', '.join(DEVICES)} or cuda:N (N a GPU number), got {value!r}")
    return value


def _device_arg(value: str) -> str:
    try:
        return check_device(value)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_device(p: argparse.ArgumentParser) -> None:
    """--device, for the commands that extract features (also `search`, which takes no other option here)."""
    p.add_argument("--device", type=_device_arg,
                   help="where features are extracted: auto (default: CUDA when torch sees a GPU), "
                        "cpu, cuda or cuda:N; $L2G_DEVICE")


def _describe(preset: str) -> str:
    return ", ".join(f"{k.split('__')[1]}={v}" for k, v in C.PRESETS[preset].items()) or "config defaults"


def make_config(preset: str | None = None, env: dict | None = None, **options) -> C.L2GConfig:
    """L2GConfig from a preset name and option values (None = not given); ``env`` fills the
    options not given (pass os.environ, or None to ignore the environment)."""
    env = env or {}
    preset = preset or env.get(PRESET_ENV) or "default"
    if preset not in C.PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(C.PRESETS)}")
    cfg = C.DEFAULT.replace(**C.PRESETS[preset])
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ConfigError(f"unknown options {sorted(unknown)}; known: {sorted(OPTIONS)}")
    for dest, (key, typ, var) in OPTIONS.items():
        value = options.get(dest)
        if value is None and env.get(var) not in (None, ""):
            try:
                value = _BOOL[env[var].strip().lower()] if typ is bool else typ(env[var])
            except (ValueError, KeyError):
                raise ConfigError(f"${var}={env[var]!r} is not a valid {typ.__name__}") from None
        if value is None:
            continue
        if typ is int and value <= 0:
            raise ConfigError(f"{dest.replace('_', '-')} must be positive, got {value}")
        if dest == "index_kind" and value not in INDEX_KINDS:
            raise ConfigError(f"index kind must be one of {INDEX_KINDS}, got {value!r}")
        if dest == "device":
            check_device(value)
        if dest == "backend" and value not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {value!r}")
        cfg = cfg.replace(**{key: value})
    return for_extractor(cfg)


def config_from_args(args: argparse.Namespace, env: dict | None = None) -> C.L2GConfig:
    """The config of parsed options (``add_arguments``), the environment filling the rest."""
    env = os.environ if env is None else env
    return make_config(getattr(args, "preset", None), env,
                       **{k: getattr(args, k, None) for k in OPTIONS})
