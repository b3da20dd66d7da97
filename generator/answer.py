"""The answer stage: retrieved hits -> context filter -> prompt -> grounded generator -> answer with
citations, or an explicit abstention. Used by the service, the CLI and the evaluation, so all three
see exactly the same behaviour."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from generator.context import Candidate, ContextFilter, PackedContext
from generator.prompt import Prompt, PromptBuilder
from generator.qa_model import GroundedQA, QAAnswer

ABSTAIN_MESSAGE = "I cannot answer this from the provided documents."


@dataclass
class Citation:
    """Where an answer came from: the chunk, its document and the exact character span in the
    document (``doc_char_start``/``doc_char_end``) and in the chunk, with the quoted text."""

    chunk_id: int
    doc_id: str
    char_start: int  # in the chunk text
    char_end: int
    doc_char_start: int  # in the document text
    doc_char_end: int
    quote: str


@dataclass
class AnswerResult:
    answer: str | None  # None when abstained
    abstained: bool
    citations: list[Citation]
    context: PackedContext
    prompt: Prompt | None
    qa: QAAnswer | None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return ABSTAIN_MESSAGE if self.abstained else (self.answer or "")


def candidates_from_hits(hits: Sequence[Any]) -> list[Candidate]:
    """Turn :class:`retriever.hybrid.Hit` objects into context candidates (fused score)."""
    return [
        Candidate(
            chunk_id=h.chunk_id,
            doc_id=h.doc_id,
            text=h.text,
            score=h.score,
            rank=h.rank,
            char_start=h.char_start,
            char_end=h.char_end,
            scores=dict(h.scores),
        )
        for h in hits
    ]


class Answerer:
    """A loaded generator with its prompt builder. One answer at a time (the KV cache is state)."""

    def __init__(self, model: GroundedQA, builder: PromptBuilder) -> None:
        self.model = model
        self.builder = builder
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name_or_dir: str, device: str | None = None) -> Answerer:
        model, builder = GroundedQA.load(name_or_dir, device=device)
        return cls(model, builder)

    @property
    def max_context(self) -> int:
        return self.model.decoder.config.max_seq_len

    def answer(
        self,
        question: str,
        candidates: Sequence[Candidate],
        *,
        budget: int,
        context_filter: ContextFilter | None = None,
        abstain_threshold: float | None = None,
    ) -> AnswerResult:
        """Filter ``candidates`` into ``budget`` tokens and generate. ``budget`` is capped by the
        generator's context window."""
        timings: dict[str, float] = {}
        cf = context_filter or ContextFilter(answer_reserve=self.model.config.max_answer_tokens + 1)
        budget = min(budget, self.max_context)
        t = time.perf_counter()
        packed = cf.apply(question, candidates, self.builder, budget)
        prompt = self.builder.build(question, packed.chunks())
        timings["filter_ms"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        if not prompt.chunks:
            qa = QAAnswer(abstained=True, abstain_prob=1.0, confidence=1.0)
        else:
            with self._lock:
                qa = self.model.answer(prompt, self.builder.answer_id, abstain_threshold=abstain_threshold)
        timings["generate_ms"] = (time.perf_counter() - t) * 1e3
        citations = []
        if not qa.abstained:
            kept = packed.kept[qa.chunk_index]
            citations.append(
                Citation(
                    chunk_id=int(kept.chunk_id),
                    doc_id=kept.doc_id,
                    char_start=qa.char_start,
                    char_end=qa.char_end,
                    doc_char_start=kept.char_start + qa.char_start,
                    doc_char_end=kept.char_start + qa.char_end,
                    quote=qa.text,
                )
            )
        return AnswerResult(
            answer=None if qa.abstained else qa.text,
            abstained=qa.abstained,
            citations=citations,
            context=packed,
            prompt=prompt,
            qa=qa,
            timings_ms=timings,
        )

    def stream(self, result: AnswerResult) -> Iterator[str]:
        """The answer of a finished result as text pieces, one per copied token (what a streaming
        client shows while the citations follow at the end)."""
        if result.abstained or result.qa is None or result.prompt is None:
            yield ABSTAIN_MESSAGE
            return
        p, qa = result.prompt, result.qa
        chunk_text = p.chunks[qa.chunk_index].text
        prev = qa.char_start
        for t in range(qa.token_span[0], qa.token_span[1] + 1):
            end = p.token_chars[t][1]
            yield chunk_text[prev:end]
            prev = end
