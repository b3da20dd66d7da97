"""The engine behind the API and the CLI: one store, the encoders, and per-collection indexes.

Both front ends call these methods, so indexing through ``attend index`` and through
``POST /v1/collections/{c}/documents`` take the same path: validate each document, chunk by encoder
tokens, embed, write documents + chunks + embeddings to the store in one transaction
(acknowledged only then), then update BM25 and FAISS. At start the indexes are loaded from their
files and reconciled with the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import CollectionUnusable, InvalidInput
from index.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, Chunker
from index.collection import CollectionIndex, IndexSettings, index_text
from index.models import CollectionInfo, DocumentInput, PreparedChunks, printable_id
from index.store import Store
from retriever.hybrid import SearchResult, SearchSettings, search

logger = logging.getLogger(__name__)


def _is_generative(name: str) -> bool:
    from generator.chat_model import is_generative

    return is_generative(name)

COLLECTION_SETTING_KEYS = {
    "encoder", "chunk_tokens", "chunk_overlap", "bm25_variant", "bm25_k1", "bm25_b", "dense_kind",
    "fusion", "rrf_k", "weights", "depth", "generator",
}
EXTRACTIVE = "extractive"  # the extractive generator the engine is configured with (attend-qa)
GENERATIVE = "generative"  # the generative (chat) model the engine is configured with (smollm2)
DEFAULT_EXTRACTIVE = "attend-qa"
DEFAULT_GENERATIVE = "smollm2"


@dataclass
class DocumentOutcome:
    """What happened to one submitted document: ``inserted``, ``updated``, ``unchanged`` or
    ``failed`` (with ``error``)."""

    doc_id: str
    status: str
    chunks: int = 0
    error: str | None = None


@dataclass
class IngestReport:
    outcomes: list[DocumentOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[DocumentOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out


def validate_collection_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check user-given collection settings; fill defaults. Raises InvalidInput."""
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
    SearchSettings.from_settings(s)  # validates fusion, depth, weights
    IndexSettings.from_settings(s)
    return s


class Engine:
    """Store + encoders + indexes. Thread-safe: many searches run while one ingestion writes."""

    def __init__(
        self,
        store: Store,
        *,
        data_dir: Path | None = None,
        encoder: str = "all-MiniLM-L6-v2",
        device: str = "auto",
        encoder_precision: str = "auto",
        encoder_loader: Callable[[str], Any] | None = None,
        generator: str | None = DEFAULT_EXTRACTIVE,
        answerer: Any = None,
        generative: str = DEFAULT_GENERATIVE,
        generator_quant: str = "auto",
    ) -> None:
        self.store = store
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.default_encoder = encoder
        self.device = device
        self.encoder_precision = encoder_precision
        self._encoder_loader = encoder_loader
        self._indexes: dict[str, CollectionIndex] = {}
        self._lock = threading.RLock()
        self.generator_name = generator
        self.generator_quant = generator_quant
        gen_default = bool(generator) and _is_generative(generator)  # type: ignore[arg-type]
        self.extractive_name = DEFAULT_EXTRACTIVE if gen_default or not generator else generator
        self.generative_name = generator if gen_default else generative
        self._answerers: dict[str, Any] = {}
        if answerer is not None:
            self._answerers[generator or DEFAULT_EXTRACTIVE] = answerer

    # --- models ------------------------------------------------------------------------------

    def encoder(self, name: str | None = None):
        """The (cached) sentence encoder called ``name`` (the engine default when None)."""
        name = name or self.default_encoder
        if self._encoder_loader is not None:
            return self._encoder_loader(name)
        from retriever.embedder import load_encoder

        device = None if self.device == "auto" else self.device
        return load_encoder(name, device=device, precision=self.encoder_precision)

    def generator_choices(self) -> list[str]:
        """The generator names a request or a collection may ask for."""
        names = [EXTRACTIVE, GENERATIVE, DEFAULT_EXTRACTIVE, DEFAULT_GENERATIVE, self.extractive_name, self.generative_name]
        if self.generator_name:
            names.append(self.generator_name)
        return list(dict.fromkeys(names))

    def resolve_generator(self, name: str | None = None, collection: str | None = None) -> str:
        """The generator to answer with: ``name`` when given, else the collection's ``generator``
        setting, else the engine default. ``extractive`` and ``generative`` stand for the configured
        models of each kind; other names must be among :meth:`generator_choices` (a request cannot
        make the server load an arbitrary path)."""
        if name is None and collection is not None:
            name = self.store.get_collection(collection).settings.get("generator")
        if name is None:
            if not self.generator_name:
                raise InvalidInput("no generator is configured")
            return self.generator_name
        if name == EXTRACTIVE:
            return self.extractive_name
        if name == GENERATIVE:
            return self.generative_name
        if name not in self.generator_choices():
            raise InvalidInput(f"unknown generator {name!r}; choose one of {self.generator_choices()}")
        return name

    def answerer(self, name: str | None = None):
        """The generator called ``name`` (see :meth:`resolve_generator`; the default when None),
        loaded on first use: an extractive ``Answerer`` or a ``GenerativeAnswerer`` whose verifier
        reads with the extractive model when that loads."""
        key = self.resolve_generator(name)
        found = self._answerers.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._answerers.get(key)
            if found is None:
                device = None if self.device == "auto" else self.device
                if _is_generative(key):
                    from generator.generative import GenerativeAnswerer

                    found = GenerativeAnswerer.load(key, device=device, reader=self._reader(), quantize=self.generator_quant)
                else:
                    from generator.answer import Answerer

                    found = Answerer.load(key, device=device)
                self._answerers[key] = found
        return found

    def _reader(self):
        """The extractive model a generative answer's verifier reads with; None (token overlap
        only) when it cannot be loaded."""
        from common.errors import CheckpointError, MissingDependency

        try:
            reader = self.answerer(self.extractive_name)
        except (CheckpointError, MissingDependency, InvalidInput) as exc:
            logger.warning("the verifier runs on token overlap only: %s", exc)
            return None
        return reader if getattr(reader, "kind", "extractive") == "extractive" else None

    def _collection_encoder(self, info: CollectionInfo):
        return self.encoder(info.settings.get("encoder"))

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Load and reconcile the indexes of every collection."""
        for info in self.store.list_collections():
            try:
                self._index(info.name)
            except CollectionUnusable as exc:  # the others still open; requests to it get 409
                logger.error("%s", exc)

    def close(self) -> None:
        """Save every index (the store needs nothing: it is always durable)."""
        with self._lock:
            for idx in self._indexes.values():
                try:
                    idx.save()
                except Exception:  # saving is an optimisation; the store stays the truth
                    logger.exception("could not save the indexes of %s", idx.name)

    def _index_root(self, name: str) -> Path | None:
        return self.data_dir / "indexes" / name if self.data_dir is not None else None

    def _index(self, name: str) -> CollectionIndex:
        idx = self._indexes.get(name)
        if idx is not None:
            return idx
        with self._lock:
            idx = self._indexes.get(name)
            if idx is not None:
                return idx
            info = self.store.get_collection(name)
            try:
                validate_collection_settings(info.settings)
            except InvalidInput as exc:
                raise CollectionUnusable(name, str(exc)) from None
            enc = self._collection_encoder(info)
            idx = CollectionIndex(name, enc.dim, IndexSettings.from_settings(info.settings), self._index_root(name), self._faiss_device())
            loaded = idx.try_load()
            stats = idx.reconcile(self.store, encode=enc.encode)
            if stats["added"] or stats["removed"] or not loaded:
                idx.save()
            self._indexes[name] = idx
            return idx

    def _faiss_device(self) -> str:
        return "auto" if self.device == "auto" else ("cuda" if self.device.startswith("cuda") else "cpu")

    # --- collections -------------------------------------------------------------------------

    def create_collection(self, name: str, settings: Mapping[str, Any] | None = None) -> CollectionInfo:
        s = validate_collection_settings(settings)
        if "generator" in s:
            self.resolve_generator(s["generator"])  # a known name, or 422 now
        s.setdefault("encoder", self.default_encoder)
        self.encoder(s["encoder"])  # fail now, not at the first document, if it cannot load
        info = self.store.create_collection(name, s)
        self._index(name)
        return info

    def list_collections(self) -> list[CollectionInfo]:
        return self.store.list_collections()

    def get_collection(self, name: str) -> CollectionInfo:
        return self.store.get_collection(name)

    def delete_collection(self, name: str) -> None:
        self.store.delete_collection(name)
        with self._lock:
            idx = self._indexes.pop(name, None)
        if idx is not None:
            idx.drop_files()
        elif (root := self._index_root(name)) is not None and root.exists():
            import shutil

            shutil.rmtree(root, ignore_errors=True)

    def collection_stats(self, name: str) -> dict[str, Any]:
        st = self.store.collection_stats(name)
        idx = self._index(name)
        return {
            "documents": st.documents,
            "chunks": st.chunks,
            "tokens": st.tokens,
            "bm25_chunks": len(idx.bm25),
            "dense_chunks": len(idx.dense),
            "dense_kind": idx.dense.active_kind,
        }

    # --- documents ---------------------------------------------------------------------------

    def _chunker(self, info: CollectionInfo) -> Chunker:
        enc = self._collection_encoder(info)
        return Chunker(enc.tokenizer, max_tokens=info.settings.get("chunk_tokens", DEFAULT_CHUNK_TOKENS),
                       overlap=info.settings.get("chunk_overlap", DEFAULT_CHUNK_OVERLAP))

    def upsert_documents(
        self,
        collection: str,
        docs: Sequence[Mapping[str, Any] | DocumentInput],
        *,
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Validate, chunk, embed and store ``docs`` (dicts with ``id``, ``text``, optional
        ``title`` and ``metadata``, or ``DocumentInput``). A document that fails validation is
        reported and the others still go in. Each batch of ``batch_size`` is one store transaction
        and is searchable when this returns (or, after a crash, once the engine restarts)."""
        t0 = time.perf_counter()
        info = self.store.get_collection(collection)
        idx = self._index(collection)
        enc = self._collection_encoder(info)
        chunker = self._chunker(info)
        report = IngestReport()
        valid: list[tuple[int, DocumentInput]] = []
        seen: dict[str, int] = {}
        for d in docs:
            try:
                doc = DocumentInput.parse(d)
                if doc.external_id in seen:  # the last copy in a batch wins, as in a sequence of upserts
                    report.outcomes[seen[doc.external_id]] = DocumentOutcome(doc.external_id, "failed", error="superseded by a later copy in the same batch")
                    valid = [(i, v) for i, v in valid if v.external_id != doc.external_id]
                seen[doc.external_id] = len(report.outcomes)
                valid.append((len(report.outcomes), doc))
                report.outcomes.append(DocumentOutcome(doc.external_id, "pending"))
            except (InvalidInput, TypeError, ValueError) as exc:
                doc_id = printable_id(d.get("id", "?")) if isinstance(d, Mapping) else "?"
                report.outcomes.append(DocumentOutcome(doc_id, "failed", error=str(exc)))
        for start in range(0, len(valid), batch_size):
            batch = valid[start : start + batch_size]
            self._ingest_batch(collection, idx, enc, chunker, batch, report)
            if progress is not None:
                progress(len(batch))
        report.seconds = time.perf_counter() - t0
        return report

    def _ingest_batch(self, collection, idx: CollectionIndex, enc, chunker: Chunker, batch, report: IngestReport) -> None:
        docs = [d for _, d in batch]
        changed = self.store.changed_documents(collection, docs)
        changed_ids = {d.external_id for d in changed}
        prepared: dict[str, PreparedChunks] = {}
        if changed:
            chunk_lists = chunker.chunk_batch([d.text for d in changed])
            texts = [index_text(d.title, c.text) for d, cl in zip(changed, chunk_lists, strict=True) for c in cl]
            vecs = enc.encode(texts) if texts else np.zeros((0, enc.dim), np.float32)
            pos = 0
            for d, cl in zip(changed, chunk_lists, strict=True):
                prepared[d.external_id] = PreparedChunks(cl, vecs[pos : pos + len(cl)])
                pos += len(cl)
        results = self.store.upsert_documents(collection, docs, prepared)
        add_ids: list[int] = []
        add_texts: list[str] = []
        add_vecs: list[np.ndarray] = []
        removed: list[int] = []
        for (slot, d), r in zip(batch, results, strict=True):
            report.outcomes[slot] = DocumentOutcome(d.external_id, r.status, chunks=len(r.chunk_ids))
            removed.extend(r.removed_chunk_ids)
            if r.added_chunk_ids and d.external_id in changed_ids:
                pc = prepared[d.external_id]
                add_ids.extend(r.added_chunk_ids)
                add_texts.extend(index_text(d.title, c.text) for c in pc.chunks)
                add_vecs.append(pc.embeddings)
        with idx.lock:
            idx.remove(np.asarray(removed, dtype=np.int64))
            if add_ids:
                idx.add(np.asarray(add_ids, dtype=np.int64), add_texts, np.concatenate(add_vecs).astype(np.float32))

    def delete_document(self, collection: str, doc_id: str) -> int:
        idx = self._index(collection)
        removed = self.store.delete_document(collection, doc_id)
        idx.remove(np.asarray(removed, dtype=np.int64))
        return len(removed)

    def get_document(self, collection: str, doc_id: str):
        return self.store.get_document(collection, doc_id)

    def list_documents(self, collection: str, *, offset: int = 0, limit: int = 100):
        """Documents in insertion order, paged (``Store.list_documents``)."""
        return self.store.list_documents(collection, offset=offset, limit=limit)

    # --- search ------------------------------------------------------------------------------

    def search(
        self,
        collection: str,
        query: str,
        *,
        k: int = 10,
        mode: str = "hybrid",
        filters: Mapping[str, Any] | None = None,
        settings: SearchSettings | None = None,
    ) -> SearchResult:
        info = self.store.get_collection(collection)
        idx = self._index(collection)
        enc = self._collection_encoder(info)
        return search(
            idx, self.store, enc.encode, query, k=k, mode=mode, filters=filters,
            settings=settings or SearchSettings.from_settings(info.settings),
        )

    def answer(
        self,
        collection: str,
        question: str,
        *,
        k: int = 8,
        budget: int = 512,
        mode: str = "hybrid",
        filters: Mapping[str, Any] | None = None,
        score_floor: float | None = None,
        dedup_threshold: float = 0.9,
        abstain_threshold: float | None = None,
        generator: str | None = None,
        abstain_unsupported: bool = False,
    ):
        """Retrieve, filter into ``budget`` tokens and generate a cited answer or abstain.
        ``generator``: see :meth:`resolve_generator`. Returns ``(SearchResult, AnswerResult)``."""
        found, stream = self.answer_stream(
            collection, question, k=k, budget=budget, mode=mode, filters=filters, score_floor=score_floor,
            dedup_threshold=dedup_threshold, abstain_threshold=abstain_threshold, generator=generator,
            abstain_unsupported=abstain_unsupported,
        )
        return found, stream.collect()

    def answer_stream(
        self,
        collection: str,
        question: str,
        *,
        k: int = 8,
        budget: int = 512,
        mode: str = "hybrid",
        filters: Mapping[str, Any] | None = None,
        score_floor: float | None = None,
        dedup_threshold: float = 0.9,
        abstain_threshold: float | None = None,
        generator: str | None = None,
        abstain_unsupported: bool = False,
    ):
        """:meth:`answer` as ``(SearchResult, AnswerStream)``: retrieval, the context filter and the
        prompt are done (so bad input has already failed); iterating the stream generates the
        answer's text pieces, and its ``result`` is the ``AnswerResult``."""
        name = self.resolve_generator(generator, collection)
        self._check_budget(budget, name)
        found = self.search(collection, question, k=k, mode=mode, filters=filters)
        stream = self._start_answer(
            question, found, name, budget=budget, score_floor=score_floor, dedup_threshold=dedup_threshold,
            abstain_threshold=abstain_threshold, abstain_unsupported=abstain_unsupported,
        )
        return found, stream

    def _check_budget(self, budget: int, generator: str | None = None) -> None:
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise InvalidInput("budget must be an integer number of tokens")
        max_context = self.answerer(generator).max_context
        if budget > max_context:
            raise InvalidInput(f"budget {budget} exceeds the generator's context window of {max_context} tokens")

    def answer_from_search(
        self,
        question: str,
        found: SearchResult,
        *,
        budget: int = 512,
        score_floor: float | None = None,
        dedup_threshold: float = 0.9,
        abstain_threshold: float | None = None,
        generator: str | None = None,
        abstain_unsupported: bool = False,
    ):
        """The second half of :meth:`answer`: filter the hits of one search into ``budget`` tokens
        and generate, so a benchmark can reuse one retrieval across budgets. Returns an
        ``AnswerResult`` whose ``timings_ms`` include the search's ``retrieval_ms``."""
        name = self.resolve_generator(generator)
        self._check_budget(budget, name)
        return self._start_answer(
            question, found, name, budget=budget, score_floor=score_floor, dedup_threshold=dedup_threshold,
            abstain_threshold=abstain_threshold, abstain_unsupported=abstain_unsupported,
        ).collect()

    def _start_answer(self, question: str, found: SearchResult, name: str, *, budget: int, score_floor: float | None,
                      dedup_threshold: float, abstain_threshold: float | None, abstain_unsupported: bool):
        from generator.answer import candidates_from_hits
        from generator.context import ContextFilter

        answerer = self.answerer(name)
        cf = ContextFilter(score_floor=score_floor, dedup_threshold=dedup_threshold, answer_reserve=answerer.answer_reserve)
        kwargs: dict[str, Any] = {"budget": budget, "context_filter": cf, "abstain_threshold": abstain_threshold}
        if getattr(answerer, "kind", "extractive") == "generative":
            kwargs["abstain_unsupported"] = abstain_unsupported
        retrieval_ms = found.timings_ms.get("total_ms", 0.0)

        def add_retrieval(result) -> None:
            result.timings_ms = {"retrieval_ms": retrieval_ms, **result.timings_ms}

        return answerer.start(question, candidates_from_hits(found.hits), **kwargs).on_finish(add_retrieval)

    def save(self, collection: str | None = None) -> None:
        """Save index files (all collections when None)."""
        with self._lock:
            targets = [self._indexes[collection]] if collection else list(self._indexes.values())
        for idx in targets:
            idx.save()

