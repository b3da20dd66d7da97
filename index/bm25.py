"""BM25 over a sparse, segmented, incremental index.

Layout. Documents (chunks) live in *segments*: one main segment and a few small delta segments,
each holding the term frequencies of its documents twice, as a CSR matrix (docs x vocab, for
deletes and merges) and a CSC matrix (for query-time column sums), plus the documents' lengths,
their external int64 ids and an ``alive`` mask (tombstones). Global statistics (number of live
documents ``N``, document frequency per term, total length, hence ``avgdl``) are kept current
across segments on every add and delete.

Scoring. BM25 weights depend on ``N``, ``df`` and ``avgdl``, which change with every add or
delete, so weights are not frozen into the matrices: a query touches only its own terms' columns
and turns their stored term frequencies into weights on the fly (``idf[t] * tfc(tf, norm[doc])``
with ``norm = k1 * (1 - b + b * dl / avgdl)`` cached per state), summing columns into a dense
score vector, then takes the top k with ``argpartition``. That is the bm25s query path (a sum of
columns) with one extra element-wise step on the touched entries, and it makes scores after any
sequence of adds and deletes equal to those of a fresh build over the surviving documents.

Incremental. ``add`` appends a delta segment (a re-added id first tombstones its old row);
``delete`` flips ``alive`` bits and decrements ``df``. Segments merge on thresholds: all of them
(dropping tombstones and unused terms) when delta rows exceed ``merge_ratio`` of the main segment
or tombstones exceed ``tombstone_ratio`` of all rows, and the deltas among themselves when there
are more than ``max_deltas`` of them.

Concurrency. Mutations are serialized by a lock and publish a new immutable :class:`_State`;
searches read ``self._state`` once and work on that snapshot without locking, so a search
running during an add sees either the state before it or after it, never a mixture.

Variants are small pure functions behind :func:`select_variant` (``ValueError`` on unknown names):
``lucene`` (bm25s's default), ``robertson``/``okapi`` (rank_bm25's ``BM25Okapi``, with its
epsilon floor for negative idf), ``bm25+`` (rank_bm25's ``BM25Plus`` / bm25s's ``bm25+``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from common.atomic import atomic_write
from common.errors import InvalidInput, NotFound
from index.analyzer import Analyzer

logger = logging.getLogger(__name__)

FORMAT = "attend-bm25"
FORMAT_VERSION = 1
MANIFEST = "bm25.json"

# Chosen on BEIR SciFact (test split, title + text, default analyzer, lucene): bm25s's defaults
# k1=1.5, b=0.75 give nDCG@10 0.686 against 0.676 for Pyserini's k1=0.9, b=0.4 (and 0.679 for
# k1=1.2, b=0.75). Measured with `attend bench bm25 --k1 .. -b ..`; see eval/bench_bm25.py.
DEFAULT_K1 = 1.5
DEFAULT_B = 0.75


@dataclass(frozen=True)
class BM25Params:
    """Free parameters of the BM25 family."""

    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    epsilon: float = 0.25  # okapi: negative idfs become epsilon * mean idf
    delta: float = 1.0  # bm25+: lower bound on a matching term's tf component


# --- variants: pure functions of (df, N) and (tf, norm) ---------------------------------------


def idf_lucene(df: np.ndarray, n_docs: int, params: BM25Params) -> np.ndarray:
    """Lucene: ``log(1 + (N - df + 0.5) / (df + 0.5))``; always positive. 0 where ``df == 0``."""
    out = np.zeros(len(df), dtype=np.float64)
    m = df > 0
    d = df[m].astype(np.float64)
    out[m] = np.log1p((n_docs - d + 0.5) / (d + 0.5))
    return out


def idf_okapi(df: np.ndarray, n_docs: int, params: BM25Params) -> np.ndarray:
    """Robertson-Sparck Jones idf ``log((N - df + 0.5) / (df + 0.5))`` as rank_bm25's
    ``BM25Okapi`` computes it: negative values are replaced by ``epsilon * mean(idf)``, the mean
    taken over every term present in the collection. 0 where ``df == 0``."""
    out = np.zeros(len(df), dtype=np.float64)
    m = df > 0
    if not m.any():
        return out
    d = df[m].astype(np.float64)
    raw = np.log(n_docs - d + 0.5) - np.log(d + 0.5)
    floor = params.epsilon * raw.mean()
    out[m] = np.where(raw < 0, floor, raw)
    return out


def idf_bm25plus(df: np.ndarray, n_docs: int, params: BM25Params) -> np.ndarray:
    """BM25+: ``log((N + 1) / df)``. 0 where ``df == 0``."""
    out = np.zeros(len(df), dtype=np.float64)
    m = df > 0
    out[m] = np.log((n_docs + 1) / df[m].astype(np.float64))
    return out


def tfc_lucene(tf: np.ndarray, norm: np.ndarray, params: BM25Params) -> np.ndarray:
    """bm25s's Lucene tf component ``tf / (tf + norm)`` (no ``k1 + 1`` factor, which only scales)."""
    return tf / (tf + norm)


def tfc_okapi(tf: np.ndarray, norm: np.ndarray, params: BM25Params) -> np.ndarray:
    """Classic tf component ``tf * (k1 + 1) / (tf + norm)`` (rank_bm25, bm25+)."""
    return tf * (params.k1 + 1.0) / (tf + norm)


@dataclass(frozen=True)
class BM25Variant:
    """One scoring function: ``score(q, d) = sum_t idf(t) * tfc(tf(t, d), norm(d))`` over the query
    terms ``t`` present in ``d`` (repeated query terms count once per repeat), where
    ``norm(d) = k1 * (1 - b + b * len(d) / avgdl)``; ``query_delta`` variants add ``delta * idf(t)``
    for every query term to each matching document (rank_bm25's BM25Plus adds it to every
    document; non-matching ones are never returned here)."""

    name: str
    idf: Callable[[np.ndarray, int, BM25Params], np.ndarray]
    tfc: Callable[[np.ndarray, np.ndarray, BM25Params], np.ndarray]
    query_delta: bool = False


_ROBERTSON = BM25Variant("robertson", idf_okapi, tfc_okapi)
VARIANTS: dict[str, BM25Variant] = {
    "lucene": BM25Variant("lucene", idf_lucene, tfc_lucene),
    "robertson": _ROBERTSON,
    "okapi": _ROBERTSON,
    "bm25+": BM25Variant("bm25+", idf_bm25plus, tfc_okapi, query_delta=True),
}


def select_variant(name: str) -> BM25Variant:
    """The variant called ``name``; ``InvalidInput`` (a ``ValueError``) if there is none."""
    try:
        return VARIANTS[name.lower()]
    except (KeyError, AttributeError):
        raise InvalidInput(f"unknown BM25 variant {name!r}; choose from {sorted(VARIANTS)}") from None


# --- storage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    """Term frequencies of a run of documents; immutable except by replacement."""

    ids: np.ndarray  # (n,) int64 external ids
    lengths: np.ndarray  # (n,) float64 document lengths in terms
    alive: np.ndarray  # (n,) bool; False = tombstone
    csr: sp.csr_matrix  # (n, V_seg) float32 tf
    csc: sp.csc_matrix  # same matrix, column-major

    @property
    def n_rows(self) -> int:
        return len(self.ids)

    @property
    def n_dead(self) -> int:
        return int(self.n_rows - np.count_nonzero(self.alive))


def _segment_from_tokens(ids: np.ndarray, term_ids: list[np.ndarray], n_terms: int) -> _Segment:
    lengths = np.fromiter((len(t) for t in term_ids), dtype=np.int64, count=len(term_ids))
    rows = np.repeat(np.arange(len(term_ids), dtype=np.int64), lengths)
    cols = np.concatenate(term_ids) if term_ids else np.zeros(0, dtype=np.int64)
    keys, tf = np.unique(rows * n_terms + cols, return_counts=True)  # sorted by (row, col)
    r, c = np.divmod(keys, n_terms) if n_terms else (keys, keys)
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=len(ids)), out=indptr[1:])
    csr = sp.csr_matrix(
        (tf.astype(np.float32), c.astype(np.int32), indptr), shape=(len(ids), n_terms)
    )
    return _Segment(
        ids=ids,
        lengths=lengths.astype(np.float64),
        alive=np.ones(len(ids), dtype=bool),
        csr=csr,
        csc=csr.tocsc(),
    )


def _merge_segments(segments: Sequence[_Segment], n_terms: int) -> _Segment:
    """One segment holding the live rows of ``segments`` in order, ``n_terms`` columns wide."""
    parts, ids, lengths = [], [], []
    for seg in segments:
        keep = np.flatnonzero(seg.alive)
        m = seg.csr[keep]
        parts.append(sp.csr_matrix((m.data, m.indices, m.indptr), shape=(len(keep), n_terms)))
        ids.append(seg.ids[keep])
        lengths.append(seg.lengths[keep])
    csr = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, n_terms), dtype=np.float32)
    csr = sp.csr_matrix(
        (csr.data.astype(np.float32), csr.indices.astype(np.int32), csr.indptr),
        shape=(csr.shape[0], n_terms),
    )
    ids_arr = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    return _Segment(
        ids=ids_arr,
        lengths=np.concatenate(lengths) if lengths else np.zeros(0),
        alive=np.ones(len(ids_arr), dtype=bool),
        csr=csr,
        csc=csr.tocsc(),
    )


class _State:
    """An immutable snapshot of the index that searches read without locking. Derived arrays are
    computed on first use (a race only computes the same value twice)."""

    def __init__(
        self,
        segments: tuple[_Segment, ...],
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
    def idf(self) -> np.ndarray:  # (V,)
        return self.variant.idf(self.df, self.n_docs, self.params)

    @cached_property
    def offsets(self) -> np.ndarray:  # (S + 1,) first global row of each segment
        return np.concatenate([[0], np.cumsum([s.n_rows for s in self.segments])]).astype(np.int64)

    @cached_property
    def row_ids(self) -> np.ndarray:  # (rows,) external id per global row
        if not self.segments:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([s.ids for s in self.segments])

    @cached_property
    def dead_rows(self) -> np.ndarray:  # global rows of tombstones
        return np.concatenate(
            [
                np.flatnonzero(~s.alive) + o
                for s, o in zip(self.segments, self.offsets[:-1], strict=True)
            ]
            or [np.zeros(0, dtype=np.int64)]
        )

    @cached_property
    def norms(self) -> list[np.ndarray]:  # per segment (n,): k1 * (1 - b + b * dl / avgdl)
        p = self.params
        avgdl = self.total_len / self.n_docs if self.n_docs else 0.0
        if avgdl <= 0:  # no live terms at all: nothing can match, any finite value will do
            return [np.full(s.n_rows, p.k1) for s in self.segments]
        return [p.k1 * (1.0 - p.b + p.b * s.lengths / avgdl) for s in self.segments]


def _as_id_array(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    if isinstance(ids, np.ndarray):
        arr = ids
    elif isinstance(ids, (set, frozenset)):
        arr = np.fromiter(ids, dtype=np.int64, count=len(ids))
    else:
        arr = np.asarray(list(ids))
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInput(f"ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False).reshape(-1)


def _top_k(rows: np.ndarray, scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions (into ``rows``) of the k best by score desc, then id asc: ties at the cut are
    resolved by id, so the answer does not depend on where a document sits in the index."""
    if len(rows) > k:
        part = np.argpartition(-scores, k - 1)
        kth = scores[part[k - 1]]
        pos = np.flatnonzero(scores >= kth)
    else:
        pos = np.arange(len(rows))
    order = np.lexsort((ids[rows[pos]], -scores[pos]))[:k]
    return pos[order]


def _no_hits() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)


@dataclass(eq=False)
class BM25Index:
    """An incremental BM25 index over texts keyed by external int64 ids (chunk primary keys).

    Args:
        analyzer: text -> terms; default :class:`~index.analyzer.Analyzer` (English stopwords,
            Snowball stemming).
        variant: ``"lucene"`` (default), ``"robertson"``/``"okapi"`` or ``"bm25+"``.
        k1, b: BM25 saturation and length normalization (defaults measured on SciFact).
        epsilon: okapi's negative-idf floor factor; delta: bm25+'s lower bound.
        merge_ratio, tombstone_ratio, max_deltas: when segments merge (see module docstring).
    """

    analyzer: Analyzer | None = None
    variant: str = "lucene"
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    epsilon: float = 0.25
    delta: float = 1.0
    merge_ratio: float = 0.1
    tombstone_ratio: float = 0.2
    max_deltas: int = 8
    _state: _State = field(init=False, repr=False)
    _where: dict[int, tuple[int, int]] = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.analyzer is None:
            self.analyzer = Analyzer()
        self._variant = select_variant(self.variant)
        if self.k1 < 0 or not 0.0 <= self.b <= 1.0:
            raise InvalidInput(f"need k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")
        self._params = BM25Params(k1=self.k1, b=self.b, epsilon=self.epsilon, delta=self.delta)
        self._lock = threading.Lock()
        self._where = {}
        self._state = self._new_state((), {}, 0, np.zeros(0, dtype=np.int64), 0.0)

    def _new_state(
        self,
        segments: Sequence[_Segment],
        vocab: dict[str, int],
        n_terms: int,
        df: np.ndarray,
        total_len: float,
    ) -> _State:
        return _State(tuple(segments), vocab, n_terms, df, total_len, self._variant, self._params)

    # --- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._state.n_docs

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._where

    def ids(self) -> np.ndarray:
        """The live ids, ascending."""
        st = self._state
        if not st.segments:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate([s.ids[s.alive] for s in st.segments]))

    @property
    def n_segments(self) -> int:
        return len(self._state.segments)

    def _score_terms(self, st: _State, terms: Sequence[str]) -> tuple[np.ndarray, float]:
        """Dense (rows,) float64 scores of one analyzed query over every row, and the bm25+
        per-query constant. Query terms are visited in sorted order so every index holding the
        same documents sums a document's contributions in the same order."""
        counts = Counter(terms)
        cols_l, mult_l = [], []
        for term in sorted(counts):
            col = st.vocab.get(term, -1)
            if 0 <= col < st.n_terms and st.df[col] > 0:
                cols_l.append(col)
                mult_l.append(counts[term])
        cols = np.asarray(cols_l, dtype=np.int64)
        w = st.idf[cols] * np.asarray(mult_l, dtype=np.float64)  # (q,) idf x repeats
        const = float(st.params.delta * w.sum()) if st.variant.query_delta else 0.0
        parts = []
        for seg, norm in zip(st.segments, st.norms, strict=True):
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
            contrib = np.repeat(wc, lens) * st.variant.tfc(seg.csc.data[pos], norm[rows], st.params)
            parts.append(np.bincount(rows, weights=contrib, minlength=seg.n_rows))
        scores = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if len(st.dead_rows):
            scores[st.dead_rows] = 0.0
        return scores, const

    def _search_terms(
        self, st: _State, terms: Sequence[str], k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if not st.segments:
            return _no_hits()
        scores, const = self._score_terms(st, terms)
        rows = np.flatnonzero(scores > 0)
        if allowed is not None and len(rows):
            rows = rows[np.isin(st.row_ids[rows], allowed)]
        if not len(rows):
            return _no_hits()
        s = scores[rows] + const
        pos = _top_k(rows, s, st.row_ids, k)
        return st.row_ids[rows[pos]].copy(), s[pos].astype(np.float32)

    def search(
        self,
        query: str,
        k: int = 10,
        allowed_ids: set[int] | np.ndarray | Sequence[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best documents for ``query``: ``(ids int64, scores float32)``, best first
        (ties by ascending id). Only documents matching a query term with a positive score are
        returned, so there may be fewer than ``k``. ``allowed_ids`` restricts the candidates
        before the top-k cut (a metadata filter)."""
        if k <= 0:
            raise InvalidInput(f"k must be positive, got {k}")
        allowed = None if allowed_ids is None else _as_id_array(allowed_ids)
        return self._search_terms(self._state, self.analyzer(query), k, allowed)

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        allowed_ids: set[int] | np.ndarray | Sequence[int] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search` for several queries against one snapshot (analysis batched)."""
        if k <= 0:
            raise InvalidInput(f"k must be positive, got {k}")
        allowed = None if allowed_ids is None else _as_id_array(allowed_ids)
        st = self._state
        return [self._search_terms(st, t, k, allowed) for t in self.analyzer.analyze_many(queries)]

    def score_all(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scores float64)`` of every live document, ids ascending; non-matching documents
        score 0 (bm25+'s per-query constant is added to matching ones only). For tests and
        diagnostics; :meth:`search` is the fast path."""
        st = self._state
        if not st.segments:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        scores, const = self._score_terms(st, self.analyzer(query))
        scores[scores > 0] += const
        live = np.ones(len(scores), dtype=bool)
        live[st.dead_rows] = False
        ids, scores = st.row_ids[live], scores[live]
        order = np.argsort(ids, kind="stable")
        return ids[order], scores[order]

    # --- writing -------------------------------------------------------------------------------

    def add(self, ids: Sequence[int] | np.ndarray, texts: Sequence[str]) -> None:
        """Index ``texts`` under ``ids``; an id already present is replaced."""
        id_arr = _as_id_array(ids)
        if len(id_arr) != len(texts):
            raise InvalidInput(f"{len(id_arr)} ids for {len(texts)} texts")
        if len(np.unique(id_arr)) != len(id_arr):
            raise InvalidInput("duplicate ids in one add() call")
        if not len(id_arr):
            return
        tokens = self._analyze(texts)
        with self._lock:
            self._delete_locked(id_arr)
            st = self._state
            vocab = st.vocab
            term_ids = []
            for toks in tokens:
                for t in toks:
                    if t not in vocab:
                        vocab[t] = len(vocab)
                term_ids.append(
                    np.fromiter((vocab[t] for t in toks), dtype=np.int64, count=len(toks))
                )
            n_terms = len(vocab)
            seg = _segment_from_tokens(id_arr.copy(), term_ids, n_terms)
            df = np.zeros(n_terms, dtype=np.int64)
            df[: st.n_terms] = st.df
            df += np.bincount(seg.csr.indices, minlength=n_terms)
            s_idx = len(st.segments)
            self._where.update((int(i), (s_idx, r)) for r, i in enumerate(id_arr.tolist()))
            self._state = self._new_state(
                st.segments + (seg,), vocab, n_terms, df, st.total_len + float(seg.lengths.sum())
            )
            self._maybe_merge_locked()

    def delete(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove documents; unknown ids are ignored. Returns how many were removed."""
        id_arr = _as_id_array(ids)
        with self._lock:
            n = self._delete_locked(id_arr)
            if n:
                self._maybe_merge_locked()
        return n

    def _analyze(self, texts: Sequence[str], batch: int = 4096) -> list[list[str]]:
        out: list[list[str]] = []
        for i in tqdm(
            range(0, len(texts), batch),
            desc="BM25 analyze",
            disable=len(texts) < 50_000,
            leave=False,
        ):
            out.extend(self.analyzer.analyze_many(texts[i : i + batch]))
        return out

    def _delete_locked(self, id_arr: np.ndarray) -> int:
        hits = [self._where.pop(int(i)) for i in id_arr.tolist() if int(i) in self._where]
        if not hits:
            return 0
        st = self._state
        by_seg: dict[int, list[int]] = {}
        for s_idx, row in hits:
            by_seg.setdefault(s_idx, []).append(row)
        segments = list(st.segments)
        df = st.df.copy()
        total_len = st.total_len
        for s_idx, rows in by_seg.items():
            seg = segments[s_idx]
            r = np.asarray(rows, dtype=np.int64)
            alive = seg.alive.copy()
            alive[r] = False
            starts, ends = seg.csr.indptr[r], seg.csr.indptr[r + 1]
            cols = np.concatenate([seg.csr.indices[a:e] for a, e in zip(starts, ends, strict=True)])
            df[: seg.csr.shape[1]] -= np.bincount(cols, minlength=seg.csr.shape[1])
            total_len -= float(seg.lengths[r].sum())
            segments[s_idx] = replace(seg, alive=alive)
        self._state = self._new_state(segments, st.vocab, st.n_terms, df, total_len)
        return len(hits)

    def _maybe_merge_locked(self) -> None:
        st = self._state
        if not st.segments:
            return
        main, deltas = st.segments[0], st.segments[1:]
        rows = sum(s.n_rows for s in st.segments)
        dead = sum(s.n_dead for s in st.segments)
        delta_rows = sum(s.n_rows for s in deltas)
        if dead > self.tombstone_ratio * rows or delta_rows > self.merge_ratio * main.n_rows:
            self._compact_locked()
        elif len(deltas) > self.max_deltas:
            merged = _merge_segments(deltas, st.n_terms)
            logger.debug("merged %d delta segments (%d rows)", len(deltas), merged.n_rows)
            self._publish_segments_locked((main, merged), st.vocab, st.n_terms, st.df)

    def _compact_locked(self) -> None:
        """Merge every segment into one, dropping tombstones and terms no live document uses."""
        st = self._state
        seg, vocab, df = _compacted(st)
        logger.debug(
            "compacted %d segments into %d rows, %d terms", len(st.segments), seg.n_rows, len(df)
        )
        self._publish_segments_locked((seg,) if seg.n_rows else (), vocab, len(df), df)

    def _publish_segments_locked(
        self, segments: Sequence[_Segment], vocab: dict[str, int], n_terms: int, df: np.ndarray
    ) -> None:
        st = self._state
        self._where = {
            int(i): (s_idx, r)
            for s_idx, seg in enumerate(segments)
            for r, i in enumerate(seg.ids.tolist())
            if seg.alive[r]
        }
        self._state = self._new_state(segments, vocab, n_terms, df, st.total_len)

    # --- persistence ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index into directory ``path`` (created if needed): the arrays of one compacted
        segment in ``bm25-<token>.npz`` and the configuration and vocabulary in ``bm25.json``,
        each written to a temporary file, fsynced and renamed into place; the manifest goes last,
        so a crash leaves the previous save readable. Returns the manifest path."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        with self._lock:  # adds extend the shared vocabulary in place
            seg, vocab, df = _compacted(self._state)
            vocab = dict(vocab)
        terms = [""] * len(vocab)
        for t, i in vocab.items():
            terms[i] = t
        arrays_name = f"bm25-{uuid.uuid4().hex}.npz"
        atomic_write(
            root / arrays_name,
            lambda f: np.savez(
                f,
                ids=seg.ids,
                lengths=seg.lengths,
                indptr=seg.csr.indptr,
                indices=seg.csr.indices,
                tf=seg.csr.data,
            ),
        )
        manifest_path = root / MANIFEST
        old = _read_manifest(manifest_path) if manifest_path.exists() else None
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "arrays": arrays_name,
            "n_docs": int(seg.n_rows),
            "variant": self.variant,
            "k1": self.k1,
            "b": self.b,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "merge_ratio": self.merge_ratio,
            "tombstone_ratio": self.tombstone_ratio,
            "max_deltas": self.max_deltas,
            "analyzer": self.analyzer.to_dict(),
            "terms": terms,
        }
        data = json.dumps(manifest, ensure_ascii=False).encode("utf-8")
        atomic_write(manifest_path, lambda f: f.write(data))
        if old and old.get("arrays") and old["arrays"] != arrays_name:
            (root / old["arrays"]).unlink(missing_ok=True)
        logger.info("saved BM25 index (%d docs, %d terms) to %s", seg.n_rows, len(terms), root)
        return manifest_path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BM25Index:
        """Read an index written by :meth:`save`."""
        root = Path(path)
        manifest_path = root / MANIFEST
        if not manifest_path.exists():
            raise NotFound(f"no BM25 index at {root} (missing {MANIFEST})")
        m = _read_manifest(manifest_path)
        if m.get("format") != FORMAT or m.get("version") != FORMAT_VERSION:
            raise InvalidInput(f"{manifest_path} is not a {FORMAT} v{FORMAT_VERSION} manifest")
        index = cls(
            analyzer=Analyzer.from_dict(m["analyzer"]),
            variant=m["variant"],
            k1=m["k1"],
            b=m["b"],
            epsilon=m["epsilon"],
            delta=m["delta"],
            merge_ratio=m["merge_ratio"],
            tombstone_ratio=m["tombstone_ratio"],
            max_deltas=m["max_deltas"],
        )
        terms: list[str] = m["terms"]
        with np.load(root / m["arrays"]) as z:
            ids, lengths = z["ids"], z["lengths"]
            csr = sp.csr_matrix((z["tf"], z["indices"], z["indptr"]), shape=(len(ids), len(terms)))
        seg = _Segment(ids, lengths, np.ones(len(ids), dtype=bool), csr, csr.tocsc())
        df = np.bincount(csr.indices, minlength=len(terms)).astype(np.int64)
        vocab = {t: i for i, t in enumerate(terms)}
        with index._lock:
            index._state = index._new_state(
                (seg,) if len(ids) else (), vocab, len(terms), df, float(lengths.sum())
            )
            index._where = {int(i): (0, r) for r, i in enumerate(ids.tolist())}
        return index


def _compacted(st: _State) -> tuple[_Segment, dict[str, int], np.ndarray]:
    """The live rows of ``st`` as one segment over a vocabulary without unused terms."""
    seg = _merge_segments(st.segments, st.n_terms)
    keep = st.df > 0
    if keep.all():
        return seg, st.vocab, st.df.copy()
    remap = np.cumsum(keep) - 1
    csr = sp.csr_matrix(
        (seg.csr.data, remap[seg.csr.indices].astype(np.int32), seg.csr.indptr),
        shape=(seg.n_rows, int(keep.sum())),
    )
    vocab = {t: int(remap[i]) for t, i in st.vocab.items() if i < st.n_terms and keep[i]}
    return replace(seg, csr=csr, csc=csr.tocsc()), vocab, st.df[keep].copy()


def _read_manifest(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
