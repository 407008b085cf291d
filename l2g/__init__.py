"""l2g: local-to-global image retrieval (local search first, then global re-ranking by MDS embeddings)."""
__version__ = "0.1.0"
