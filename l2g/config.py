"""Every default of l2g lives here, the named presets (``PRESETS``) included, nowhere else.

Each stage has a small frozen dataclass of parameters. A preset's ``name``
encodes the parameters that change what is stored on disk (hloc style), so it
doubles as the cache / index folder name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

FORMAT_VERSION = 3  # bump when the on-disk index layout changes; 2: manifest records checksums of its files;
#                     3: features in memory-mapped shards (l2g.featstore), a build migrates a format-2 folder

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"              # default data folder; L2G_DATA_DIR / --data-dir override it (l2g.paths)
DATA_DIR_ENV = "L2G_DATA_DIR"
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"   # read-only datasets shared beside the repository
DEMO_DIR = DATA_DIR / "demo"
REALBENCH_DIR = SHARED_DATA_DIR / "realbench-dev"   # where realbench-dev is found when not under the data folder
NAMED_DATASETS = ("demo", "realbench-dev", "roxford5k", "rparis6k")   # names l2g.paths.dataset_dir resolves

# Global-to-local verification budgets registered as g2l@N (l2g.methods); 'g2l' itself uses VerifyConfig.top.
G2L_BUDGETS = (5, 10, 20, 50)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


@dataclass(frozen=True)
class ImageConfig:
    max_side: int = 1024            # longest side after loading (px); larger images are downscaled
    max_pixels: int = 120_000_000   # decoded-size cap: above it the file is refused as a decompression bomb
    max_bytes: int = 200_000_000    # file-size cap (bytes)


# Peak resident memory one query may add (decode + feature extraction), in MiB over the process's
# baseline, for any image up to ImageConfig.max_pixels (tests/test_memory.py checks it). The decoded
# file is the only full-size copy: 4 bytes/px for RGB in Pillow, so ~460 MiB at the cap. Measured on
# the test images (README): 16-bit PNG 332 MiB (was 3,323), RGB PNG 530 MiB (was 1,312), CLI search 358.
QUERY_PEAK_RSS_MB = 600

# Untrusted ground-truth pickles (Revisited Oxford/Paris): the file, and any one array, bytes or list
# it asks for, may be at most this large (bytes; items for lists), checked before anything is allocated.
PICKLE_MAX_BYTES = 256 * 2**20


SIFT_BACKENDS = ("pyramid", "patch", "pyramid-nd")   # FeatureConfig.backend values (l2g.sift)


@dataclass(frozen=True)
class FeatureConfig:
    extractor: str = "sift"         # key in l2g.features.EXTRACTORS
    num_features: int = 2000        # at most this many keypoints per image (strongest response first)
    rootsift: bool = True           # Hellinger kernel: L1-normalise, sqrt (Arandjelovic & Zisserman 2012)
    max_side: int = 1024            # images are resized so that the longest side is at most this
    backend: str = "pyramid"        # Kornia SIFT: 'pyramid' (fast on CPU), 'patch' (fast on CUDA) or 'pyramid-nd':
    #                                 the pyramid without SIFT's doubled first octave (l2g.sift; README: speed, mAP)
    upright: bool = False           # skip orientation estimation
    # The fields below are the pyramid backends' cheaper stages (l2g.siftspace / siftdesc / siftdetect; README,
    # "Extraction"): ~0.82x the CPU time of the features of before (preset 'classic'); realbench-dev local / l2g
    # mAP 64.95 / 71.67 against 64.87 / 71.29 (means over 4 IVF seeds), demo 91.7 / 96.6 for both.
    desc_grid: int = 31             # samples per side of the descriptor's grid (Kornia's 41)
    orient_grid: int = 15           # samples per side of the orientation histogram's grid (Kornia's 19)
    refine: float = 1.5             # sub-pixel fit of only the refine x num_features extrema of largest |DoG|
    #                                 (0: all of them, as Kornia does)
    resample: bool = True           # levels 4-5 of an octave upsampled from the next one's 1-2 (same scales) instead
    #                                 of blurred at full size; the doubled image blurred as it is made
    min_contrast: float = 1e-5      # pyramid backends: DoG extrema of |DoG| at most this are noise (Kornia: no floor;
    #                                 resample's flat areas had ~1e-8 extrema that filled images' keypoint budgets)

    @property
    def double_image(self) -> bool:
        """SIFT's first octave at twice the image size (Lowe's, OpenCV's default): all but 'pyramid-nd'."""
        return not self.backend.endswith("-nd")

    @property
    def name(self) -> str:
        f, root, up = effective(self), "root" if self.rootsift else "plain", "-up" if self.upright else ""
        pyramid = f.extractor == "sift" and f.backend != "patch"
        grid = f"-g{f.desc_grid}" if pyramid and f.desc_grid != CLASSIC_PYRAMID["desc_grid"] else ""
        grid += f"-r{f.refine:g}" if f.backend != "patch" and f.refine else ""
        grid += "-rs" if pyramid and f.resample else ""
        grid += f"-o{f.orient_grid}" if pyramid and f.orient_grid != CLASSIC_PYRAMID["orient_grid"] else ""
        grid += f"-c{f.min_contrast!r}" if pyramid and f.min_contrast else ""
        return f"{f.extractor}-{root}-n{f.num_features}-s{f.max_side}{grid}-{f.backend}{up}"


@dataclass(frozen=True)
class IndexConfig:
    kind: str = "auto"              # 'auto' or a key of l2g.ann.KINDS ('flat', 'ivf', 'ivfsq8', 'ivfhnsw', ...)
    exact_max: int = 50_000         # 'auto': exact (Flat) search up to this many descriptors, auto_kind above
    auto_kind: str = "ivf"          # at 2M descriptors, 2 threads: 0.27 s/query, shortlist recall@100 0.953; an HNSW
    #                                 coarse quantizer over the same lists measured the same (README, issue 8)
    nlist: int = 0                  # IVF lists; 0 = 4*sqrt(N) (HNSW coarse quantizer: hnsw_lists_per_sqrt*sqrt(N))
    max_nlist: int = 16384          # ... clamped to [64, max_nlist]
    hnsw_lists_per_sqrt: float = 4.0
    nprobe: int = 16                # IVF lists visited per query descriptor
    hnsw_ef: int = 32               # efSearch of an HNSW coarse quantizer (at least nprobe)
    train_sample: int = 200_000     # descriptors sampled (fixed seed) to train the IVF quantiser
    add_chunk: int = 200_000        # descriptors added per call (keeps peak memory flat)
    seed: int = 0
    mmap_min_mb: int = 256          # faiss.index of at least this many MiB is memory-mapped (0 always, <0 never)
    compact_min: int = 4_000_000    # 'auto': compact_kind above this many descriptors (0: never); up to it auto_kind
    compact_kind: str = "ivfpq128_rs"  # fast-scan PQ, candidates re-scored exactly from the feature store (issue 8)
    rescore_factor: int = 4         # re-scored kinds: factor * knn candidates (10k images: recall@100 x2 0.79, x4 0.97)
    rescore_nprobe: int = 32        # nprobe of the re-scored (fast-scan) kinds
    retrain_growth: float = 1.5     # adding images: an IVF is retrained (from the stored descriptors) once the nlist
    #                                 rule asks for this many times its lists, else the rows are appended


# IndexConfig fields that do not shape the stored faiss.index (applied when it is opened or searched, or only
# pace the build): changing one reuses the index (l2g.index.index_fingerprint leaves them out)
INDEX_RUNTIME_FIELDS = ("nprobe", "hnsw_ef", "mmap_min_mb", "rescore_factor", "rescore_nprobe", "add_chunk",
                        "retrain_growth")


@dataclass(frozen=True)
class SearchConfig:
    knn: int = 20                   # neighbours per query descriptor; each image counts its first hit only
    kernel: str = "cann"            # 'cann': f(r) = max(0, 1 - (r/p0)^alpha)^(1/alpha); 'gauss': exp(-(r/p0)^2)
    p0: float = 0.50                # kernel bandwidth in L2 distance of unit-norm RootSIFT descriptors
    # knn and p0 were chosen by a sweep (README, 'Choosing the kernel'): realbench-dev local mAP and demo crops
    alpha: float = 0.85             # kernel shape (CANN release: 0.85)
    shortlist: int = 200            # M: images kept from local search
    max_matches: int = 500          # matched pairs kept per shortlisted image (for drawing)
    max_query: int = 0              # search with at most this many query descriptors, strongest first (0: all)


@dataclass(frozen=True)
class GraphConfig:
    top_n: int = 200                # neighbours kept per gallery image in the similarity graph
    verify_top: int = 20            # l2g.vgraph: each image is RANSAC-verified against its top graph neighbours
    verify_sat: float = 50.0        # l2g.vgraph: inlier count at which an edge counts as fully verified
    batch_rows: int = 50_000        # query descriptors per FAISS call when building graph rows (bounds memory)
    query_max: int = 0              # graph rows search with each image's strongest query_max descriptors (0: all)
    rebuild_growth: float = 2.0     # images added: the graph is built afresh (old rows searched again) once the
    #                                 gallery reaches this many times its images (at most 2x the searches of
    #                                 extending it), else extended (new rows only: l2g.graph.update_graph)
    # query_max 500 cut graph CPU time 4x (benchs/bench_graph.py) and kept realbench-dev l2g mAP (69.0 vs 69.0)
    # but lowered the demo's (99.3 vs 99.55, below local's 99.4); 250: realbench-dev 68.4. So 0 stays the default.


@dataclass(frozen=True)
class RerankConfig:
    k: int = 100                    # shortlist head that is re-ranked
    dim: int = 32                   # embedding dimension d
    method: str = "classical"       # 'classical' | 'smacof' (measured on realbench-dev: 68.2 vs 67.5 mAP, 6 vs 42 ms)
    transform: str = "1-s"          # similarity -> dissimilarity: '1-s' | 'sqrt(1-s)' | '-log(s)'
    normalise: str = "p99"          # similarity scale: 'p99' | 'max' | 'rank'
    w: float = 0.0                  # blend weight of the global descriptor cosine (the app's slider)
    blend_w: float = 0.19           # the l2g_blend method's weight while w is 0 (a third-party reading of the paper)
    symmetric: str = "max"          # graph block symmetrisation: 'mean' (S + S^T)/2 | 'max' max(S, S^T)
    local_w: float = 0.5            # guard: final = (1 - local_w) cos_mds + local_w * normalised local score
    diffuse_a: float = 0.25         # one diffusion step on the normalised block: (1 - a) s + a * walk (0: off)
    hub_n: int = 30                 # guard's local score hubness-normalised: q_j / mu_j ** hub_beta, mu_j the mean
    hub_beta: float = 1.0           #   of image j's hub_n strongest graph similarities (0: off)
    # symmetric, local_w, diffuse_a, hub_n, hub_beta: a two-fold split of realbench-dev by group, then 200 random
    # group splits (benchs/quality_leads.py cv); the values were read off both halves (README, issue 12)
    expand_m: int = 0               # graph expansion of the head (l2g.graphctx.expand_order): the shortlist is re-
    expand_gamma: float = 0.0       #   ordered by q_j/q_1 + gamma * (graph similarity to the local top expand_m)
    #   before its top k is embedded (gamma 0: off; README, issue 12 round 3: one query made its gain)
    keep_head: float = 0.0          # guard: the local top-1 keeps rank 1 when its local score is at least
                                    #   keep_head times the second's (0: off)
    mutual_k: int = 0               # reciprocal weighting: block edges not among both ends' top mutual_k
    mutual_w: float = 0.5           #   candidates are scaled by mutual_w (mutual_k 0: off)
    weighted: bool = False          # SMACOF pair weights: pairs with no local similarity get weight 0
    verified_w: float = 0.0         # verified graph edges (l2g.vgraph): block S * (1 + v * g), g in [0, 1]
    smacof_max_iter: int = 300
    smacof_eps: float = 1e-6        # relative stress change that stops SMACOF
    qe_n: int = 10                  # local + alpha-QE baseline: top candidates averaged into the query
    qe_alpha: float = 3.0           # their weight is (score / top score) ** alpha


@dataclass(frozen=True)
class GlobalConfig:
    words: int = 64                 # VLAD codebook size
    pca_dim: int = 256              # PCA-whitened output dimension (clamped to what the data allow)
    train_sample: int = 100_000     # descriptors used for k-means
    seed: int = 0


@dataclass(frozen=True)
class VerifyConfig:
    top: int = 50                   # global shortlist head re-ranked by spatial verification
    model: str = "homography"       # 'homography' | 'fundamental' (F at 8 px: ~56 "inliers" between unrelated images)
    ransac_thresh: float = 8.0      # reprojection threshold (px, at max_side resolution)
    ransac_iters: int = 2000
    ratio: float = 0.0              # 0: mutual nearest neighbours only; >0 adds Lowe's ratio test
    min_inliers: int = 12           # fewer inliers count as 0 (realbench-dev g2l top-20: 12 -> 70.2 mAP, 4 -> 60.1)


@dataclass(frozen=True)
class StoreConfig:
    full_hash_max: int = 64 << 20   # bytes: files up to this size are fully hashed on every open
    hash_samples: int = 64          # larger files (faiss.index): size + hash of this many blocks on open,
    hash_block: int = 1 << 16       # ... of this many bytes each; `python -m l2g check` hashes them in full
    lock_timeout: float = -1        # seconds a build waits for another build of the same folder; <0 forever, 0 fail
    shard_images: int = 256         # images per feature-store shard (l2g.featstore); adding images rewrites
    #                                 the last partial shard only (~76 MB at 2,000 uint8 descriptors per image)
    desc_dtype: str = "uint8"       # stored descriptors: 'uint8' = round(255 x) when a shard's values lie in
    #                                 [0, 1] (RootSIFT), float16 otherwise; 'float16' always


@dataclass(frozen=True)
class BuildConfig:
    """How a build runs (not what it makes: no fingerprint or manifest holds it; l2g.parallel)."""
    workers: int = 0                # feature-extraction processes, one torch thread each; 0 = all cores, 1 = in-process
    parallel_min: int = 8           # fewer images to extract than this stay in the build's own process
    #                                 (starting two workers, which import torch, took 1.6 s on 2 cores)
    device: str = "auto"            # where features are extracted: 'auto' (CUDA when torch sees a GPU), 'cpu', 'cuda'
    #                                 Not in any fingerprint: CUDA features differ from CPU ones in the last bits
    #                                 (97% of keypoints within 1 px), a difference the index tolerates.
    batch: int = 0                  # images of equal size extracted in one call; 0 = 16 on CUDA, 1 (no batching) on CPU


@dataclass(frozen=True)
class ConfidenceConfig:
    """l2g.confidence: when to say "no confident match in this gallery"."""
    fa_target: float = 0.05         # false-accept rate aimed at on non-matching queries (split between the
    #                                 score test and the inlier test: each gets fa_target / 2)
    verify_top: int = 3             # the query's top local candidates verified by RANSAC (mutual NN matches)
    null_skip: int = 5              # without groups.json: a graph row's top entries, assumed true matches,
    #                                 are left out of the null distribution
    min_null: int = 8               # fewer null samples than this: no calibration (every query accepted)


@dataclass(frozen=True)
class AppConfig:
    """The web app's first start (l2g/app): the demo is indexed in two steps."""
    first_n: int = 57               # demo images indexed before the Query page opens (l2g.demo_tour.index_order:
    #                                 the tour's groups and one distractor of every family); the rest are
    #                                 added in a background thread
    progress_every: float = 2.0     # seconds between redraws of the background indexing progress


@dataclass(frozen=True)
class L2GConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    globaldesc: GlobalConfig = field(default_factory=GlobalConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    confidence: ConfidenceConfig = field(default_factory=ConfidenceConfig)

    def replace(self, **sections) -> "L2GConfig":
        """Return a copy with whole sections or ``section__field=value`` keys replaced."""
        out = self
        for key, value in sections.items():
            if "__" in key:
                sec, fld = key.split("__", 1)
                value = dataclasses.replace(getattr(out, sec), **{fld: value})
                key = sec
            out = dataclasses.replace(out, **{key: value})
        return out


DEFAULT = L2GConfig()

# The pyramid SIFT settings of the features of before issue 8's cheaper stages (preset 'classic'), and the
# values an index records for settings that cannot shape its features (effective)
CLASSIC_PYRAMID = {"desc_grid": 41, "orient_grid": 19, "refine": 2.0, "resample": False, "min_contrast": 0.0}
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
# How an index's feature settings are keyed, and for_extractor, are l2g.featkey, which imports this module.


def asdict(obj) -> dict:
    """Plain-dict view of any config dataclass (for manifests and JSON)."""
    return dataclasses.asdict(obj)


def effective(f: FeatureConfig) -> FeatureConfig:
    """``f`` with the settings that cannot shape its features at CLASSIC_PYRAMID's values: the pyramid SIFT
    settings of another extractor or of the patch backend, the orientation grid of upright SIFT (so that
    their name and key, and the folders of indexes built before, stay what they were)."""
    if f.extractor != "sift" or f.backend == "patch":
        return dataclasses.replace(f, **CLASSIC_PYRAMID)
    return dataclasses.replace(f, orient_grid=CLASSIC_PYRAMID["orient_grid"]) if f.upright else f
