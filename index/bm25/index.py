"""The incremental BM25 index over texts keyed by external int64 ids (chunk primary keys).

Incremental. ``add`` appends a delta segment (a re-added id first tombstones its old row);
``delete`` flips ``alive`` bits and decrements ``df``. Segments merge on thresholds: all of them
(dropping tombstones and unused terms) when delta rows exceed ``merge_ratio`` of the main segment
or tombstones exceed ``tombstone_ratio`` of all rows, and the deltas among themselves when there
are more than ``max_deltas`` of them.

Concurrency. Mutations are serialized by a lock and publish a new immutable
:class:`~index.bm25.snapshot.Snapshot`; searches read ``self._state`` once and work on that
snapshot without locking, so a search running during an add sees either the state before it or
after it, never a mixture.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common.errors import InvalidInput
from index.analyzer import Analyzer
from index.bm25.global_stats import ShardStats
from index.bm25.persistence import read_index, write_index
from index.bm25.scoring import DEFAULT_B, DEFAULT_K1, BM25Params, select_variant
from index.bm25.segments import Segment, compact, merge_segments, segment_from_tokens
from index.bm25.snapshot import Snapshot

logger = logging.getLogger(__name__)

IdsLike = set[int] | np.ndarray | Sequence[int]
"""What ``allowed_ids`` may be: a set, an array or a sequence of ids."""


def _as_id_array(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    """``ids`` as a flat int64 array; ``InvalidInput`` for non-integers."""
    if isinstance(ids, np.ndarray):
        arr = ids
    elif isinstance(ids, (set, frozenset)):
        arr = np.fromiter(ids, dtype=np.int64, count=len(ids))
    else:
        arr = np.asarray(list(ids))
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInput(f"ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False).reshape(-1)


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
    _state: Snapshot = field(init=False, repr=False)
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
        segments: Sequence[Segment],
        vocab: dict[str, int],
        n_terms: int,
        df: np.ndarray,
        total_len: float,
    ) -> Snapshot:
        """A snapshot with this index's variant and parameters."""
        return Snapshot(tuple(segments), vocab, n_terms, df, total_len, self._variant, self._params)

    # --- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._state.n_docs

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._where

    def ids(self) -> np.ndarray:
        """The live ids, ascending."""
        return self._state.live_ids()

    @property
    def n_segments(self) -> int:
        """How many segments the index holds now (main and deltas)."""
        return len(self._state.segments)

    def search(
        self, query: str, k: int = 10, allowed_ids: IdsLike | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best documents for ``query``: ``(ids int64, scores float32)``, best first
        (ties by ascending id). Only documents matching a query term with a positive score are
        returned, so there may be fewer than ``k``. ``allowed_ids`` restricts the candidates
        before the top-k cut (a metadata filter)."""
        if k <= 0:
            raise InvalidInput(f"k must be positive, got {k}")
        allowed = None if allowed_ids is None else _as_id_array(allowed_ids)
        return self._state.search_terms(self.analyzer(query), k, allowed)

    def search_batch(
        self, queries: Sequence[str], k: int = 10, allowed_ids: IdsLike | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search` for several queries against one snapshot (analysis batched)."""
        if k <= 0:
            raise InvalidInput(f"k must be positive, got {k}")
        allowed = None if allowed_ids is None else _as_id_array(allowed_ids)
        st = self._state
        return [st.search_terms(t, k, allowed) for t in self.analyzer.analyze_many(queries)]

    def score_all(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scores float64)`` of every live document, ids ascending; non-matching documents
        score 0 (bm25+'s per-query constant is added to matching ones only). For tests and
        diagnostics; :meth:`search` is the fast path."""
        st = self._state
        if not st.segments:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        scores, const = st.score_terms(self.analyzer(query))
        scores[scores > 0] += const
        live = np.ones(len(scores), dtype=bool)
        live[st.dead_rows] = False
        ids, scores = st.row_ids[live], scores[live]
        order = np.argsort(ids, kind="stable")
        return ids[order], scores[order]

    # --- a shard of a sharded index (index.shards) ----------------------------------------------

    def shard_stats(self) -> ShardStats:
        """This index's part of a sharded collection's global statistics."""
        st = self._state
        return ShardStats(st.n_docs, st.total_len, st.term_stats())

    def search_weighted(
        self,
        terms: Sequence[str],
        weights: np.ndarray,
        const: float,
        avgdl: float,
        k: int,
        allowed_ids: IdsLike | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` with the query's term weights, bm25+ constant and ``avgdl`` given (from
        a sharded collection's global statistics, :class:`~index.bm25.global_stats.GlobalStats`):
        ``(ids int64, scores float64)``, best first, ties by ascending id. Scores equal those of
        one index holding every shard's documents."""
        if k <= 0:
            raise InvalidInput(f"k must be positive, got {k}")
        st = self._state
        if not st.segments:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        allowed = None if allowed_ids is None else _as_id_array(allowed_ids)
        scores = st.score_weighted(terms, np.asarray(weights, dtype=np.float64), st.norms_at(avgdl))
        return st.top_rows(scores, const, k, allowed)

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
            seg = segment_from_tokens(id_arr.copy(), term_ids, n_terms)
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
        """The terms of each text, analyzed in batches (with a progress bar for big adds)."""
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
        """Tombstone the rows of ``id_arr`` and update the statistics; how many were live."""
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
        """Merge segments when the thresholds of the module docstring are crossed."""
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
            merged = merge_segments(deltas, st.n_terms)
            logger.debug("merged %d delta segments (%d rows)", len(deltas), merged.n_rows)
            self._publish_segments_locked((main, merged), st.vocab, st.n_terms, st.df)

    def _compact_locked(self) -> None:
        """Merge every segment into one, dropping tombstones and terms no live document uses."""
        st = self._state
        seg, vocab, df = compact(st.segments, st.vocab, st.n_terms, st.df)
        logger.debug(
            "compacted %d segments into %d rows, %d terms", len(st.segments), seg.n_rows, len(df)
        )
        self._publish_segments_locked((seg,) if seg.n_rows else (), vocab, len(df), df)

    def _publish_segments_locked(
        self, segments: Sequence[Segment], vocab: dict[str, int], n_terms: int, df: np.ndarray
    ) -> None:
        """Replace the segments (same live documents) and rebuild the id -> row map."""
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
        """Write the index into directory ``path`` (created if needed), compacted, as
        ``index.bm25.persistence`` describes; a crash leaves the previous save readable. Returns
        the manifest path."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        with self._lock:  # adds extend the shared vocabulary in place
            st = self._state
            seg, vocab, df = compact(st.segments, st.vocab, st.n_terms, st.df)
            vocab = dict(vocab)
        terms = [""] * len(vocab)
        for t, i in vocab.items():
            terms[i] = t
        config = {
            "variant": self.variant,
            "k1": self.k1,
            "b": self.b,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "merge_ratio": self.merge_ratio,
            "tombstone_ratio": self.tombstone_ratio,
            "max_deltas": self.max_deltas,
            "analyzer": self.analyzer.to_dict(),
        }
        manifest_path = write_index(root, seg, terms, config)
        logger.info("saved BM25 index (%d docs, %d terms) to %s", seg.n_rows, len(terms), root)
        return manifest_path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BM25Index:
        """Read an index written by :meth:`save`."""
        m, seg, terms = read_index(Path(path))
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
        df = np.bincount(seg.csr.indices, minlength=len(terms)).astype(np.int64)
        vocab = {t: i for i, t in enumerate(terms)}
        with index._lock:
            index._state = index._new_state(
                (seg,) if seg.n_rows else (), vocab, len(terms), df, float(seg.lengths.sum())
            )
            index._where = {int(i): (0, r) for r, i in enumerate(seg.ids.tolist())}
        return index
