"""Request and response bodies of the HTTP API, apart from the store's rows and the engine's
domain values; the ``*_out`` functions convert the latter into the former."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    WithJsonSchema,
    model_serializer,
)

from engine.ingest import DocumentOutcome, IngestReport
from engine.types import (
    ABSTAIN_MESSAGE,
    BM25_K1_MAX,
    BM25_VARIANTS,
    DEFAULT_RERANK_DEPTH,
    DENSE_KINDS,
    MAX_DEPTH,
    MAX_DOCUMENT_CHARS,
    MAX_EXTERNAL_ID,
    MAX_K,
    MAX_RERANK_DEPTH,
    AnswerResult,
    CollectionInfo,
    DocumentRecord,
    Hit,
    JobInfo,
    SearchResult,
)

Mode = Literal["bm25", "dense", "hybrid"]
COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_QUERY_CHARS = 10_000


class Strict(BaseModel):
    """Unknown fields are an error, not silently dropped (a typo in ``mode`` or ``k`` must show)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --- errors ------------------------------------------------------------------------------------


class ValidationErrorOut(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every error response: ``detail`` is a message for people. Request validation errors add
    ``errors`` (one entry per problem); a batch whose every document failed adds ``outcomes``."""

    detail: str
    errors: list[ValidationErrorOut] | None = None
    outcomes: list[DocumentOutcomeOut] | None = None


# --- collections -------------------------------------------------------------------------------


Bm25Variant = Literal[BM25_VARIANTS]  # type: ignore[valid-type]  # the index code's own table
DenseKind = Literal[DENSE_KINDS]  # type: ignore[valid-type]
Weight = Annotated[float, Field(ge=0)]
RERANK_DEPTH_DESCRIPTION = "How many of the best candidates the reranker re-scores (max(k, depth) are retrieved)."
RERANK_WEIGHT_DESCRIPTION = (
    "The reranker's share of the order of the re-scored candidates: 1 orders by its score alone, below 1 by "
    "weight * its min-max normalised score + (1 - weight) * the normalised fused score. Default: the "
    "reranker's own recommended weight (attend-rerank: 0.7), else 1."
)


class CollectionRerank(Strict):
    """A collection's default rerank: every search and answer of the collection that does not say
    otherwise re-scores its best ``depth`` candidates with ``model``."""

    model: str = Field(min_length=1, max_length=200, description="A reranker under models/ or the server's (ATTEND_RERANKER).")
    depth: int = Field(DEFAULT_RERANK_DEPTH, ge=1, le=MAX_RERANK_DEPTH, description=RERANK_DEPTH_DESCRIPTION)
    weight: float | None = Field(None, ge=0, le=1, description=RERANK_WEIGHT_DESCRIPTION)


class CollectionSettings(Strict):
    """Chunking and retrieval settings of a collection; unset fields take the engine defaults.
    ``chunk_overlap`` must also be smaller than ``chunk_tokens`` (422 otherwise)."""

    encoder: str | None = Field(None, description="Encoder name or checkpoint directory.")
    chunk_tokens: int | None = Field(None, ge=16, le=510, description="Chunk size in encoder tokens.")
    chunk_overlap: int | None = Field(None, ge=0, le=509, description="Overlap between chunks in tokens (< chunk_tokens).")
    bm25_variant: Bm25Variant | None = None
    bm25_k1: float | None = Field(None, gt=0, le=BM25_K1_MAX)
    bm25_b: float | None = Field(None, ge=0, le=1)
    dense_kind: DenseKind | None = Field(None, description="FAISS index kind.")
    fusion: Literal["rrf", "convex"] | None = None
    rrf_k: float | None = Field(None, gt=0)
    weights: tuple[Weight, Weight] | None = Field(None, description="(bm25, dense) fusion weights.")
    depth: int | None = Field(None, ge=1, le=MAX_DEPTH, description="Candidates per side in hybrid mode.")
    generator: str | None = Field(
        None, min_length=1, max_length=200,
        description="Default generator of this collection's answers: extractive, generative, attend-qa, smollm2, "
        "or the server's configured generator.",
    )
    rerank: CollectionRerank | None = Field(None, description="Default rerank of this collection's searches and answers.")


class CollectionCreate(Strict):
    name: str = Field(pattern=COLLECTION_NAME_PATTERN, examples=["docs"])
    settings: CollectionSettings = Field(default_factory=CollectionSettings)


class CollectionStatsOut(BaseModel):
    documents: int
    chunks: int
    tokens: int
    bm25_chunks: int
    dense_chunks: int
    dense_kind: str | None = None


class CollectionOut(BaseModel):
    name: str
    settings: dict[str, Any]
    created_at: datetime
    stats: CollectionStatsOut | None = None


def collection_out(info: CollectionInfo, stats: dict[str, Any] | None = None) -> CollectionOut:
    return CollectionOut(
        name=info.name,
        settings=dict(info.settings),
        created_at=info.created_at,
        stats=CollectionStatsOut(**stats) if stats is not None else None,
    )


# --- documents ---------------------------------------------------------------------------------


class DocumentIn(BaseModel):
    """A document to insert or replace (by ``id``). The schema shown for each document; the
    server validates documents one by one (``DocumentInput.parse``) so one bad document is
    reported in its outcome while the rest of the batch goes in."""

    id: str = Field(min_length=1, max_length=MAX_EXTERNAL_ID)
    text: str = Field(min_length=1, max_length=MAX_DOCUMENT_CHARS, pattern=r"\S", description="Not blank.")
    title: str | None = Field("", description="null is the same as empty.")
    metadata: dict[str, Any] | None = Field(
        default_factory=dict, description="Top-level keys can be filtered on; null is the same as {}."
    )


class DocumentsUpsert(Strict):
    """A batch of documents. A document that fails validation (blank text, a lone surrogate, a
    wrong type...) is reported in its outcome and the others still go in; when every document
    fails the answer is 422. Batches larger than the server's ``background_threshold`` run as a
    background job."""

    documents: Annotated[
        list[dict[str, Any]],
        WithJsonSchema({"type": "array", "minItems": 1, "items": DocumentIn.model_json_schema()}),
    ] = Field(min_length=1)


class DocumentOutcomeOut(BaseModel):
    id: str
    status: Literal["inserted", "updated", "unchanged", "failed"]
    chunks: int = 0
    error: str | None = None


class IngestOut(BaseModel):
    outcomes: list[DocumentOutcomeOut]
    counts: dict[str, int]
    seconds: float


def outcome_out(o: DocumentOutcome) -> DocumentOutcomeOut:
    return DocumentOutcomeOut(id=o.doc_id, status=o.status, chunks=o.chunks, error=o.error)  # type: ignore[arg-type]


def ingest_out(report: IngestReport) -> IngestOut:
    return IngestOut(outcomes=[outcome_out(o) for o in report.outcomes], counts=report.counts(), seconds=report.seconds)


class DocumentOut(BaseModel):
    id: str
    title: str
    text: str
    metadata: dict[str, Any]
    chunk_ids: list[int]
    content_hash: str
    created_at: datetime
    updated_at: datetime


class DocumentSummaryOut(BaseModel):
    id: str
    title: str
    chars: int
    chunks: int
    metadata: dict[str, Any]
    updated_at: datetime


def document_out(r: DocumentRecord) -> DocumentOut:
    return DocumentOut(
        id=r.external_id, title=r.title, text=r.text, metadata=dict(r.metadata), chunk_ids=list(r.chunk_ids),
        content_hash=r.content_hash, created_at=r.created_at, updated_at=r.updated_at,
    )


def document_summary_out(r: DocumentRecord) -> DocumentSummaryOut:
    return DocumentSummaryOut(
        id=r.external_id, title=r.title, chars=len(r.text), chunks=len(r.chunk_ids), metadata=dict(r.metadata),
        updated_at=r.updated_at,
    )


class DeletedOut(BaseModel):
    id: str
    chunks_removed: int


# --- jobs --------------------------------------------------------------------------------------


class JobOut(BaseModel):
    id: str
    collection: str
    status: Literal["queued", "running", "done", "failed"]
    total: int
    done: int
    progress: float = Field(description="done / total, in [0, 1].")
    errors: list[dict[str, Any]] = Field(description='Per-document failures: {"doc_id", "reason"}.')
    created_at: datetime
    updated_at: datetime


def job_out(j: JobInfo) -> JobOut:
    return JobOut(
        id=j.id, collection=j.collection, status=j.status, total=j.total, done=j.done,
        progress=(j.done / j.total) if j.total else (1.0 if j.finished else 0.0),
        errors=list(j.errors), created_at=j.created_at, updated_at=j.updated_at,
    )


# --- search ------------------------------------------------------------------------------------


class RerankIn(Strict):
    """A request's rerank: a cross-encoder re-scores the best ``depth`` candidates and orders them
    by its score. Absent or null: the collection's default rerank (none unless set);
    ``{"model": null}``: no rerank, whatever the collection's default."""

    model: str | None = Field(
        min_length=1, max_length=200,
        description="A reranker folder under models/ or the server's configured one (ATTEND_RERANKER); "
        "null turns reranking off for this request.",
    )
    depth: int = Field(DEFAULT_RERANK_DEPTH, ge=1, le=MAX_RERANK_DEPTH, description=RERANK_DEPTH_DESCRIPTION)
    weight: float | None = Field(None, ge=0, le=1, description=RERANK_WEIGHT_DESCRIPTION)


def rerank_option(rerank: RerankIn | None) -> dict[str, Any] | None:
    """A request's ``rerank`` as the engine takes it (None: the collection's default)."""
    return rerank.model_dump() if rerank is not None else None


class SearchRequest(Strict):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S", examples=["how do plants make sugar"])
    k: int = Field(10, ge=1, le=MAX_K)
    mode: Mode = "hybrid"
    filters: dict[str, Any] | None = Field(
        None, description='Metadata filters: {"lang": "en"}, {"year": {"$in": [2023, 2024]}}.'
    )
    rerank: RerankIn | None = None


class ScoresOut(BaseModel):
    bm25: float | None = None
    dense: float | None = None
    fused: float | None = None


class HitOut(BaseModel):
    rank: int
    chunk_id: int
    doc_id: str
    title: str
    text: str
    char_start: int = Field(description="Where the chunk starts in its document's text.")
    char_end: int
    metadata: dict[str, Any]
    scores: ScoresOut
    rerank_score: float | None = Field(
        None, description="The reranker's score; present only on hits a reranker re-scored (ranked by it)."
    )

    @model_serializer(mode="wrap")
    def _omit_unset_rerank_score(self, handler: SerializerFunctionWrapHandler):
        # Without a rerank a hit's JSON stays what it was before reranking existed. No return
        # annotation on purpose: pydantic would take it as the schema of the serialized hit.
        out = handler(self)
        if self.rerank_score is None:
            out.pop("rerank_score", None)
        return out


class SearchOut(BaseModel):
    hits: list[HitOut]
    timings_ms: dict[str, float]


def hit_out(h: Hit) -> HitOut:
    return HitOut(
        rank=h.rank, chunk_id=h.chunk_id, doc_id=h.doc_id, title=h.title, text=h.text,
        char_start=h.char_start, char_end=h.char_end, metadata=dict(h.metadata), scores=ScoresOut(**h.scores),
        rerank_score=h.rerank_score,
    )


def search_out(result: SearchResult) -> SearchOut:
    return SearchOut(hits=[hit_out(h) for h in result.hits], timings_ms=dict(result.timings_ms))


# --- answer ------------------------------------------------------------------------------------


class QuestionRequest(Strict):
    """What the answer and diagnose routes share: retrieval, context filter and generation settings."""

    question: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S", examples=["why do volcanoes erupt"])
    k: int = Field(8, ge=1, le=100, description="Chunks retrieved before the context filter.")
    budget: int = Field(
        512,
        description="Generator input budget in tokens (question, chunks and answer); at most the generator's "
        "context window, at least what the question and the answer reserve need (422 otherwise).",
    )
    mode: Mode = "hybrid"
    filters: dict[str, Any] | None = None
    rerank: RerankIn | None = None
    score_floor: StrictFloat | None = Field(
        None, description="Chunks whose ranking score (the reranker's, for a reranked chunk) is below this are cut."
    )
    abstain_threshold: StrictFloat | None = Field(
        None, ge=0, le=1, description="The extractive reader's abstain cut (for a generative answer: its verifier's)."
    )
    generator: str | None = Field(
        None, min_length=1, max_length=200,
        description="extractive (attend-qa copies a span), generative (a chat model writes a cited sentence; "
        "smollm2 by default), or a configured name; default: the collection's setting, else the server's.",
    )
    abstain_unsupported: StrictBool = Field(
        False, description="Generative answers: abstain when the verifier supports no sentence (flagged either way)."
    )


class AnswerRequest(QuestionRequest):
    stream: StrictBool = Field(False, description="Server-sent events: `token` pieces, then `done` with this JSON.")


class CitationOut(BaseModel):
    chunk_id: int
    doc_id: str
    char_start: int = Field(description="Span of the quote in the chunk's text.")
    char_end: int
    doc_char_start: int = Field(description="Span of the quote in the document's text.")
    doc_char_end: int
    quote: str
    source: int | None = Field(None, description="The number the answer cites this chunk by ([n]).")
    supported: bool | None = Field(None, description="Whether the verifier found the cited claim in this chunk.")
    attributed: bool = Field(False, description="The model cited no source; the verifier chose this chunk.")


class SentenceOut(BaseModel):
    text: str = Field(description="The sentence without its citation markers.")
    char_start: int = Field(description="Span of the sentence in `answer`.")
    char_end: int
    sources: list[int] = Field(description="Source numbers it cites (valid ones).")
    chunk_ids: list[int]
    supported: bool
    support: str | None = Field(description="reader, overlap, or null when unsupported.")
    attributed: bool = False


class ContextChunkOut(BaseModel):
    chunk_id: int
    doc_id: str
    rank: int
    score: float
    text: str
    char_start: int
    char_end: int
    truncated: bool = False


class CutChunkOut(BaseModel):
    chunk_id: int
    doc_id: str
    rank: int
    score: float
    reason: str = Field(description="score_floor, duplicate or budget.")


class ContextOut(BaseModel):
    kept: list[ContextChunkOut]
    cut: list[CutChunkOut]
    tokens: int
    budget: int
    answer_reserve: int


class AnswerOut(BaseModel):
    answer: str | None = Field(
        description="Extractive: an exact span of the cited chunk. Generative: the written answer with its [n] "
        "markers. Null when abstained."
    )
    abstained: bool
    text: str = Field(description="The answer, or the abstention message.")
    generator: str = Field("attend-qa", description="The generator that answered.")
    kind: Literal["extractive", "generative"] = "extractive"
    unsupported: bool = Field(
        False, description="A generative answer none of whose sentences the verifier found in a cited chunk."
    )
    sentences: list[SentenceOut] = Field(default_factory=list, description="Generative answers, per sentence.")
    citations: list[CitationOut]
    context: ContextOut
    confidence: float | None = None
    abstain_prob: float | None = None
    timings_ms: dict[str, float]


def answer_out(found: SearchResult, result: AnswerResult, total_ms: float | None = None) -> AnswerOut:
    ctx = result.context
    truncated = set(ctx.truncated)
    timings = {f"retrieval.{k}": v for k, v in found.timings_ms.items() if k != "total_ms"}
    timings.update(result.timings_ms)
    if total_ms is not None:
        timings["total_ms"] = total_ms
    return AnswerOut(
        answer=result.answer,
        abstained=result.abstained,
        text=ABSTAIN_MESSAGE if result.abstained else (result.answer or ""),
        generator=result.generator,
        kind=result.kind,
        unsupported=result.unsupported,
        sentences=[SentenceOut(**vars(s)) for s in result.sentences],
        citations=[CitationOut(**vars(c)) for c in result.citations],
        context=ContextOut(
            kept=[
                ContextChunkOut(chunk_id=int(c.chunk_id), doc_id=c.doc_id, rank=c.rank, score=c.score, text=c.text,
                                char_start=c.char_start, char_end=c.char_end, truncated=c.chunk_id in truncated)
                for c in ctx.kept
            ],
            cut=[
                CutChunkOut(chunk_id=int(c.chunk_id), doc_id=c.doc_id, rank=c.rank, score=c.score, reason=reason)
                for c, reason in ctx.cut
            ],
            tokens=ctx.tokens,
            budget=ctx.budget,
            answer_reserve=ctx.answer_reserve,
        ),
        confidence=result.qa.confidence if result.qa is not None else None,
        abstain_prob=result.qa.abstain_prob if result.qa is not None else None,
        timings_ms=timings,
    )


ErrorOut.model_rebuild()
