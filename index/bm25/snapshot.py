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

    @cached_property
    def norms(self) -> list[np.ndarray]:
        """Per segment (n,): ``k1 * (1 - b + b * dl / avgdl)``."""
        p = self.params
        avgdl = self.total_len / self.n_docs if self.n_docs else 0.0
        if avgdl <= 0:  # no live terms at all: nothing can match, any finite value will do
            return [np.full(s.n_rows, p.k1) for s in self.segments]
        return [p.k1 * (1.0 - p.b + p.b * s.lengths / avgdl) for s in self.segments]

    def live_ids(self) -> np.ndarray:
        """The live ids, ascending."""
        if not self.segments:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate([s.ids[s.alive] for s in self.segments]))

    def score_terms(self, terms: Sequence[str]) -> tuple[np.ndarray, float]:
        """Dense (rows,) float64 scores of one analyzed query over every row, and the bm25+
        per-query constant. Query terms are visited in sorted order so every index holding the
        same documents sums a document's contributions in the same order."""
        counts = Counter(terms)
        cols_l, mult_l = [], []
        for term in sorted(counts):
            col = self.vocab.get(term, -1)
            if 0 <= col < self.n_terms and self.df[col] > 0:
                cols_l.append(col)
                mult_l.append(counts[term])
        cols = np.asarray(cols_l, dtype=np.int64)
        w = self.idf[cols] * np.asarray(mult_l, dtype=np.float64)  # (q,) idf x repeats
        const = float(self.params.delta * w.sum()) if self.variant.query_delta else 0.0
        parts = []
        for seg, norm in zip(self.segments, self.norms, strict=True):
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
        return scores, const

    def search_terms(
        self, terms: Sequence[str], k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best live documents with a positive score for one analyzed query, among
        ``allowed`` ids if given: ``(ids int64, scores float32)``, ties by ascending id."""
        if not self.segments:
            return no_hits()
        scores, const = self.score_terms(terms)
        rows = np.flatnonzero(scores > 0)
        if allowed is not None and len(rows):
            rows = rows[np.isin(self.row_ids[rows], allowed)]
        if not len(rows):
            return no_hits()
        s = scores[rows] + const
        pos = top_k(s, k, self.row_ids[rows])
        return self.row_ids[rows[pos]].copy(), s[pos].astype(np.float32)
