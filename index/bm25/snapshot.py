"""An immutable snapshot of the BM25 index, and scoring a query against it.

Global statistics (number of live documents ``N``, document frequency per term, total length,
hence ``avgdl``) are kept current across segments on every add and delete. BM25 weights depend on
them, so weights are not frozen into the matrices: a query touches only its own terms' columns and
turns their stored term frequencies into weights on the fly (``idf[t] * tfc(tf, norm[doc])`` with
``norm = k1 * (1 - b + b * dl / avgdl)`` cached per snapshot), summing columns into a dense score
vector, then takes the top k. That is the bm25s query path (a sum of columns) with one extra
element-wise step on the touched entries, and it makes scores after any sequence of adds and
deletes equal to those of a fresh build over the surviving documents.

Writers publish a new snapshot; searches read one and need no lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from index.bm25.scoring import BM25Params, BM25Variant
from index.bm25.segments import Segment
from index.topk import top_k


def no_hits() -> tuple[np.ndarray, np.ndarray]:
    """An empty ``(ids, scores)`` answer."""
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)


class Snapshot:
    """An immutable snapshot of the index that searches read without locking. Derived arrays are
    computed on first use (a race only computes the same value twice)."""

    def __init__(
        self,
        segments: tuple[Segment, ...],
        vocab: dict[str, int],
        n_terms: int,
        df: np.ndarray,
        total_len: float,
        variant: BM25Variant,
        params: BM25Params,
    ) -> None:
        self.segments = segments
        self.vocab = vocab  # append-only while shared; ids >= n_terms are not in this snapshot
        self.n_terms = n_terms
        self.df = df
        self.n_docs = int(sum(len(s.ids) - s.n_dead for s in segments))
        self.total_len = total_len
        self.variant = variant
        self.params = params

    @cached_property
    def idf(self) -> np.ndarray:
        """(V,) idf of every term."""
        return self.variant.idf(self.df, self.n_docs, self.params)

    @cached_property
    def offsets(self) -> np.ndarray:
        """(S + 1,) first global row of each segment."""
        return np.concatenate([[0], np.cumsum([s.n_rows for s in self.segments])]).astype(np.int64)

    @cached_property
    def row_ids(self) -> np.ndarray:
        """(rows,) external id per global row."""
        if not self.segments:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([s.ids for s in self.segments])

    @cached_property
    def dead_rows(self) -> np.ndarray:
        """Global rows of tombstones."""
        return np.concatenate(
            [
                np.flatnonzero(~s.alive) + o
                for s, o in zip(self.segments, self.offsets[:-1], strict=True)
            ]
            or [np.zeros(0, dtype=np.int64)]
        )

    def live_ids(self) -> np.ndarray:
        """The live ids, ascending."""
        if not self.segments:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate([s.ids[s.alive] for s in self.segments]))

    def query_weights(self, terms: Sequence[str]) -> tuple[list[str], np.ndarray, float]:
        """The distinct query terms this snapshot holds (sorted), their weights ``idf x repeats``
        and the bm25+ per-query constant: what :meth:`score_weighted` sums. A sharded index
        computes the same three from global statistics instead (``index.shards``)."""
        counts = Counter(terms)
        kept, cols_l, mult_l = [], [], []
        for term in sorted(counts):
            col = self.vocab.get(term, -1)
            if 0 <= col < self.n_terms and self.df[col] > 0:
                kept.append(term)
                cols_l.append(col)
                mult_l.append(counts[term])
        w = self.idf[np.asarray(cols_l, dtype=np.int64)] * np.asarray(mult_l, dtype=np.float64)
        const = float(self.params.delta * w.sum()) if self.variant.query_delta else 0.0
        return kept, w, const

    def norms_at(self, avgdl: float) -> list[np.ndarray]:
        """Per segment ``k1 * (1 - b + b * dl / avgdl)`` for a given ``avgdl`` (a shard's global
        average); :attr:`norms` is this at the snapshot's own average."""
        p = self.params
        if avgdl <= 0:  # no live terms at all: nothing can match, any finite value will do
            return [np.full(s.n_rows, p.k1) for s in self.segments]
        return [p.k1 * (1.0 - p.b + p.b * s.lengths / avgdl) for s in self.segments]

    @cached_property
    def norms(self) -> list[np.ndarray]:
        """Per segment (n,): ``k1 * (1 - b + b * dl / avgdl)``."""
        return self.norms_at(self.total_len / self.n_docs if self.n_docs else 0.0)

    def score_weighted(self, terms: Sequence[str], weights: np.ndarray, norms: list[np.ndarray]) -> np.ndarray:
        """Dense (rows,) float64 scores over every row: ``sum_t weights[t] * tfc(tf, norm)`` over
        ``terms`` (sorted; those this snapshot lacks contribute nothing). Terms are visited in the
        given order, so every index holding a document sums its contributions in the same order."""
        cols_l, w_l = [], []
        for term, w in zip(terms, weights, strict=True):
            col = self.vocab.get(term, -1)
            if 0 <= col < self.n_terms and self.df[col] > 0:
                cols_l.append(col)
                w_l.append(w)
        cols = np.asarray(cols_l, dtype=np.int64)
        w = np.asarray(w_l, dtype=np.float64)
        parts = []
        for seg, norm in zip(self.segments, norms, strict=True):
            if not len(cols):
                parts.append(np.zeros(seg.n_rows))
                continue
            in_seg = cols < seg.csc.shape[1]
            c, wc = cols[in_seg], w[in_seg]
            starts, ends = seg.csc.indptr[c], seg.csc.indptr[c + 1]
            lens = ends - starts
            total = int(lens.sum())
            # positions of every stored entry of the query columns, column after column
            pos = np.arange(total, dtype=np.int64) + np.repeat(
                starts - np.cumsum(lens) + lens, lens
            )
            rows = seg.csc.indices[pos]
            contrib = np.repeat(wc, lens) * self.variant.tfc(
                seg.csc.data[pos], norm[rows], self.params
            )
            parts.append(np.bincount(rows, weights=contrib, minlength=seg.n_rows))
        scores = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if len(self.dead_rows):
            scores[self.dead_rows] = 0.0
        return scores

    def score_terms(self, terms: Sequence[str]) -> tuple[np.ndarray, float]:
        """Dense (rows,) float64 scores of one analyzed query over every row, and the bm25+
        per-query constant."""
        kept, w, const = self.query_weights(terms)
        return self.score_weighted(kept, w, self.norms), const

    def top_rows(self, scores: np.ndarray, const: float, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best live rows with a positive score among ``allowed`` ids: ``(ids int64,
        scores float64 with const added)``, ties by ascending id."""
        rows = np.flatnonzero(scores > 0)
        if allowed is not None and len(rows):
            rows = rows[np.isin(self.row_ids[rows], allowed)]
        if not len(rows):
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        s = scores[rows] + const
        pos = top_k(s, k, self.row_ids[rows])
        return self.row_ids[rows[pos]].copy(), s[pos]

    def search_terms(
        self, terms: Sequence[str], k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best live documents with a positive score for one analyzed query, among
        ``allowed`` ids if given: ``(ids int64, scores float32)``, ties by ascending id."""
        if not self.segments:
            return no_hits()
        scores, const = self.score_terms(terms)
        ids, s = self.top_rows(scores, const, k, allowed)
        return ids, s.astype(np.float32)

    def term_stats(self) -> dict[str, int]:
        """Document frequency of every term some live document holds (a shard's part of the
        global statistics)."""
        df = self.df
        return {t: int(df[i]) for t, i in self.vocab.items() if i < self.n_terms and df[i] > 0}
