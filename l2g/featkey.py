"""How an index's feature settings are keyed, and the kernel bandwidth an extractor brings (``for_extractor``).

- ``for_extractor``: ``cfg`` with the search kernel bandwidth of its extractor (``config.EXTRACTOR_P0``) where
  its descriptor distances are not RootSIFT's.
- ``stored_features`` / ``features_key``: the FeatureConfig a manifest recorded (fields added since take the
  value of the features of before), and the settings an index is keyed on (manifest check, faiss.index
  fingerprint).

The values themselves (every dataclass, the named presets, EXTRACTOR_P0) live in ``l2g.config``; this module
only imports it.
"""
from __future__ import annotations

from .config import CLASSIC_PYRAMID, EXTRACTOR_P0, FeatureConfig, L2GConfig, SearchConfig, asdict, effective


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
