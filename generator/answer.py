"""The answer stage: retrieved hits -> context filter -> prompt -> grounded generator -> answer with
citations, or an explicit abstention. Used by the service, the CLI and the evaluation, so all three
see exactly the same behaviour.

Two kinds of generator sit behind one interface (``answer``, ``start``, ``max_context``,
``answer_reserve``): the extractive :class:`Answerer` here (attend-qa copies a span of one chunk)
and :class:`generator.generative.GenerativeAnswerer` (a chat model writes sentences that cite the
chunks by number, checked by a verifier). Both return :class:`AnswerResult`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from generator.context import Candidate, ContextFilter, PackedContext
from generator.prompt import ContextChunk, PromptBuilder
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
    source: int | None = None  # the [n] the answer cites it by (generative answers)
    supported: bool | None = None  # whether the verifier found the cited claim in the chunk
    attributed: bool = False  # the model cited nothing; the verifier chose this chunk


@dataclass
class AnswerSentence:
    """One sentence of a generative answer: its text without markers, the source numbers and chunk
    ids it cites, and what the verifier found (``support``: ``reader`` when the extractive reader
    extracted an answer from a cited chunk that the sentence states, ``overlap`` when a cited chunk
    contains most of what the sentence asserts, ``None`` when unsupported)."""

    text: str
    char_start: int  # in the answer text
    char_end: int
    sources: list[int]
    chunk_ids: list[int]
    supported: bool
    support: str | None = None
    attributed: bool = False


@dataclass
class AnswerResult:
    answer: str | None  # None when abstained
    abstained: bool
    citations: list[Citation]
    context: PackedContext
    prompt: Any  # Prompt (extractive) or ChatPrompt (generative); None before any prompt
    qa: QAAnswer | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    generator: str = "attend-qa"
    kind: str = "extractive"  # or "generative"
    sentences: list[AnswerSentence] = field(default_factory=list)
    unsupported: bool = False  # a generative answer none of whose sentences the verifier supports
    answer_ids: tuple[int, ...] = ()  # generated token ids (generative answers)

    @property
    def text(self) -> str:
        return ABSTAIN_MESSAGE if self.abstained else (self.answer or "")


class AnswerStream:
    """An answer being produced: iterate for its text pieces as they come; ``result`` holds the
    finished :class:`AnswerResult` once the iteration ends."""

    def __init__(self, pieces: Iterator[str], finish: Callable[[], AnswerResult]) -> None:
        self._pieces = pieces
        self._finish = finish
        self.result: AnswerResult | None = None

    def __iter__(self) -> Iterator[str]:
        yield from self._pieces
        self.result = self._finish()

    def on_finish(self, fn: Callable[[AnswerResult], None]) -> AnswerStream:
        """Call ``fn`` on the result when it is made (e.g. to add timings of earlier stages)."""
        finish = self._finish

        def wrapped() -> AnswerResult:
            result = finish()
            fn(result)
            return result

        self._finish = wrapped
        return self

    def close(self) -> None:
        """Stop generating (a client went away); releases the generator's lock."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def collect(self) -> AnswerResult:
        """Run to the end and return the result."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result


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
    """A loaded extractive generator with its prompt builder. One answer at a time (the KV cache is
    state)."""

    kind = "extractive"

    def __init__(self, model: GroundedQA, builder: PromptBuilder, name: str = "attend-qa") -> None:
        self.model = model
        self.builder = builder
        self.name = name
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name_or_dir: str, device: str | None = None) -> Answerer:
        model, builder = GroundedQA.load(name_or_dir, device=device)
        return cls(model, builder, name=str(name_or_dir))

    @property
    def max_context(self) -> int:
        return self.model.decoder.config.max_seq_len

    @property
    def answer_reserve(self) -> int:
        """Tokens the budget keeps for the answer: ``[ANS]`` and the longest span."""
        return self.model.config.max_answer_tokens + 1

    @property
    def decoder(self):
        return self.model.decoder

    def read_chunk(self, question: str, chunk: ContextChunk, *, abstain_threshold: float | None = None) -> QAAnswer:
        """The extractive answer to ``question`` from ``chunk`` alone (what the generative answer's
        verifier asks); the chunk is shortened to the model's window when longer."""
        prompt = self.builder.build(question, [chunk], max_len=self.model.max_prompt_len)
        if not prompt.chunks:
            return QAAnswer(abstained=True, abstain_prob=1.0, confidence=1.0)
        with self._lock:
            return self.model.read(prompt, self.builder.answer_id, abstain_threshold=abstain_threshold)

    def start(self, question: str, candidates: Sequence[Candidate], **kwargs: Any) -> AnswerStream:
        """:meth:`answer`, then its pieces (:meth:`stream`): the extractive answer is one copied span,
        known whole before the first piece."""
        result = self.answer(question, candidates, **kwargs)
        return AnswerStream(self.stream(result), lambda: result)

    def answer(
        self,
        question: str,
        candidates: Sequence[Candidate],
        *,
        budget: int,
        context_filter: ContextFilter | None = None,
        abstain_threshold: float | None = None,
    ) -> AnswerResult:
        """Filter ``candidates`` into ``budget`` tokens (at most the generator's context window)
        and generate."""
        timings: dict[str, float] = {}
        cf = context_filter or ContextFilter(answer_reserve=self.answer_reserve)
        t = time.perf_counter()
        packed = cf.apply(question, candidates, self.builder, budget, self.max_context)
        prompt = self.builder.build(question, packed.chunks())
        timings["filter_ms"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        if not prompt.chunks:
            qa = QAAnswer(abstained=True, abstain_prob=1.0, confidence=1.0)
        else:
            with self._lock:
                qa = self.model.read(prompt, self.builder.answer_id, abstain_threshold=abstain_threshold)
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
                    source=qa.chunk_index + 1,
                    supported=True,  # a copied span
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
            generator=self.name,
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
