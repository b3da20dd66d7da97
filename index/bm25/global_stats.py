"""Global BM25 statistics of a sharded collection, so each shard scores as one index would.

BM25 weights depend on collection-wide numbers: the live document count ``N``, each term's
document frequency and the average length ``avgdl``. A shard alone knows only its own. Each shard
reports :class:`ShardStats` (its count, total length and per-term document frequencies); their sum
is :class:`GlobalStats`, which turns an analyzed query into the same ``(terms, weights, const)`` a
single index's :meth:`~index.bm25.snapshot.Snapshot.query_weights` computes, and the global
``avgdl``. Every shard then scores with those (``BM25Index.search_weighted``), so a document's
score is the one a single index over all shards' documents gives it, and the gathered top k is
the single index's top k.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from index.bm25.scoring import BM25Params, BM25Variant


@dataclass(frozen=True)
class ShardStats:
    """One shard's part of the statistics."""

    n_docs: int
    total_len: float
    df: dict[str, int] = field(default_factory=dict)


class GlobalStats:
    """The sum of every shard's :class:`ShardStats`, scoring as ``variant`` with ``params``."""

    def __init__(self, shards: Sequence[ShardStats], variant: BM25Variant, params: BM25Params) -> None:
        self.shards = tuple(shards)
        self.variant = variant
        self.params = params
        self.n_docs = sum(s.n_docs for s in self.shards)
        self.total_len = float(sum(s.total_len for s in self.shards))

    @property
    def avgdl(self) -> float:
        return self.total_len / self.n_docs if self.n_docs else 0.0

    def df(self, term: str) -> int:
        """The term's document frequency over every shard."""
        return sum(s.df.get(term, 0) for s in self.shards)

    @cached_property
    def _idf_table(self) -> dict[str, float]:
        """idf of every term, for variants whose idf depends on the whole vocabulary (okapi's floor
        is a share of the mean idf); built on first use."""
        total: Counter[str] = Counter()
        for s in self.shards:
            total.update(s.df)
        terms = list(total)
        idf = self.variant.idf(np.asarray([total[t] for t in terms], dtype=np.int64), self.n_docs, self.params)
        return dict(zip(terms, idf.tolist(), strict=True))

    def query_weights(self, terms: Sequence[str]) -> tuple[list[str], np.ndarray, float]:
        """The distinct query terms some shard holds (sorted), their weights ``idf x repeats`` and
        the bm25+ per-query constant, from the global statistics."""
        counts = Counter(terms)
        kept, dfs, mult = [], [], []
        for term in sorted(counts):
            d = self.df(term)
            if d > 0:
                kept.append(term)
                dfs.append(d)
                mult.append(counts[term])
        if self.variant.name == "robertson":  # okapi: negative idfs floored at a share of the mean
            idf = np.asarray([self._idf_table[t] for t in kept], dtype=np.float64)
        else:
            idf = self.variant.idf(np.asarray(dfs, dtype=np.int64), self.n_docs, self.params)
        w = idf * np.asarray(mult, dtype=np.float64)
        const = float(self.params.delta * w.sum()) if self.variant.query_delta else 0.0
        return kept, w, const
