"""A collection's settings: the keys a user may set, their checks, and the defaults filled in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.errors import InvalidInput
from index.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS
from index.collection import IndexSettings
from index.shards import MAX_SHARDS
from retriever.hybrid import SearchSettings
from retriever.rerank import RerankSettings

COLLECTION_SETTING_KEYS = frozenset({
    "encoder", "chunk_tokens", "chunk_overlap", "bm25_variant", "bm25_k1", "bm25_b", "dense_kind",
    "fusion", "rrf_k", "weights", "depth", "generator", "rerank", "shards",
})


def validate_collection_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check user-given collection settings and fill the chunking defaults. Raises InvalidInput."""
    s = dict(settings or {})
    unknown = set(s) - COLLECTION_SETTING_KEYS
    if unknown:
        raise InvalidInput(f"unknown collection settings {sorted(unknown)}; known: {sorted(COLLECTION_SETTING_KEYS)}")
    s.setdefault("chunk_tokens", DEFAULT_CHUNK_TOKENS)
    s.setdefault("chunk_overlap", DEFAULT_CHUNK_OVERLAP)
    for key in ("chunk_tokens", "chunk_overlap"):
        if not isinstance(s[key], int) or isinstance(s[key], bool):
            raise InvalidInput(f"{key} must be an integer")
    if not 16 <= s["chunk_tokens"] <= 510:
        raise InvalidInput("chunk_tokens must be between 16 and 510")
    if not 0 <= s["chunk_overlap"] < s["chunk_tokens"]:
        raise InvalidInput("chunk_overlap must be >= 0 and smaller than chunk_tokens")
    if "generator" in s and (not isinstance(s["generator"], str) or not s["generator"].strip()):
        raise InvalidInput("generator must be a generator name such as extractive, generative, attend-qa or smollm2")
    if s.get("rerank") is None:  # null: no default rerank, the same as leaving it out
        s.pop("rerank", None)
    else:  # the searches' default rerank, {"model", "depth"} (depth filled in)
        s["rerank"] = RerankSettings.from_mapping(s["rerank"]).to_dict()
    if "shards" in s:  # split the indexes over N shards by document id (index.shards)
        n = s["shards"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_SHARDS:
            raise InvalidInput(f"shards must be an integer between 1 and {MAX_SHARDS}, got {n!r}")
    SearchSettings.from_settings(s)  # validates fusion, depth, weights
    IndexSettings.from_settings(s)
    return s
