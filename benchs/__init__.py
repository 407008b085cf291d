"""l2g's benchmarks, one question per script (as faiss's ``benchs/``); each writes JSON.

- ``bench_extract``: seconds per image of Kornia SIFT, pyramid against patch backend.
- ``bench_index``: index build rate and bytes per descriptor (Flat, IVF, IVF-SQ8 from index_factory strings).
- ``bench_search``: local-search latency and recall against exact search, per gallery size.
- ``bench_rerank``: MDS re-ranking time, classical against SMACOF, per shortlist length k.
- ``run_all``: all of them into one report (``python -m l2g bench [--quick] [--out bench.json]``).

Run one from a clone's root: ``python -m benchs.bench_search --sizes 1000 --out search.json [--quick]``.
The folder sits beside ``l2g/``, not inside it: it is not installed with the package.
"""
