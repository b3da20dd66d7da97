"""The one prompt format of the grounded QA generator, shared by training, serving and evaluation.

Layout (token level)::

    [CLS] question [SEP] [CHUNK] chunk_1 [SEP] [CHUNK] chunk_2 [SEP] ... | [ANS] answer... [END]
    <--- block -1 ----> <----- block 0 ----> <----- block 1 ---->         <- causal, decoded ->

Chunks are read in parallel (Parallel Context Windows, Ratner et al. 2023; Fusion-in-Decoder,
Izacard & Grave 2021): the question attends to itself, each chunk block attends bidirectionally to
the question and to itself, and the answer attends causally to everything. Position ids restart
after the question for every chunk, and the answer continues after the longest block. So the
model reads a chunk the same way whether it is alone or among others, the context can hold many
more tokens than the position table (only question + one chunk + answer must fit), and attention
diagnostics see each chunk's share of the answer's attention undiluted by cross-chunk mixing.

The question gets token type 0, the chunks token type 1. Every chunk token remembers the chunk it
came from and its character span in that chunk's original text, so an answer copied from the prompt
maps back to exact original characters (a lowercasing tokenizer never leaks into what users see)
and to the chunk it cites.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from common.errors import BudgetExceeded, InvalidInput
from retriever.tokenizer import Tokenizer

# Control tokens. BERT vocabularies carry [unusedN] slots that we claim; other vocabularies get
# these strings added as special tokens.
ABSTAIN = "[unused0]"
END = "[unused1]"
ANSWER = "[unused2]"
CHUNK = "[unused3]"
CONTROL_TOKENS = (ABSTAIN, END, ANSWER, CHUNK)


@dataclass(frozen=True)
class ContextChunk:
    """A piece of retrieved text handed to the generator. ``char_start`` is where ``text`` starts
    in its document, so citations can give document-level spans."""

    chunk_id: int | str
    text: str
    doc_id: str | None = None
    char_start: int = 0


@dataclass
class Prompt:
    """Token ids of a built prompt and the maps back to chunks and characters."""

    input_ids: list[int]
    token_type_ids: list[int]
    chunks: list[ContextChunk]
    question_tokens: int
    chunk_spans: list[tuple[int, int]]  # token [start, end) of each chunk's text in input_ids
    token_chunk: list[int]  # chunk index per token, -1 outside chunk text
    token_chars: list[tuple[int, int]]  # per token, char span in its chunk's text ((0, 0) outside)
    truncated_chunks: list[int] = field(default_factory=list)  # chunk indices cut to fit max_len
    block: list[int] = field(default_factory=list)  # -1 question, i for chunk i (with its markers)
    position_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def prefix_len(self) -> int:
        """Tokens read bidirectionally (everything before the answer)."""
        return len(self.input_ids)

    @property
    def answer_start_position(self) -> int:
        """Position id of the first answer token: after the question and the longest block."""
        return max(self.position_ids) + 1 if self.position_ids else 0

    @property
    def max_position(self) -> int:
        """The largest position id an answer of ``n`` tokens reaches is this plus ``n``."""
        return self.answer_start_position

    def span_text(self, start: int, end: int) -> tuple[int, int, int]:
        """Map a token span [start, end] (inclusive, inside one chunk) to ``(chunk index, char
        start, char end)`` in that chunk's original text."""
        ci = self.token_chunk[start]
        if ci < 0 or self.token_chunk[end] != ci:
            raise InvalidInput(f"token span {start}..{end} is not inside one chunk")
        return ci, self.token_chars[start][0], self.token_chars[end][1]


class PromptBuilder:
    """Builds :class:`Prompt` objects and counts what pieces cost, with the generator's tokenizer."""

    def __init__(self, tokenizer: Tokenizer, *, max_question_tokens: int = 64) -> None:
        self.tokenizer = tokenizer
        self.max_question_tokens = max_question_tokens
        ids = [tokenizer.token_to_id(t) for t in CONTROL_TOKENS]
        if any(i is None for i in ids):
            ids = tokenizer.add_special_tokens(list(CONTROL_TOKENS))
        self.abstain_id, self.end_id, self.answer_id, self.chunk_id = ids
        if tokenizer.cls_id is None or tokenizer.sep_id is None:
            raise InvalidInput("the generator tokenizer needs [CLS]/[SEP]-like tokens")
        self.cls_id: int = tokenizer.cls_id
        self.sep_id: int = tokenizer.sep_id

    # --- costs -----------------------------------------------------------------------------
    def question_cost(self, question: str) -> int:
        """Tokens the question takes, with [CLS] and [SEP]."""
        return min(self.tokenizer.count(question), self.max_question_tokens) + 2

    def chunk_cost(self, text: str) -> int:
        """Tokens a chunk takes, with its [CHUNK] and [SEP] markers."""
        return self.tokenizer.count(text) + 2

    # --- building --------------------------------------------------------------------------
    def build(
        self, question: str, chunks: Sequence[ContextChunk], *, max_len: int | None = None
    ) -> Prompt:
        """Lay out ``question`` and ``chunks`` in order. With ``max_len``, chunks that do not fit
        are truncated at a token boundary (the last one that partly fits) or dropped; raises
        :class:`BudgetExceeded` if not even the question fits."""
        question = question.strip()
        if not question:
            raise InvalidInput("the question is empty")
        tok = self.tokenizer
        q = tok.encode(question, add_special_tokens=False)
        q_ids = q.ids[: self.max_question_tokens]
        ids = [self.cls_id, *q_ids, self.sep_id]
        types = [0] * len(ids)
        token_chunk = [-1] * len(ids)
        token_chars: list[tuple[int, int]] = [(0, 0)] * len(ids)
        if max_len is not None and len(ids) + 3 > max_len:
            raise BudgetExceeded(
                f"max_len {max_len} cannot hold the question ({len(ids)} tokens) and one chunk token"
            )
        kept: list[ContextChunk] = []
        spans: list[tuple[int, int]] = []
        truncated: list[int] = []
        encs = tok.encode_batch([c.text for c in chunks], add_special_tokens=False) if chunks else []
        for chunk, enc in zip(chunks, encs, strict=True):
            c_ids, c_offs = enc.ids, enc.offsets
            if max_len is not None:
                room = max_len - len(ids) - 2
                if room <= 0:
                    break
                if len(c_ids) > room:
                    c_ids, c_offs = c_ids[:room], c_offs[:room]
                    truncated.append(len(kept))
            ci = len(kept)
            ids.append(self.chunk_id)
            types.append(1)
            token_chunk.append(-1)
            token_chars.append((0, 0))
            start = len(ids)
            ids.extend(c_ids)
            types.extend([1] * len(c_ids))
            token_chunk.extend([ci] * len(c_ids))
            token_chars.extend(tuple(o) for o in c_offs)
            spans.append((start, len(ids)))
            ids.append(self.sep_id)
            types.append(1)
            token_chunk.append(-1)
            token_chars.append((0, 0))
            if truncated and truncated[-1] == ci:
                end_char = c_offs[-1][1] if c_offs else 0
                chunk = ContextChunk(chunk.chunk_id, chunk.text[:end_char], chunk.doc_id, chunk.char_start)
            kept.append(chunk)
        q_len = len(q_ids) + 2
        block = [-1] * q_len
        positions = list(range(q_len))
        for ci, (s, e) in enumerate(spans):
            n = e - s + 2  # [CHUNK] + text + [SEP]
            block.extend([ci] * n)
            positions.extend(range(q_len, q_len + n))
        return Prompt(
            input_ids=ids,
            token_type_ids=types,
            chunks=kept,
            question_tokens=q_len,
            chunk_spans=spans,
            token_chunk=token_chunk,
            token_chars=token_chars,
            truncated_chunks=truncated,
            block=block,
            position_ids=positions,
        )
