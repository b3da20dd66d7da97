"""The engine: the one door from the front ends (CLI, API, benchmarks) into the core.

It owns the store (and closes it), the encoders, the per-collection indexes, the rerankers and the
generators.
Indexing through ``attend index`` and through ``POST /v1/collections/{c}/documents`` take the same
path (``engine.ingest``); at start the indexes are loaded from their files and reconciled with the
store. Thread-safe: many searches run while one ingestion writes.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import CollectionUnusable, DocumentNotFound, InvalidInput
from engine.collections import validate_collection_settings
from engine.generators import Generators
from engine.ingest import IngestReport, chunker_for, ingest_batch, parse_documents
from engine.protocols import Answerer, AnswerStream, Encoder, Store
from engine.rerankers import Rerankers, RerankOption, choose_rerank
from index.chunking import Chunker
from index.collection import CollectionIndex, IndexSettings
from index.records import CollectionInfo, DocumentInput, DocumentRecord, JobInfo, PreparedChunks
from index.shards import ShardedCollectionIndex, ShardFactory, local_shards
from retriever.hybrid import SearchResult, SearchSettings, search
from retriever.rerank import rerank_hits

if TYPE_CHECKING:
    from generator.answer import AnswerResult
    from generator.diagnosis import Diagnosis

logger = logging.getLogger(__name__)

SHARD_BACKENDS = ("auto", "local", "ray")


class Engine:
    """Store + encoders + indexes + rerankers + generators, behind one set of methods.
    ``reranker``: the reranker the server is configured with, beside those under ``models/``."""

    def __init__(
        self,
        store: Store,
        *,
        data_dir: Path | None = None,
        encoder: str = "all-MiniLM-L6-v2",
        device: str = "auto",
        encoder_precision: str = "auto",
        encoder_loader: Callable[[str], Encoder] | None = None,
        generator: str | None = "attend-qa",
        answerer: Answerer | None = None,
        generative: str = "smollm2",
        generator_quant: str = "auto",
        reranker: str | None = None,
        shard_backend: str = "auto",
        ray_address: str | None = None,
    ) -> None:
        if shard_backend not in SHARD_BACKENDS:
            raise InvalidInput(f"shard_backend must be one of {list(SHARD_BACKENDS)}, got {shard_backend!r}")
        self.store = store
        self.shard_backend = shard_backend
        self.ray_address = ray_address
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.default_encoder = encoder
        self.device = device
        self.encoder_precision = encoder_precision
        self._encoder_loader = encoder_loader
        self._indexes: dict[str, CollectionIndex] = {}
        self._lock = threading.RLock()
        self.generators = Generators(
            generator, generative=generative, device=device, quantize=generator_quant, preloaded=answerer
        )
        self.rerankers = Rerankers(reranker, device=device)

    # --- models ------------------------------------------------------------------------------

    def encoder(self, name: str | None = None) -> Encoder:
        """The (cached) sentence encoder called ``name`` (the engine default when None)."""
        name = name or self.default_encoder
        if self._encoder_loader is not None:
            return self._encoder_loader(name)
        from retriever.embedder import load_encoder

        device = None if self.device == "auto" else self.device
        return load_encoder(name, device=device, precision=self.encoder_precision)

    def generator_choices(self) -> list[str]:
        """The generator names a request or a collection may ask for."""
        return self.generators.choices()

    def resolve_generator(self, name: str | None = None, collection: str | None = None) -> str:
        """The generator to answer with: ``name`` when given, else the collection's ``generator``
        setting, else the engine default (see ``Generators.resolve``)."""
        if name is None and collection is not None:
            name = self.store.get_collection(collection).settings.get("generator")
        return self.generators.resolve(name)

    def answerer(self, name: str | None = None) -> Answerer:
        """The generator ``name`` (the default when None), loaded on first use."""
        return self.generators.get(name)

    def reranker_choices(self) -> list[str]:
        """The reranker names a request or a collection may ask for."""
        return self.rerankers.choices()

    def _collection_encoder(self, info: CollectionInfo) -> Encoder:
        return self.encoder(info.settings.get("encoder"))

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Load and reconcile the indexes of every collection."""
        for info in self.store.list_collections():
            try:
                self._index(info.name)
            except CollectionUnusable as exc:  # the others still open; requests to it get 409
                logger.error("%s", exc)

    def save(self, collection: str | None = None) -> None:
        """Save index files (all collections when None); the store needs nothing: it is durable."""
        with self._lock:
            targets = [self._indexes[collection]] if collection else list(self._indexes.values())
        for idx in targets:
            idx.save()

    def close(self) -> None:
        """Save every index and close the store. The engine cannot be used afterwards."""
        with self._lock:
            for idx in self._indexes.values():
                try:
                    idx.save()
                except Exception:  # saving is an optimisation; the store stays the truth
                    logger.exception("could not save the indexes of %s", idx.name)
                idx.close()
            self._indexes.clear()
        self.store.close()

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
            settings = IndexSettings.from_settings(info.settings)
            idx = self._new_index(name, enc.dim, settings, info.settings.get("shards"))
            loaded = idx.try_load()
            stats = idx.reconcile(self.store, encode=enc.encode)
            if stats["added"] or stats["removed"] or not loaded:
                idx.save()
            self._indexes[name] = idx
            return idx

    def _new_index(
        self, name: str, dim: int, settings: IndexSettings, shards: int | None
    ) -> CollectionIndex | ShardedCollectionIndex:
        """One index (``shards`` None), or ``shards`` shards (a setting of 1 is one shard held
        like the others: in a Ray actor where Ray is the backend)."""
        if shards is None:
            return CollectionIndex(name, dim, settings, self._index_root(name), self._faiss_device())
        return ShardedCollectionIndex(name, dim, settings, self._index_root(name), shards,
                                      device=self._faiss_device(), factory=self._shard_factory())

    def reshard(self, name: str, shards: int | None) -> dict[str, int]:
        """Split the collection's indexes over ``shards`` shards (None: one index, not sharded).
        The new indexes are built from the store (stored embeddings, nothing re-encoded) before
        they replace the old ones, which searches use until then. Returns the reconcile counts."""
        info = self.store.get_collection(name)
        validate_collection_settings({**info.settings, "shards": shards} if shards is not None else info.settings)
        with self._lock:
            old = self._index(name)
            enc = self._collection_encoder(info)
            with old.lock:  # ingestions wait to update the old indexes until the new ones are in
                if old.root is not None and old.root.exists():
                    shutil.rmtree(old.root, ignore_errors=True)  # the old layout's files; the store is the truth
                new = self._new_index(name, enc.dim, IndexSettings.from_settings(info.settings), shards)
                stats = new.reconcile(self.store, encode=enc.encode)
                self.store.set_collection_setting(name, "shards", shards)
                self._indexes[name] = new
        new.reconcile(self.store, encode=enc.encode)  # what an ingestion committed meanwhile
        new.save()
        old.close()
        logger.info("collection %s now has %s", name, f"{shards} shards" if shards else "one index")
        return stats

    def _shard_factory(self) -> ShardFactory:
        """Where a sharded collection's shards live: Ray actors (``ray``, or ``auto`` where Ray is
        installed) or this process (``local``); results are the same."""
        backend = self.shard_backend
        if backend == "auto":
            from engine.distributed.cluster import ray_available

            backend = "ray" if ray_available() else "local"
        if backend == "local":
            return local_shards
        from engine.distributed.shards import ray_shard_factory

        return ray_shard_factory(self.ray_address)

    def _faiss_device(self) -> str:
        return "auto" if self.device == "auto" else ("cuda" if self.device.startswith("cuda") else "cpu")

    # --- collections -------------------------------------------------------------------------

    def create_collection(self, name: str, settings: Mapping[str, Any] | None = None) -> CollectionInfo:
        s = validate_collection_settings(settings)
        if "generator" in s:
            self.resolve_generator(s["generator"])  # a known name, or 422 now
        if "rerank" in s:
            self.rerankers.resolve(s["rerank"]["model"])
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
            idx.close()
        elif (root := self._index_root(name)) is not None and root.exists():
            shutil.rmtree(root, ignore_errors=True)

    def collection_stats(self, name: str, *, indexes: bool = True) -> dict[str, Any]:
        """Counts of the store (documents, chunks, tokens) and, unless ``indexes`` is False (then
        the indexes are not opened), of BM25 and FAISS."""
        st = self.store.collection_stats(name)
        out: dict[str, Any] = {"documents": st.documents, "chunks": st.chunks, "tokens": st.tokens}
        if indexes:
            idx = self._index(name)
            out.update(bm25_chunks=len(idx.bm25), dense_chunks=len(idx.dense), dense_kind=idx.dense.active_kind)
            if isinstance(idx, ShardedCollectionIndex):
                out.update(shards=idx.n_shards, shard_chunks=[c[0] for c in idx.counts()], shard_bytes=idx.memory_bytes())
        return out

    # --- documents ---------------------------------------------------------------------------

    def _chunker(self, info: CollectionInfo) -> Chunker:
        return chunker_for(self._collection_encoder(info).tokenizer, info.settings)

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
        valid = parse_documents(docs, report)
        for start in range(0, len(valid), batch_size):
            batch = valid[start : start + batch_size]
            ingest_batch(self.store, collection, idx, enc, chunker, batch, report)
            if progress is not None:
                progress(len(batch))
        report.seconds = time.perf_counter() - t0
        return report

    def write_prepared(
        self, collection: str, docs: Sequence[Mapping[str, Any] | DocumentInput], prepared: Mapping[str, PreparedChunks]
    ) -> IngestReport:
        """:meth:`upsert_documents` of one batch (one transaction) whose chunks and embeddings were
        made elsewhere (``prepared``: document id -> ``PreparedChunks`` from
        ``engine.ingest.prepare_documents``, e.g. on a Ray actor). Chunks are checked against the
        text and embeddings against the index's dimension before anything is written; a changed
        document without an entry is prepared here; an entry for stored content is ignored, so a
        retried batch is a no-op (``unchanged``)."""
        t0 = time.perf_counter()
        info = self.store.get_collection(collection)
        idx = self._index(collection)
        report = IngestReport()
        if valid := parse_documents(docs, report):
            ingest_batch(self.store, collection, idx, self._collection_encoder(info), self._chunker(info), valid,
                         report, prepared=prepared)
        report.seconds = time.perf_counter() - t0
        return report

    def delete_document(self, collection: str, doc_id: str) -> int:
        idx = self._index(collection)
        removed = self.store.delete_document(collection, doc_id)
        idx.remove(np.asarray(removed, dtype=np.int64))
        return len(removed)

    def get_document(self, collection: str, doc_id: str) -> DocumentRecord:
        return self.store.get_document(collection, doc_id)

    def has_document(self, collection: str, doc_id: str) -> bool:
        try:
            self.store.get_document(collection, doc_id)
        except DocumentNotFound:
            return False
        return True

    def list_documents(self, collection: str, *, offset: int = 0, limit: int = 100) -> list[DocumentRecord]:
        """Documents in insertion order, paged."""
        return self.store.list_documents(collection, offset=offset, limit=limit)

    # --- jobs --------------------------------------------------------------------------------

    def create_job(self, collection: str, total: int) -> JobInfo:
        """Record a queued ingestion job of ``total`` documents (``engine.jobs.JobRunner`` runs it)."""
        self.store.get_collection(collection)  # 404 now rather than a failed job later
        return self.store.create_job(collection, total=total)

    def get_job(self, job_id: str) -> JobInfo:
        return self.store.get_job(job_id)

    def list_jobs(self, collection: str | None = None, *, limit: int = 20) -> list[JobInfo]:
        """Jobs, most recent first (of one collection, or of all when None)."""
        if collection is not None:
            self.store.get_collection(collection)
        return self.store.list_jobs(collection, limit=limit)

    def update_job(self, job_id: str, **changes: Any) -> JobInfo:
        """Record a job's status, progress (``done``) or failures (``add_errors``)."""
        return self.store.update_job(job_id, **changes)

    # --- search and answers ------------------------------------------------------------------

    def search(
        self,
        collection: str,
        query: str,
        *,
        k: int = 10,
        mode: str = "hybrid",
        filters: Mapping[str, Any] | None = None,
        settings: SearchSettings | None = None,
        rerank: RerankOption = None,
    ) -> SearchResult:
        """The ``k`` best chunks of ``collection`` for ``query``. ``rerank``: the request's
        ``{"model", "depth", "weight"}`` (``{"model": None}`` turns it off; no weight: the
        reranker's own, ``retriever.rerank.scorer_weight``), else the collection's ``rerank``
        setting, else none (``engine.rerankers.choose_rerank``); a cross-encoder re-scores the best
        ``depth`` of ``max(k, depth)`` candidates and orders them by its score
        (``retriever.rerank``) before the cut to ``k``. InvalidInput for a reranker the server
        does not allow."""
        info = self.store.get_collection(collection)
        plan = choose_rerank(rerank, info.settings.get("rerank"))
        scorer = self.rerankers.get(plan.model) if plan is not None else None  # fails before the search
        idx = self._index(collection)
        enc = self._collection_encoder(info)
        found = search(
            idx, self.store, enc.encode, query, k=max(k, plan.depth) if plan is not None else k, mode=mode,
            filters=filters, settings=settings or SearchSettings.from_settings(info.settings),
        )
        if plan is None or scorer is None:
            return found
        return rerank_hits(found, scorer, query, plan.depth, k=k, weight=plan.weight)

    def answer(self, collection: str, question: str, **options: Any) -> tuple[SearchResult, AnswerResult]:
        """Retrieve, filter into ``budget`` tokens and generate a cited answer or abstain (options
        as :meth:`answer_stream`). Returns ``(SearchResult, AnswerResult)``."""
        found, stream = self.answer_stream(collection, question, **options)
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
        generator: str | None = None,
        rerank: RerankOption = None,
        **context: Any,
    ) -> tuple[SearchResult, AnswerStream]:
        """:meth:`answer` as ``(SearchResult, AnswerStream)``: retrieval, the context filter and the
        prompt are done (so bad input has already failed); iterating the stream generates the
        answer's text pieces, and its ``result`` is the ``AnswerResult``. ``context``: the options
        of :meth:`answer_from_search` (score_floor, dedup_threshold, abstain_threshold,
        abstain_unsupported). ``generator``: see :meth:`resolve_generator`; ``rerank``: see
        :meth:`search` (the context then packs the hits in the reranker's order)."""
        name = self.resolve_generator(generator, collection)
        answerer = self.answerer(name)  # an unloadable generator fails before the search
        found = self.search(collection, question, k=k, mode=mode, filters=filters, rerank=rerank)
        return found, _start_answer(answerer, question, found, budget=budget, **context)

    def diagnose(
        self,
        collection: str,
        question: str,
        *,
        expected_doc_id: str | None = None,
        expected_answers: Sequence[str] = (),
        generator: str | None = None,
        **options: Any,
    ) -> Diagnosis:
        """Answer ``question`` (options as :meth:`answer_stream`), then report each retrieved
        chunk's fate and its share of the generator's attention, with a verdict for the expected
        chunk (``generator.diagnosis``)."""
        from generator.diagnosis import diagnose_answer

        name = self.resolve_generator(generator, collection)
        found, result = self.answer(collection, question, generator=name, **options)
        return diagnose_answer(self.answerer(name), question, found.hits, result,
                               expected_doc_id=expected_doc_id, expected_answers=expected_answers)

    def answer_from_search(
        self, question: str, found: SearchResult, *, budget: int = 512, generator: str | None = None, **context: Any
    ) -> AnswerResult:
        """The second half of :meth:`answer`: filter the hits of one search into ``budget`` tokens
        and generate, so a benchmark can reuse one retrieval across budgets. Returns an
        ``AnswerResult`` whose ``timings_ms`` include the search's ``retrieval_ms``."""
        answerer = self.answerer(generator)
        return _start_answer(answerer, question, found, budget=budget, **context).collect()


def _start_answer(
    answerer: Answerer,
    question: str,
    found: SearchResult,
    *,
    budget: int,
    score_floor: float | None = None,
    dedup_threshold: float = 0.9,
    abstain_threshold: float | None = None,
    abstain_unsupported: bool = False,
) -> AnswerStream:
    from generator.answer import candidates_from_hits
    from generator.context import ContextFilter

    cf = ContextFilter(score_floor=score_floor, dedup_threshold=dedup_threshold, answer_reserve=answerer.answer_reserve)
    kwargs: dict[str, Any] = {"budget": budget, "context_filter": cf, "abstain_threshold": abstain_threshold}
    if answerer.kind == "generative":
        kwargs["abstain_unsupported"] = abstain_unsupported
    retrieval_ms = found.timings_ms.get("total_ms", 0.0)

    def add_retrieval(result: Any) -> None:
        result.timings_ms = {"retrieval_ms": retrieval_ms, **result.timings_ms}

    return answerer.start(question, candidates_from_hits(found.hits), **kwargs).on_finish(add_retrieval)
