"""Generative grounded answers: a chat model writes the answer from numbered sources, cites them,
and a verifier checks every sentence against the chunks it cites.

The flow for one question:

1. the context filter packs the retrieved chunks into the budget, counted with the chat model's
   own tokenizer (:class:`generator.chat_prompt.ChatPromptBuilder`); the prompt is built within
   ``budget - answer_reserve`` tokens, so prompt plus answer never overrun the budget;
2. our decoder generates greedily with the KV cache (prefill, then one token a step), yielding text
   pieces as they decode (a piece that ends inside a multi-byte character waits for the next token);
3. the answer is split into sentences and their ``[n]`` citations; the exact refusal sentence is an
   abstention;
4. the :class:`Verifier` checks each sentence against the chunks it cites. A sentence that cites
   nothing valid gets, when the verifier finds one, the chunk that supports it (``attributed``);
   an answer none of whose sentences is supported is flagged ``unsupported`` (and, when asked for,
   turned into an abstention), never passed off as grounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from generator.answer import AnswerResult, AnswerSentence, AnswerStream, Citation
from generator.chat_prompt import ChatPrompt, ChatPromptBuilder
from generator.citations import (
    best_quote,
    clean_answer,
    contains_answer,
    is_refusal,
    numbers_supported,
    overlap_support,
    split_sentences,
)
from generator.context import CUT_BUDGET, Candidate, ContextFilter, PackedContext
from generator.generate import stream_generate
from generator.prompt import ContextChunk

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 48
DEFAULT_REPETITION_PENALTY = 1.1
OVERLAP_THRESHOLD = 0.6  # without a reader: share of the sentence's claims the chunk must hold
READER_OVERLAP = 0.5  # with the reader's span stated, the share of the other claims still needed
STRICT_OVERLAP = 0.8  # without the reader's span, a near-quote of the chunk


@dataclass(frozen=True)
class Support:
    """What the verifier found for one sentence in one chunk: ``how`` is ``reader``, ``overlap`` or
    ``None`` (unsupported); ``span`` the supporting characters of the chunk."""

    how: str | None
    span: tuple[int, int]
    score: float

    @property
    def supported(self) -> bool:
        return self.how is not None


class Verifier:
    """Checks that a sentence is supported by a chunk.

    ``overlap`` is the share of the content words the sentence adds to the question that the chunk
    holds (:func:`generator.citations.overlap_support`). With an extractive ``reader`` (attend-qa),
    the reader answers the question from that chunk alone, and the sentence is supported
    (``reader``) when the reader does not abstain, the sentence states the span it extracted, and
    the overlap is at least ``reader_overlap`` (so a right answer wrapped in invented detail is not
    passed); failing that, a near-quote (overlap >= ``strict_overlap``) is supported
    (``overlap``). Without a reader, overlap >= ``overlap_threshold`` is. In every case each number
    the sentence states must occur in the chunk (or the question). One reader pass per chunk and
    question, cached for the answer's sentences."""

    def __init__(
        self,
        reader: Any = None,
        *,
        overlap_threshold: float = OVERLAP_THRESHOLD,
        reader_overlap: float = READER_OVERLAP,
        strict_overlap: float = STRICT_OVERLAP,
    ) -> None:
        self.reader = reader
        self.overlap_threshold = overlap_threshold
        self.reader_overlap = reader_overlap
        self.strict_overlap = strict_overlap

    @property
    def method(self) -> str:
        return "reader+overlap" if self.reader is not None else "overlap"

    def check(
        self,
        question: str,
        sentence: str,
        chunk: ContextChunk,
        *,
        cache: dict[Any, Any] | None = None,
        abstain_threshold: float | None = None,
    ) -> Support:
        score = overlap_support(sentence, chunk.text, question)
        if not numbers_supported(sentence, chunk.text, question):  # a wrong number is never supported
            return Support(None, best_quote(sentence, chunk.text), score)
        if self.reader is None:
            how = "overlap" if score >= self.overlap_threshold else None
            return Support(how, best_quote(sentence, chunk.text), score)
        key = chunk.chunk_id
        qa = cache.get(key) if cache is not None else None
        if qa is None:
            qa = self.reader.read_chunk(question, chunk, abstain_threshold=abstain_threshold)
            if cache is not None:
                cache[key] = qa
        if not qa.abstained and contains_answer(sentence, qa.text) and score >= self.reader_overlap:
            return Support("reader", (qa.char_start, qa.char_end), score)
        how = "overlap" if score >= self.strict_overlap else None
        return Support(how, best_quote(sentence, chunk.text), score)


class GenerativeAnswerer:
    """A chat model answering from numbered sources (see the module docstring). One answer at a time
    (the KV cache is state)."""

    kind = "generative"

    def __init__(
        self,
        chat: Any,
        *,
        name: str = "generative",
        verifier: Verifier | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        repetition_penalty: float = DEFAULT_REPETITION_PENALTY,
        builder: ChatPromptBuilder | None = None,
    ) -> None:
        self.chat = chat
        self.name = name
        self.verifier = verifier or Verifier()
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        self.builder = builder or ChatPromptBuilder(chat)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name_or_path: str, *, device: str | None = None, reader: Any = None, quantize: str | None = "auto") -> GenerativeAnswerer:
        """Load a chat model (``smollm2``, a ``.gguf`` file or a Llama-family directory).
        ``quantize``: ``int8`` (weight-only int8 linears), ``none``, or ``auto`` (int8 on CPU)."""
        from generator.chat_model import load_chat_model

        chat = load_chat_model(name_or_path, device=device)
        dec = chat.decoder
        if quantize == "int8" or (quantize == "auto" and dec.device.type == "cpu"):
            from generator.quant import quantize_int8

            quantize_int8(dec)
        return cls(chat, name=str(name_or_path), verifier=Verifier(reader))

    @property
    def decoder(self):
        return self.chat.decoder

    @property
    def model(self):
        """What diagnostics read attention from (the chat model; its ``decoder``)."""
        return self.chat

    @property
    def max_context(self) -> int:
        return self.chat.decoder.config.max_seq_len

    @property
    def answer_reserve(self) -> int:
        return self.max_new_tokens

    # --- answering ---------------------------------------------------------------------------

    def answer(self, question: str, candidates: Sequence[Candidate], **kwargs: Any) -> AnswerResult:
        """Filter, generate and verify; keyword arguments as :meth:`start`."""
        return self.start(question, candidates, **kwargs).collect()

    def start(
        self,
        question: str,
        candidates: Sequence[Candidate],
        *,
        budget: int,
        context_filter: ContextFilter | None = None,
        abstain_threshold: float | None = None,
        abstain_unsupported: bool = False,
    ) -> AnswerStream:
        """Pack the context and build the prompt now (so bad input fails before any streaming),
        then return the stream of the answer's text pieces. ``abstain_threshold`` goes to the
        verifier's extractive reader; ``abstain_unsupported`` turns an unsupported answer into an
        abstention (it is flagged either way)."""
        timings: dict[str, float] = {}
        cf = context_filter or ContextFilter(answer_reserve=self.answer_reserve)
        t = time.perf_counter()
        packed = cf.apply(question, candidates, self.builder, budget, self.max_context)
        prompt = self.builder.build(question, packed.chunks(), max_len=budget - cf.answer_reserve)
        _sync_packed(packed, prompt)
        timings["filter_ms"] = (time.perf_counter() - t) * 1e3
        state: dict[str, Any] = {"text": "", "ids": []}
        max_new = max(1, min(self.max_new_tokens, cf.answer_reserve, self.max_context - len(prompt.input_ids)))
        pieces = self._generate(prompt, max_new, state, timings) if prompt.chunks else iter(())

        def finish() -> AnswerResult:
            t = time.perf_counter()
            result = self._finish(question, packed, prompt, state, abstain_threshold, abstain_unsupported)
            timings["verify_ms"] = (time.perf_counter() - t) * 1e3
            result.timings_ms = timings
            return result

        return AnswerStream(pieces, finish)

    def _generate(self, prompt: ChatPrompt, max_new: int, state: dict[str, Any], timings: dict[str, float]) -> Iterator[str]:
        t0 = time.perf_counter()
        with self._lock:
            try:
                steps = stream_generate(
                    self.chat.decoder, [prompt.input_ids], max_new_tokens=max_new,
                    stop_token_ids=self.chat.stop_ids, repetition_penalty=self.repetition_penalty,
                )
                for step in steps:
                    if "first_token_ms" not in timings:
                        timings["first_token_ms"] = (time.perf_counter() - t0) * 1e3
                    if not bool(step.emitted[0]):
                        break
                    state["ids"].append(int(step.tokens[0]))
                    text = self.chat.decode(state["ids"])
                    if text.endswith("\ufffd"):  # inside a multi-byte character: wait for the rest
                        continue
                    piece, state["text"] = text[len(state["text"]):], text
                    if piece:
                        yield piece
            finally:
                timings["generate_ms"] = (time.perf_counter() - t0) * 1e3
                timings["generated_tokens"] = float(len(state["ids"]))
        tail = self.chat.decode(state["ids"])
        if tail != state["text"] and tail.startswith(state["text"]):
            piece, state["text"] = tail[len(state["text"]):], tail
            yield piece

    def _finish(
        self,
        question: str,
        packed: PackedContext,
        prompt: ChatPrompt,
        state: dict[str, Any],
        abstain_threshold: float | None,
        abstain_unsupported: bool,
    ) -> AnswerResult:
        raw = clean_answer(state["text"])
        base = dict(context=packed, prompt=prompt, qa=None, generator=self.name, kind=self.kind,
                    answer_ids=tuple(state["ids"]))
        if not prompt.chunks or not raw or is_refusal(raw):
            return AnswerResult(answer=None, abstained=True, citations=[], **base)
        cache: dict[Any, Any] = {}
        n = len(prompt.chunks)
        sentences: list[AnswerSentence] = []
        citations: dict[int, Citation] = {}
        for s in split_sentences(raw):
            sources = [k for k in s.sources if 1 <= k <= n]
            attributed = False
            checks = [(k, self.verifier.check(question, s.text, prompt.chunks[k - 1], cache=cache,
                                              abstain_threshold=abstain_threshold)) for k in sources]
            found = next(((k, sup) for k, sup in checks if sup.supported), None)
            if not sources:  # the model cited nothing usable: the verifier looks for the support
                for k in range(1, n + 1):
                    sup = self.verifier.check(question, s.text, prompt.chunks[k - 1], cache=cache,
                                              abstain_threshold=abstain_threshold)
                    if sup.supported and (found is None or _rank(sup) > _rank(found[1])):
                        found = (k, sup)
                if found is not None:
                    sources, attributed, checks = [found[0]], True, [found]
            for k, sup in checks:
                chunk = prompt.chunks[k - 1]
                if k not in citations or (sup.supported and not citations[k].supported):
                    a, b = sup.span
                    citations[k] = Citation(
                        chunk_id=int(chunk.chunk_id), doc_id=chunk.doc_id or "", char_start=a, char_end=b,
                        doc_char_start=chunk.char_start + a, doc_char_end=chunk.char_start + b,
                        quote=chunk.text[a:b], source=k, supported=sup.supported, attributed=attributed,
                    )
            sentences.append(AnswerSentence(
                text=s.text, char_start=s.start, char_end=s.end, sources=sources,
                chunk_ids=[int(prompt.chunks[k - 1].chunk_id) for k in sources],
                supported=found is not None, support=found[1].how if found is not None else None,
                attributed=attributed,
            ))
        unsupported = not any(s.supported for s in sentences)  # also when nothing but markers was written
        abstain = unsupported and abstain_unsupported
        return AnswerResult(
            answer=None if abstain else raw, abstained=abstain, citations=list(citations.values()),
            sentences=sentences, unsupported=unsupported, **base,
        )


def _rank(sup: Support) -> tuple[int, float]:
    """Stronger support first: the reader's, then the larger overlap."""
    return (2 if sup.how == "reader" else 1 if sup.how == "overlap" else 0), sup.score


def _sync_packed(packed: PackedContext, prompt: ChatPrompt) -> None:
    """Make the packed context say what the prompt holds: its real token count, and any chunk the
    prompt had to shorten or drop (the filter counts with upper bounds, so this is rare)."""
    n = len(prompt.chunks)
    for cand in packed.kept[n:]:
        packed.cut.append((cand, CUT_BUDGET))
    del packed.kept[n:]
    for i in prompt.truncated_chunks:
        cid = packed.kept[i].chunk_id
        if cid not in packed.truncated:
            packed.truncated.append(cid)
        packed.kept[i] = _shortened(packed.kept[i], prompt.chunks[i].text)
    packed.tokens = len(prompt.input_ids)


def _shortened(cand: Candidate, text: str) -> Candidate:
    return replace(cand, text=text, char_end=cand.char_start + len(text)) if text != cand.text else cand
