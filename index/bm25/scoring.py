"""BM25 scoring: the free parameters and the variants, each a pair of small pure functions.

A variant scores ``sum_t idf(t) * tfc(tf(t, d), norm(d))``; the index turns stored term
frequencies into weights at query time, so these functions see the current ``N``, ``df`` and
``avgdl``. Variants (:func:`select_variant`; ``InvalidInput``, a ``ValueError``, on unknown names):
``lucene`` (bm25s's default), ``robertson``/``okapi`` (rank_bm25's ``BM25Okapi``, with its
epsilon floor for negative idf), ``bm25+`` (rank_bm25's ``BM25Plus`` / bm25s's ``bm25+``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from common.errors import InvalidInput

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
