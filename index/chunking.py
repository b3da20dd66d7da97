"""Split document text into overlapping, token-bounded chunks that prefer sentence boundaries.

A text is tokenized once with the encoder's tokenizer (no special tokens); chunking then works on
the token character offsets only, so a chunk's text is always an exact slice of the original string
(``text[char_start:char_end]``, case and accents kept) and a million-character document costs one
tokenizer pass plus linear work.

Rules, for a window of ``max_tokens`` tokens starting at token ``s``:

- the chunk ends after the last sentence end inside the window (``.``, ``!`` or ``?``, possibly
  followed by closing quotes or brackets, then whitespace; or the end of a paragraph, i.e. a blank
  line follows) if that end lies past the middle of the window;
- otherwise it ends at the last word boundary in the last quarter of the window, and failing that
  exactly at the token limit;
- the next chunk starts ``overlap`` tokens before the previous end, moved forward to the start of a
  sentence (or else of a word) when one lies within ``overlap // 2`` tokens.
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from common.errors import InvalidInput

logger = logging.getLogger(__name__)

MIN_MAX_TOKENS = 16
DEFAULT_CHUNK_TOKENS = 200  # a collection's chunk_tokens unless it sets its own
DEFAULT_CHUNK_OVERLAP = 40

# A sentence ends after terminal punctuation (and any closing quotes/brackets) followed by whitespace
# or the end of the text; a paragraph ends at its last non-space character before a blank line.
_SENTENCE_END = re.compile(r"[.!?]+[)\]\"'»”’]*(?=\s|\Z)")
_PARAGRAPH_END = re.compile(r"\S(?=[^\S\n]*\n[^\S\n]*\n)")


class Encoding(Protocol):
    """What the chunker reads of a tokenized text: per token, the ``(start, end)`` character span
    it came from (``retriever.tokenizer.Encoded`` is one)."""

    @property
    def offsets(self) -> Sequence[tuple[int, int]]:
        """Per token, its ``(start, end)`` character span."""
        ...


class ChunkTokenizer(Protocol):
    """What the chunker needs of a tokenizer (``retriever.tokenizer.Tokenizer`` is one): token
    offsets of one text or of a batch, without special tokens."""

    def encode(self, text: str, *, add_special_tokens: bool = ...) -> Encoding:
        """The tokens of one text."""
        ...

    def encode_batch(
        self, texts: list[str], *, add_special_tokens: bool = ...
    ) -> Sequence[Encoding]:
        """The tokens of each text, in order."""
        ...


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (stripped, non-empty), cut where the chunker prefers to cut."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append(text[start:m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document: ``text == document_text[char_start:char_end]``."""

    ordinal: int
    text: str
    char_start: int
    char_end: int
    token_count: int


class Chunker:
    """Token-window chunker with overlap and sentence-boundary preference.

    ``max_tokens`` counts encoder tokens without special tokens (keep it at most the encoder's
    maximum sequence length minus 2 for ``[CLS]``/``[SEP]``).
    """

    def __init__(self, tokenizer: ChunkTokenizer, max_tokens: int = DEFAULT_CHUNK_TOKENS, overlap: int = DEFAULT_CHUNK_OVERLAP) -> None:
        if (
            not isinstance(max_tokens, int)
            or isinstance(max_tokens, bool)
            or max_tokens < MIN_MAX_TOKENS
        ):
            raise InvalidInput(
                f"max_tokens must be an integer >= {MIN_MAX_TOKENS}, got {max_tokens!r}"
            )
        if (
            not isinstance(overlap, int)
            or isinstance(overlap, bool)
            or not 0 <= overlap < max_tokens
        ):
            raise InvalidInput(
                f"overlap must be an integer with 0 <= overlap < max_tokens ({max_tokens}), got {overlap!r}"
            )
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap = overlap

    def chunk(self, text: str) -> list[Chunk]:
        """Chunks of ``text`` in order; ``[]`` for empty or whitespace-only text."""
        if not isinstance(text, str):
            raise InvalidInput(f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            return []
        return self._chunk_encoded(text, self.tokenizer.encode(text, add_special_tokens=False))

    def chunk_batch(self, texts: list[str]) -> list[list[Chunk]]:
        """``[self.chunk(t) for t in texts]``, tokenizing the batch in one (parallel) call."""
        for t in texts:
            if not isinstance(t, str):
                raise InvalidInput(f"text must be a string, got {type(t).__name__}")
        live = [i for i, t in enumerate(texts) if t.strip()]
        out: list[list[Chunk]] = [[] for _ in texts]
        encs = self.tokenizer.encode_batch([texts[i] for i in live], add_special_tokens=False)
        for i, enc in zip(live, encs, strict=True):
            out[i] = self._chunk_encoded(texts[i], enc)
        return out

    def _chunk_encoded(self, text: str, enc: Encoding) -> list[Chunk]:
        """The chunks of ``text``, from its token offsets ``enc``."""
        n = len(enc.offsets)
        if n == 0:
            return []
        offs = np.asarray(enc.offsets, dtype=np.int64).reshape(n, 2)
        starts, ends = offs[:, 0], offs[:, 1]

        # Boundary j (1..n) lies between token j-1 and token j.
        is_sentence_end = np.zeros(len(text) + 1, dtype=bool)
        for pattern in (_SENTENCE_END, _PARAGRAPH_END):
            for m in pattern.finditer(text):
                is_sentence_end[m.end()] = True
        sent_bounds = (np.flatnonzero(is_sentence_end[ends]) + 1).tolist()
        # A word boundary: whitespace between two tokens (never inside "un ##believ ##able" or "fox .").
        gaps = np.flatnonzero(starts[1:] > ends[:-1]) + 1
        word_bounds = gaps.tolist() + [n]

        chunks: list[Chunk] = []
        start = 0
        close = max(1, self.overlap // 2)
        while True:
            end = self._window_end(start, n, sent_bounds, word_bounds)
            cs, ce = int(starts[start]), int(ends[end - 1])
            chunks.append(Chunk(len(chunks), text[cs:ce], cs, ce, end - start))
            if end >= n:
                break
            start = self._next_start(start, end, close, sent_bounds, word_bounds)
        logger.debug("chunked %d chars / %d tokens into %d chunks", len(text), n, len(chunks))
        return chunks

    def _window_end(
        self, start: int, n: int, sent_bounds: list[int], word_bounds: list[int]
    ) -> int:
        """Where the chunk starting at token ``start`` ends (see the module docstring)."""
        limit = start + self.max_tokens
        if limit >= n:
            return n
        mid = start + self.max_tokens // 2
        i = bisect_right(sent_bounds, limit) - 1
        if i >= 0 and sent_bounds[i] > mid:
            return sent_bounds[i]
        i = bisect_right(word_bounds, limit) - 1
        if i >= 0 and word_bounds[i] > max(start, limit - self.max_tokens // 4):
            return word_bounds[i]
        return limit

    def _next_start(
        self, start: int, end: int, close: int, sent_bounds: list[int], word_bounds: list[int]
    ) -> int:
        """Where the chunk after the one ``[start, end)`` starts: ``overlap`` tokens back, moved
        to a nearby sentence or word start."""
        nxt = max(end - self.overlap, start + 1)
        if nxt >= end:
            return end
        for bounds in (sent_bounds, word_bounds):
            i = bisect_left(bounds, nxt)
            if i < len(bounds) and bounds[i] < end and bounds[i] - nxt <= close:
                return bounds[i]
        return nxt
