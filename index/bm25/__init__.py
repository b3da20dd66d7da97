"""BM25 over a sparse, segmented, incremental index, split as bm25s splits its own:

- ``scoring``: the parameters and the variants (``lucene``, ``robertson``/``okapi``, ``bm25+``);
- ``segments``: the immutable CSR/CSC segments of documents, merging and compaction;
- ``snapshot``: the immutable state searches read, and scoring a query against it;
- ``persistence``: the on-disk format (a manifest and one arrays file);
- ``index``: :class:`BM25Index`, adds, deletes, searches, save and load;
- ``global_stats``: the statistics of a sharded collection summed over its shards, so each shard
  scores as one index would.

Top-k selection is shared with the other brute-force rankers in ``index.topk``.
"""

from __future__ import annotations

from index.bm25.index import BM25Index
from index.bm25.scoring import DEFAULT_B, DEFAULT_K1, VARIANTS, select_variant

__all__ = ["DEFAULT_B", "DEFAULT_K1", "VARIANTS", "BM25Index", "select_variant"]
