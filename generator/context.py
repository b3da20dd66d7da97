"""The context filter between retrieval and generation: drop chunks under a score floor, drop
near-duplicates, then pack the best chunks into a token budget counted with the generator's
tokenizer. The budget covers the whole generator input (question, markers, chunks) plus the answer
reserve, and is never overrun.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from common.errors import BudgetExceeded, InvalidInput
from generator.prompt import ContextChunk, PromptBuilder

# Why a retrieved chunk did not reach the generator.
CUT_SCORE_FLOOR = "score_floor"
CUT_DUPLICATE = "duplicate"
CUT_BUDGET = "budget"

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Candidate:
    """A retrieved chunk with its rank (1-based) and scores; ``score`` is what the floor and the
    packing order use (the fused score in hybrid mode)."""

    chunk_id: int
    doc_id: str
    text: str
    score: float
    rank: int
    char_start: int = 0
    char_end: int = 0
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class PackedContext:
    kept: list[Candidate]
    cut: list[tuple[Candidate, str]]  # (candidate, reason)
    truncated: list[int]  # chunk ids of kept candidates that were shortened to fit
    tokens: int  # prompt tokens used, answer reserve excluded
    budget: int
    answer_reserve: int

    def chunks(self) -> list[ContextChunk]:
        return [ContextChunk(c.chunk_id, c.text, c.doc_id, c.char_start) for c in self.kept]


@dataclass(frozen=True)
class ContextFilter:
    """Settings of the filter. ``score_floor`` applies to ``Candidate.score``; ``dedup_threshold``
    is the word-shingle Jaccard similarity above which a chunk counts as a near-duplicate of one
    already kept; ``min_truncated_tokens`` is the smallest piece of a chunk worth keeping when only
    part of it fits."""

    score_floor: float | None = None
    dedup_threshold: float = 0.9
    answer_reserve: int = 32
    min_truncated_tokens: int = 24
    truncate: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise InvalidInput("dedup_threshold must be in (0, 1]")
        if self.answer_reserve < 1:
            raise InvalidInput("answer_reserve must be at least 1")

    def minimum_budget(self, builder: PromptBuilder, question: str) -> int:
        """The smallest budget that holds the question, the answer reserve and one chunk token."""
        return builder.question_cost(question) + 3 + self.answer_reserve

    def apply(
        self,
        question: str,
        candidates: Sequence[Candidate],
        builder: PromptBuilder,
        budget: int,
        max_context: int | None = None,
    ) -> PackedContext:
        """Filter and pack ``candidates`` (best first) for ``question`` into ``budget`` tokens.
        This is the one check of a budget: an integer, at most the generator's ``max_context``,
        and at least :meth:`minimum_budget` (``BudgetExceeded`` otherwise)."""
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise BudgetExceeded("budget must be an integer number of tokens")
        if max_context is not None and budget > max_context:
            raise BudgetExceeded(f"budget {budget} exceeds the generator's context window of {max_context} tokens")
        minimum = self.minimum_budget(builder, question)
        if budget < minimum:
            raise BudgetExceeded(
                f"budget {budget} is below the minimum {minimum} for this question "
                f"(question, markers and an answer reserve of {self.answer_reserve} tokens)"
            )
        used = builder.question_cost(question)
        room = budget - self.answer_reserve
        kept: list[Candidate] = []
        cut: list[tuple[Candidate, str]] = []
        truncated: list[int] = []
        shingles: list[set[str]] = []
        for cand in sorted(candidates, key=lambda c: c.rank):
            if self.score_floor is not None and cand.score < self.score_floor:
                cut.append((cand, CUT_SCORE_FLOOR))
                continue
            sh = _shingles(cand.text)
            if any(_jaccard(sh, other) >= self.dedup_threshold for other in shingles):
                cut.append((cand, CUT_DUPLICATE))
                continue
            cost = builder.chunk_cost(cand.text)
            if used + cost <= room:
                kept.append(cand)
                shingles.append(sh)
                used += cost
                continue
            space = room - used - 2
            if self.truncate and space >= self.min_truncated_tokens:
                part = _truncate(builder, cand, space)
                kept.append(part)
                truncated.append(part.chunk_id)
                shingles.append(sh)
                used += builder.chunk_cost(part.text)
                continue
            cut.append((cand, CUT_BUDGET))
        return PackedContext(kept, cut, truncated, used, budget, self.answer_reserve)


def _truncate(builder: PromptBuilder, cand: Candidate, max_tokens: int) -> Candidate:
    """The first ``max_tokens`` tokens of a candidate, ending at a token boundary."""
    enc = builder.tokenizer.encode(cand.text, add_special_tokens=False)
    end_char = enc.offsets[max_tokens - 1][1] if len(enc.ids) > max_tokens else len(cand.text)
    text = cand.text[:end_char]
    # Re-tokenising a prefix can merge differently at the cut; shrink until it fits.
    while end_char > 0 and builder.tokenizer.count(text) > max_tokens:
        end_char = text.rstrip().rfind(" ")
        text = cand.text[: max(end_char, 0)]
    return Candidate(
        chunk_id=cand.chunk_id,
        doc_id=cand.doc_id,
        text=text,
        score=cand.score,
        rank=cand.rank,
        char_start=cand.char_start,
        char_end=cand.char_start + len(text),
        scores=dict(cand.scores),
    )


def _shingles(text: str, n: int = 3) -> set[str]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 1.0 if a == b else 0.0
    return len(a & b) / len(a | b)
