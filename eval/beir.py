"""BEIR data contract: load a dataset folder, and read/write runs in TREC format.

A BEIR folder holds ``corpus.jsonl`` (``{"_id", "title", "text", "metadata"?}`` per line),
``queries.jsonl`` (``{"_id", "text"}``) and ``qrels/<split>.tsv`` (a ``query-id corpus-id score``
header, then tab-separated rows). Runs are ``{qid: {doc_id: score}}`` as everywhere in ``eval``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import InvalidInput, NotFound
from eval.metrics import rank_docs
from eval.report import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["BeirDataset", "doc_text", "load_beir", "read_qrels", "read_run", "write_run"]


@dataclass
class BeirDataset:
    """One split of a BEIR dataset, held in memory.

    ``corpus`` maps doc id -> ``{"title": str, "text": str, "metadata": dict}``; ``queries`` holds
    only the queries judged in this split's qrels; ``qrels`` keep relevance-0 judgments (they
    count as non-relevant in ``eval.metrics``).
    """

    corpus: dict[str, dict[str, Any]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str
    split: str
    path: Path | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return (
            f"BeirDataset(name={self.name!r}, split={self.split!r}, docs={len(self.corpus)}, "
            f"queries={len(self.queries)}, judgments={sum(len(d) for d in self.qrels.values())})"
        )


def doc_text(doc: Mapping[str, Any]) -> str:
    """The text dense models embed for a corpus entry: ``title + " " + text``, stripped (BEIR)."""
    title = doc.get("title") or ""
    text = doc.get("text") or ""
    return f"{title} {text}".strip()


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line, streaming; InvalidInput names file:line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path}:{lineno}: malformed JSON: {exc.msg}") from exc
            if not isinstance(obj, dict):
                raise InvalidInput(
                    f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def _record_id(obj: Mapping[str, Any], path: Path, lineno: int) -> str:
    raw = obj.get("_id")
    if raw is None or isinstance(raw, (dict, list, bool)) or str(raw) == "":
        raise InvalidInput(f"{path}:{lineno}: missing or invalid '_id'")
    return str(raw)


def _text_field(obj: Mapping[str, Any], key: str, path: Path, lineno: int) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{path}:{lineno}: '{key}' must be a string, got {type(value).__name__}")
    return value


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise NotFound(f"BEIR {what} not found: {path}")
    return path


def read_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (optional header, then ``query-id<TAB>corpus-id<TAB>score``).

    Also accepts TREC qrels (``qid 0 docid rel``, whitespace-separated). A repeated pair keeps its
    last score, as BEIR does.
    """
    path = _require_file(Path(path), "qrels file")
    qrels: dict[str, dict[str, int]] = {}
    first = True
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            is_first, first = first, False
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 3:
                parts = line.split()
            if len(parts) == 4:  # TREC: qid iteration docid rel
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise InvalidInput(
                    f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score', got {line.rstrip()!r}"
                )
            qid, doc_id, score = (p.strip() for p in parts)
            try:
                rel = int(score)
            except ValueError:
                if is_first:  # the header line
                    continue
                raise InvalidInput(
                    f"{path}:{lineno}: relevance {score!r} is not an integer"
                ) from None
            if not qid or not doc_id:
                raise InvalidInput(f"{path}:{lineno}: empty query or corpus id")
            qrels.setdefault(qid, {})[doc_id] = rel
    return qrels


def load_beir(
    path: str | os.PathLike[str], split: str = "test", *, name: str | None = None
) -> BeirDataset:
    """Load one split of a BEIR folder.

    Reads the qrels first, then streams ``queries.jsonl`` keeping only judged queries, then
    streams ``corpus.jsonl``. Raises NotFound (with the path) for a missing folder, file or
    split, and InvalidInput (with ``file:line``) for malformed lines or qrels naming a query
    that ``queries.jsonl`` lacks. ``name`` defaults to the folder name.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotFound(f"BEIR dataset folder not found: {root}")
    corpus_path = _require_file(root / "corpus.jsonl", "corpus")
    queries_path = _require_file(root / "queries.jsonl", "queries")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = (
            sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
            if (root / "qrels").is_dir()
            else []
        )
        raise NotFound(
            f"BEIR split {split!r} not found: {qrels_path} (available: {available or 'none'})"
        )

    qrels = read_qrels(qrels_path)

    queries: dict[str, str] = {}
    for lineno, obj in _iter_jsonl(queries_path):
        qid = _record_id(obj, queries_path, lineno)
        if qid in qrels:
            queries[qid] = _text_field(obj, "text", queries_path, lineno)
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        raise InvalidInput(
            f"{qrels_path}: {len(missing)} judged queries are not in {queries_path}, e.g. {missing[:5]}"
        )
    queries = {qid: queries[qid] for qid in qrels}  # qrels order, like BEIR

    corpus: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for lineno, obj in _iter_jsonl(corpus_path):
        doc_id = _record_id(obj, corpus_path, lineno)
        metadata = obj.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise InvalidInput(f"{corpus_path}:{lineno}: 'metadata' must be an object")
        duplicates += doc_id in corpus
        corpus[doc_id] = {
            "title": _text_field(obj, "title", corpus_path, lineno),
            "text": _text_field(obj, "text", corpus_path, lineno),
            "metadata": metadata,
        }
    if duplicates:
        logger.warning(
            "%s: %d repeated document ids; the last occurrence was kept", corpus_path, duplicates
        )
    unknown = sum(1 for docs in qrels.values() for d in docs if d not in corpus)
    if unknown:
        logger.warning(
            "%s: %d judgments name documents missing from the corpus", qrels_path, unknown
        )

    dataset = BeirDataset(
        corpus=corpus, queries=queries, qrels=qrels, name=name or root.name, split=split, path=root
    )
    logger.info("loaded %r", dataset)
    return dataset


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
    path = _require_file(Path(path), "run file")
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
