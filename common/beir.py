"""The BEIR data contract: reading a dataset folder (the one reader the trainers and the benchmarks
share).

A BEIR folder holds ``corpus.jsonl`` (``{"_id", "title", "text", "metadata"?}`` per line),
``queries.jsonl`` (``{"_id", "text"}``) and ``qrels/<split>.tsv`` (a ``query-id corpus-id score``
header, then tab-separated rows).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

OnError = Callable[[int, InvalidInput], None]  # (line number, what is wrong with it)

__all__ = [
    "BeirDataset",
    "iter_corpus",
    "iter_jsonl",
    "load_beir",
    "read_qrels",
]


@dataclass
class BeirDataset:
    """One split of a BEIR dataset, held in memory.

    ``corpus`` maps doc id -> ``{"title": str, "text": str, "metadata": dict}``; ``queries`` holds
    only the queries judged in this split's qrels; ``qrels`` keep relevance-0 judgments (they
    count as non-relevant in the metrics).
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


def iter_jsonl(
    path: str | os.PathLike[str], *, on_error: OnError | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line, streaming. A malformed line raises
    InvalidInput naming file:line, or, with ``on_error``, is handed to it and skipped."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInput(f"{path}:{lineno}: malformed JSON: {exc.msg}") from exc
                if not isinstance(obj, dict):
                    raise InvalidInput(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            except InvalidInput as exc:
                if on_error is None:
                    raise
                on_error(lineno, exc)
                continue
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


def iter_corpus(
    path: str | os.PathLike[str], *, on_error: OnError | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(doc id, {"title", "text", "metadata"})`` per record of a ``corpus.jsonl``, streaming, in
    file order (a repeated id comes again). A bad record raises InvalidInput naming file:line, or,
    with ``on_error(line number, error)``, is reported to it and skipped."""
    path = Path(path)
    for lineno, obj in iter_jsonl(path, on_error=on_error):
        try:
            doc_id = _record_id(obj, path, lineno)
            metadata = obj.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise InvalidInput(f"{path}:{lineno}: 'metadata' must be an object")
            record = {
                "title": _text_field(obj, "title", path, lineno),
                "text": _text_field(obj, "text", path, lineno),
                "metadata": metadata,
            }
        except InvalidInput as exc:
            if on_error is None:
                raise
            on_error(lineno, exc)
            continue
        yield doc_id, record


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
    for lineno, obj in iter_jsonl(queries_path):
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
    for doc_id, record in iter_corpus(corpus_path):
        duplicates += doc_id in corpus
        corpus[doc_id] = record
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


def squad_as_beir(path: str | os.PathLike[str], *, seed: int = 0) -> BeirDataset:
    """A SQuAD file (v1.1 or v2.0) as a BEIR retrieval split: every paragraph is a document (id
    ``"<article>-<paragraph>"``, title = its article's), every answerable question a query judged
    relevant (1) to its own paragraph only; unanswerable questions are left out. Queries follow
    ``common.squad.sample_questions`` (round-robin over the articles, shuffled with ``seed``), so the
    first N of them spread over the whole file. Split name ``"squad"``; name ``squad-<file stem>``."""
    from common.squad import load_squad, sample_questions, squad_documents

    file = Path(path)
    if not file.is_file():
        raise NotFound(f"SQuAD file not found: {file}")
    examples = load_squad(file)
    corpus = {d["id"]: {"title": d["title"], "text": d["text"], "metadata": {}} for d in squad_documents(examples)}
    answerable = [e for e in sample_questions(examples, None, seed) if not e.is_impossible and e.answers]
    if not answerable:
        raise InvalidInput(f"{file}: no answerable question to use as a query")
    queries = {e.qid: e.question for e in answerable}
    qrels = {e.qid: {e.paragraph_id: 1} for e in answerable}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, name=f"squad-{file.stem}", split="squad", path=file)


def load_retrieval_set(path: str | os.PathLike[str], split: str = "test") -> BeirDataset:
    """A BEIR folder's ``split`` (:func:`load_beir`), or a SQuAD ``.json`` file read as one
    (:func:`squad_as_beir`; ``split`` does not apply)."""
    from common.squad import is_squad_file

    if is_squad_file(path):
        return squad_as_beir(path)
    return load_beir(path, split)
