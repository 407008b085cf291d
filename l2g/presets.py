"""Named settings on top of ``l2g.config``'s dataclasses, and how an index's feature settings are keyed.

- ``PRESETS`` (hloc style): the named feature settings of ``--preset`` / ``L2G_PRESET``; what they
  change is encoded in the index folder name (FeatureConfig.name), so each preset gets its own cache.
- ``EXTRACTOR_P0`` / ``for_extractor``: the search kernel bandwidth of an extractor whose descriptor
  distances are not RootSIFT's.
- ``stored_features`` / ``features_key``: the FeatureConfig a manifest recorded (fields added since
  take the value of the features of before), and the settings an index is keyed on (manifest check,
  faiss.index fingerprint).

The defaults themselves (every dataclass, CLASSIC_PYRAMID, ``effective``, which FeatureConfig.name
needs) stay in ``l2g.config``; this module only imports it.
"""
from __future__ import annotations

from .config import CLASSIC_PYRAMID, FeatureConfig, L2GConfig, SearchConfig, asdict, effective

# Named presets: keys are L2GConfig.replace keys.
PRESETS = {
    "fast": {"features__num_features": 1000, "features__max_side": 640},
    "default": {},
    "accurate": {"features__num_features": 4000, "features__max_side": 1600},
    # README, "Extraction": draft = the default without SIFT's doubled first octave (~1.9x faster, -3.5 mAP)
    "draft": {"features__backend": "pyramid-nd"},
    # the default's features before issue 8's cheaper stages (Kornia's grids, 2N fits, every level blurred):
    # indexes built with them keep their folder (sift-root-n2000-s1024-r2-pyramid)
    "classic": {f"features__{k}": v for k, v in CLASSIC_PYRAMID.items()},
}

# Search kernel bandwidth per extractor where it differs from SearchConfig.p0 (RootSIFT's 0.5). ALIKED's
# descriptor distances are about 3x larger: on realbench-dev at 512 px its local mAP is 44.7 at p0 0.5 and
# 68.4-68.6 at 1.2-1.6 (two-fold by group: tuned on A -> 1.6, tuned on B -> 1.2; 1.4 is between them).
EXTRACTOR_P0 = {"aliked": 1.4}


def for_extractor(cfg: L2GConfig) -> L2GConfig:
    """``cfg`` with its extractor's kernel bandwidth (EXTRACTOR_P0) while p0 is still SearchConfig's default."""
    p0 = EXTRACTOR_P0.get(cfg.features.extractor)
    if p0 is None or cfg.search.p0 != SearchConfig.p0:
        return cfg
    return cfg.replace(search__p0=p0)


# FeatureConfig fields added after indexes existed, with the value that gives the features of before: at that
# value they stay out of features_key, so an older index keeps its key (is reused, not refused or rebuilt)
ADDED_FEATURE_FIELDS = {k: CLASSIC_PYRAMID[k] for k in ("resample", "orient_grid", "min_contrast")}


def stored_features(recorded: dict) -> FeatureConfig:
    """The FeatureConfig a manifest recorded: a field it lacks (added after it was written) takes the value its
    features were made with (ADDED_FEATURE_FIELDS; before they were recorded, Kornia's grid and every fit)."""
    return FeatureConfig(**{"desc_grid": 41, "refine": 0.0, **ADDED_FEATURE_FIELDS, **recorded})


def features_key(f: FeatureConfig) -> dict:
    """The feature settings an index is keyed on (manifest check, faiss.index fingerprint): asdict(effective(f))
    without the ADDED_FEATURE_FIELDS at their old value."""
    return {k: v for k, v in asdict(effective(f)).items()
            if not (k in ADDED_FEATURE_FIELDS and v == ADDED_FEATURE_FIELDS[k])}
