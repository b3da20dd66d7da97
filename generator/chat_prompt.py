"""The prompt of a generative (chat) model answering from numbered sources.

The packed chunks are listed as ``[1] text``, ``[2] text`` ... in the user turn, after the
instruction (in the system turn) to answer only from them, cite them by number, or reply with the
exact refusal sentence. The whole conversation is rendered with the model's own chat template and
tokenized with the model's own tokenizer, so what the context filter counts is what the model
reads. Every token of a chunk's text remembers its chunk and its character span there, so
diagnostics can sum the answer's attention per chunk.

Layout (text level, inside the template's turns)::

    system: <instruction>                       user: Sources:
                                                      [1] chunk 1 text
                                                      <blank line>
                                                      [2] chunk 2 text
                                                      <blank line>
                                                      Question: <question>
    assistant: <generated answer>
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from common.errors import BudgetExceeded, InvalidInput
from generator.citations import REFUSAL
from generator.prompt import ContextChunk

INSTRUCTION = (
    "Answer the question using only the numbered sources. Answer in one short sentence and cite "
    "the source you use by its number in square brackets, like [1]. If the sources do not contain "
    f"the answer, reply exactly: {REFUSAL}"
)
HEADER = "Sources:\n"
SEPARATOR = "\n\n"
# What a chunk's marker and separator may cost beyond its text: "[NNN] " and the blank line, plus
# a margin for merges across the boundaries (byte-level BPE may join a space to the next word).
MARKER_SLACK = 4


@dataclass
class ChatPrompt:
    """A rendered chat prompt and its maps back to the chunks (``causal``: the model reads it left
    to right, unlike the extractive model's parallel-context prompt)."""

    input_ids: list[int]
    text: str
    chunks: list[ContextChunk]
    chunk_spans: list[tuple[int, int]]  # token [start, end) of each chunk's text in input_ids
    token_chunk: list[int]  # chunk index per token, -1 outside chunk text
    token_chars: list[tuple[int, int]]  # per token, char span in its chunk's text ((0, 0) outside)
    truncated_chunks: list[int] = field(default_factory=list)
    causal: bool = True

    def __len__(self) -> int:
        return len(self.input_ids)


class ChatPromptBuilder:
    """Builds :class:`ChatPrompt` objects for a chat model and counts what the pieces cost with its
    tokenizer (the interface :class:`generator.context.ContextFilter` packs with)."""

    def __init__(self, chat: Any, *, instruction: str = INSTRUCTION, max_question_tokens: int = 128) -> None:
        self.chat = chat
        self.tokenizer = chat.tokenizer
        self.instruction = instruction
        self.max_question_tokens = max_question_tokens
        self._marker_cost = self.tokenizer.count("[100] ") + self.tokenizer.count(SEPARATOR) + MARKER_SLACK

    # --- costs -----------------------------------------------------------------------------
    def _question(self, question: str) -> str:
        question = " ".join(question.split())
        if not question:
            raise InvalidInput("the question is empty")
        enc = self.tokenizer.encode(question, add_special_tokens=False)
        if len(enc.ids) > self.max_question_tokens:
            question = question[: enc.offsets[self.max_question_tokens - 1][1]]
        return question

    def question_cost(self, question: str) -> int:
        """Tokens of the whole conversation with no source listed: instruction, template markup,
        the (possibly shortened) question and the assistant's opening."""
        return len(self._render(self._question(question), [])[0])

    def chunk_cost(self, text: str) -> int:
        """An upper bound of the tokens a chunk adds: its text plus its ``[n]`` marker and
        separator."""
        return self.tokenizer.count(text) + self._marker_cost

    # --- building --------------------------------------------------------------------------
    def _messages(self, user: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.instruction}, {"role": "user", "content": user}]

    def _render(self, question: str, texts: Sequence[str]) -> tuple[Any, str, list[tuple[int, int]]]:
        """The tokenized conversation (ids and offsets), the rendered text and each chunk text's
        character span in it."""
        parts, spans, pos = [HEADER], [], len(HEADER)
        for i, t in enumerate(texts, 1):
            marker = f"[{i}] "
            spans.append((pos + len(marker), pos + len(marker) + len(t)))
            piece = marker + t + SEPARATOR
            parts.append(piece)
            pos += len(piece)
        user = "".join(parts) + f"Question: {question}"
        text = self.chat.render(self._messages(user), add_generation_prompt=True)
        at = text.find(user)
        if at < 0:
            raise InvalidInput("the chat template changed the message text; chunk positions cannot be mapped")
        enc = self.tokenizer.encode(text, add_special_tokens=False)  # the template holds the specials
        return enc, text, [(a + at, b + at) for a, b in spans]

    def build(self, question: str, chunks: Sequence[ContextChunk], *, max_len: int | None = None) -> ChatPrompt:
        """Lay out ``question`` and ``chunks`` in order. With ``max_len``, the last chunks are
        shortened at a token boundary (or dropped) until the prompt fits; raises
        :class:`BudgetExceeded` when not even the question fits."""
        q = self._question(question)
        texts = [c.text for c in chunks]
        truncated: list[int] = []
        while True:
            enc_all, text, spans = self._render(q, texts)
            ids = enc_all.ids
            if max_len is None or len(ids) <= max_len:
                break
            if not texts:
                raise BudgetExceeded(f"max_len {max_len} cannot hold the question ({len(ids)} tokens with the instruction)")
            over = len(ids) - max_len
            enc = self.tokenizer.encode(texts[-1], add_special_tokens=False)
            keep = len(enc.ids) - over - 1
            if keep <= 0:
                texts.pop()
                truncated = [i for i in truncated if i < len(texts)]
                continue
            texts[-1] = texts[-1][: enc.offsets[keep - 1][1]]
            if len(texts) - 1 not in truncated:
                truncated.append(len(texts) - 1)
        kept = [
            c if t == c.text else ContextChunk(c.chunk_id, t, c.doc_id, c.char_start)
            for c, t in zip(chunks, texts, strict=False)
        ]
        offsets = enc_all.offsets
        token_chunk, token_chars = [-1] * len(ids), [(0, 0)] * len(ids)
        chunk_spans = []
        for ci, (a, b) in enumerate(spans):
            first = last = None
            for ti, (s, e) in enumerate(offsets):
                if e > a and s < b and e > s:
                    token_chunk[ti] = ci
                    token_chars[ti] = (max(s, a) - a, min(e, b) - a)
                    first = ti if first is None else first
                    last = ti
            chunk_spans.append((first, last + 1) if first is not None else (0, 0))
        return ChatPrompt(
            input_ids=ids, text=text, chunks=kept, chunk_spans=chunk_spans, token_chunk=token_chunk,
            token_chars=token_chars, truncated_chunks=truncated,
        )
