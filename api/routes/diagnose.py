"""Attention diagnostics of an answer: every retrieved chunk's fate (in the context, or cut and
why), its share of the answer's attention per layer and head next to its uniform share, and a
verdict for the expected chunk (``not_retrieved``, ``cut``, ``ignored`` or ``used``). See
``generator.diagnosis`` for the definitions."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field, StrictBool

from api.auth import ReadKey
from api.deps import EngineDep
from api.errors import error_responses
from engine.schemas import QuestionRequest, ScoresOut, rerank_option

router = APIRouter(prefix="/v1/collections/{name}", tags=["diagnose"], responses=error_responses(404, 409, 501))


class DiagnoseRequest(QuestionRequest):
    expected_doc_id: str | None = Field(None, description="The document whose chunk should have been used.")
    expected_answer: str | None = Field(None, description="Text the right chunk contains (case-insensitive).")
    tokens: StrictBool = Field(False, description="Add each context chunk's token pieces and mean attention per token.")


class ChunkDiagnosisOut(BaseModel):
    rank: int
    chunk_id: int
    doc_id: str
    title: str
    text: str = Field(description="What the generator read (shortened if truncated), or the retrieved text if cut.")
    scores: ScoresOut
    in_context: bool
    context_index: int | None = Field(description="Place in the prompt (0-based); null when cut.")
    cut_reason: str | None = Field(description="score_floor, duplicate or budget when cut.")
    truncated: bool
    n_tokens: int
    share: float | None = Field(
        description="Share of the answer's attention: mean over the heads of the last layer, the one the copy head reads."
    )
    share_all_layers: float | None = Field(None, description="Share averaged over every layer and head.")
    uniform_share: float | None = Field(description="Chunk tokens / prompt tokens.")
    lift: float | None = Field(description="share / uniform_share.")
    share_by_layer_head: list[list[float]] | None = Field(description="[layer][head] shares.")
    verdict: str = Field(description="cut, ignored or used.")
    expected: bool
    most_attended: bool
    tokens: list[str] | None = None
    token_attention: list[float] | None = None


class DiagnoseOut(BaseModel):
    question: str
    answer: str | None
    abstained: bool
    cited_chunk_id: int | None
    verdict: str | None = Field(description="For the expected chunk: not_retrieved, cut, ignored or used.")
    cut_reason: str | None
    expected_doc_id: str | None
    expected_answers: list[str]
    expected_chunk_id: int | None
    most_attended_chunk_id: int | None
    n_layers: int
    n_heads: int
    prompt_tokens: int
    answer_steps: int
    chunks: list[ChunkDiagnosisOut]
    timings_ms: dict[str, float]


@router.post("/diagnose", response_model=DiagnoseOut)
def diagnose(name: str, body: DiagnoseRequest, engine: EngineDep, principal: ReadKey) -> DiagnoseOut:
    """Answer ``question``, then report each retrieved chunk's fate and attention share."""
    diag = engine.diagnose(
        name, body.question, k=body.k, budget=body.budget, mode=body.mode, filters=body.filters,
        score_floor=body.score_floor, abstain_threshold=body.abstain_threshold, generator=body.generator,
        abstain_unsupported=body.abstain_unsupported, expected_doc_id=body.expected_doc_id,
        expected_answers=[body.expected_answer] if body.expected_answer else [], rerank=rerank_option(body.rerank),
    )
    out = diag.to_dict(tokens=body.tokens)
    out.pop("answer_token_span", None)
    return DiagnoseOut(**out)
