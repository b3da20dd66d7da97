"""Segments of the BM25 index: runs of documents whose term frequencies are stored twice, as a CSR
matrix (docs x vocab, for deletes and merges) and a CSC matrix (for query-time column sums), with
the documents' lengths, their external int64 ids and an ``alive`` mask (tombstones).

Segments are immutable: a delete replaces a segment by a copy with a new mask, and merging builds a
new segment from the live rows of old ones. :func:`compact` also drops the terms no live document
uses, renumbering the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Segment:
    """Term frequencies of a run of documents; immutable except by replacement."""

    ids: np.ndarray  # (n,) int64 external ids
    lengths: np.ndarray  # (n,) float64 document lengths in terms
    alive: np.ndarray  # (n,) bool; False = tombstone
    csr: sp.csr_matrix  # (n, V_seg) float32 tf
    csc: sp.csc_matrix  # same matrix, column-major

    @property
    def n_rows(self) -> int:
        """Rows, tombstones included."""
        return len(self.ids)

    @property
    def n_dead(self) -> int:
        """Tombstoned rows."""
        return int(self.n_rows - np.count_nonzero(self.alive))


def segment_from_csr(ids: np.ndarray, lengths: np.ndarray, csr: sp.csr_matrix) -> Segment:
    """A segment of live documents from their ids, lengths and term-frequency matrix."""
    return Segment(ids, lengths, np.ones(len(ids), dtype=bool), csr, csr.tocsc())


def segment_from_tokens(ids: np.ndarray, term_ids: list[np.ndarray], n_terms: int) -> Segment:
    """A segment of the documents ``ids``, each given as the term ids of its tokens."""
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
    return segment_from_csr(ids, lengths.astype(np.float64), csr)


def merge_segments(segments: Sequence[Segment], n_terms: int) -> Segment:
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
    return segment_from_csr(ids_arr, np.concatenate(lengths) if lengths else np.zeros(0), csr)


def compact(
    segments: Sequence[Segment], vocab: dict[str, int], n_terms: int, df: np.ndarray
) -> tuple[Segment, dict[str, int], np.ndarray]:
    """The live rows of ``segments`` as one segment over a vocabulary without unused terms (those
    with ``df == 0``), with that vocabulary and its document frequencies. ``vocab`` may hold ids
    at or beyond ``n_terms`` (added by a writer after this state); they are left out."""
    seg = merge_segments(segments, n_terms)
    keep = df > 0
    if keep.all():
        return seg, vocab, df.copy()
    remap = np.cumsum(keep) - 1
    csr = sp.csr_matrix(
        (seg.csr.data, remap[seg.csr.indices].astype(np.int32), seg.csr.indptr),
        shape=(seg.n_rows, int(keep.sum())),
    )
    kept = {t: int(remap[i]) for t, i in vocab.items() if i < n_terms and keep[i]}
    return replace(seg, csr=csr, csc=csr.tocsc()), kept, df[keep].copy()
