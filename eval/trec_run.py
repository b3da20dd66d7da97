"""Runs in TREC format: write a run file and read one back. Runs are ``{qid: {doc_id: score}}`` as
everywhere in ``eval``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from common.atomic import atomic_write_text
from common.errors import InvalidInput, NotFound
from eval.metrics import rank_docs

__all__ = ["read_run", "write_run"]


def write_run(
    run: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike[str],
    *,
    tag: str = "attend",
    depth: int | None = None,
) -> Path:
    """Write a run in TREC format (``qid Q0 docid rank score tag``), atomically.

    Queries in sorted order, documents ranked as ``eval.metrics`` ranks them (score descending,
    ties by doc id descending); ``depth`` keeps the top ``depth`` per query. Ids must not contain
    whitespace. Returns the path.
    """
    if depth is not None and depth < 1:
        raise InvalidInput(f"depth must be a positive integer or None, got {depth!r}")
    if not tag or any(c.isspace() for c in tag):
        raise InvalidInput(f"run tag must be a non-empty word, got {tag!r}")
    lines: list[str] = []
    for qid in sorted(run):
        scores = run[qid]
        for rank, doc_id in enumerate(rank_docs(scores)[:depth], start=1):
            for ident in (qid, doc_id):
                if not ident or any(c.isspace() for c in ident):
                    raise InvalidInput(
                        f"id {ident!r} is empty or holds whitespace; TREC runs cannot hold it"
                    )
            lines.append(f"{qid} Q0 {doc_id} {rank} {float(scores[doc_id])!r} {tag}\n")
    return atomic_write_text(path, "".join(lines))


def read_run(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Read a TREC-format run (``qid Q0 docid rank score tag``) into ``{qid: {doc_id: score}}``.

    The rank column is ignored (metrics rank by score). A repeated (qid, docid) pair is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"BEIR run file not found: {path}")
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise InvalidInput(
                    f"{path}:{lineno}: expected 'qid Q0 docid rank score tag', got {line.rstrip()!r}"
                )
            qid, _, doc_id, _, score, _ = parts
            try:
                value = float(score)
            except ValueError:
                raise InvalidInput(f"{path}:{lineno}: score {score!r} is not a number") from None
            docs = run.setdefault(qid, {})
            if doc_id in docs:
                raise InvalidInput(
                    f"{path}:{lineno}: document {doc_id!r} repeated for query {qid!r}"
                )
            docs[doc_id] = value
    return run
