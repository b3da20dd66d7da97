"""Training examples for the grounded QA generator, built from SQuAD-format data.

Every example is laid out by :class:`generator.prompt.PromptBuilder` (the format the service uses)
and carries pointer targets: the generator answers by copying prompt tokens, so each decoding step
is a class over ``[ABSTAIN, END] + prompt positions``. Kinds of example, mixed by ``QAMix``:

- ``gold``: the question with its own paragraph only;
- ``multi``: the gold paragraph among 1-4 distractors at a random position;
- ``neg_removed``: the gold paragraph with the sentences holding the answer removed (on-topic but
  unsupported: the hard case for abstention);
- ``neg_other``: a paragraph of the same article, or BM25 distractors, lacking the answer;
- ``neg_multi``: only distractors;
- ``neg_negation``, ``neg_antonym``, ``neg_swap``, ``neg_word``, ``neg_condition``: the gold paragraph with the question rewritten
  by rule so the paragraph no longer answers it (:mod:`generator.unanswerable`), the adversarial
  kind SQuAD 2.0 asks to refuse;
- ``pos_antonym``, ``pos_swap``, ``pos_word``: their answerable twins, the question rewritten by the
  same rule and the paragraph rewritten to match (:func:`generator.unanswerable.make_supported`),
  so that refusing depends on what the paragraph states, not on how the question looks.

Rule-made rewrites are mostly easy (a word the paragraph lacks gives them away), while SQuAD 2.0's
crowd workers wrote theirs to look answerable. With ``mine`` > 1 and a ``scorer`` (the model being
trained, :func:`generator.train_qa.abstain_scorer`) each rule-made negative is the hardest of
``mine`` candidates: one of the kind drawn, the others of kinds drawn in the mix's proportions of
rule kinds, whichever the model finds most answerable (adversarial filtering, Zellers et al. 2018).

Distractors never contain any reference answer string.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from generator.prompt import ContextChunk, Prompt, PromptBuilder
from generator.unanswerable import (
    SUPPORTED_KINDS,
    UNANSWERABLE_KINDS,
    make_supported,
    make_unanswerable,
)

ABSTAIN_CLASS = 0
END_CLASS = 1
POINTER_OFFSET = 2  # class index = POINTER_OFFSET + prompt position

_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass(frozen=True)
class QAItem:
    """One question with its paragraph; ``answers``/``answer_starts`` are empty when unanswerable."""

    qid: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]
    article: str


@dataclass
class QAExample:
    """Model inputs with teacher-forced answer steps.

    ``input_ids`` is the prompt followed by the answer inputs ``[ANS] a_1 .. a_n``; ``prefix_len``
    is the prompt length; ``targets[i]`` is the class predicted at answer input ``i``."""

    input_ids: list[int]
    token_type_ids: list[int]
    prefix_len: int
    targets: list[int]
    kind: str
    gold_chunk: int  # index of the gold chunk in the prompt, -1 if none
    pointer_mask: list[bool]  # per prompt position: may the answer copy it (chunk text only)
    block: list[int]  # per prompt position: -1 question, i chunk i (see generator.prompt)
    position_ids: list[int]  # prompt and answer inputs


@dataclass(frozen=True)
class QAMix:
    """Proportions of example kinds (normalised) and the multi-chunk settings."""

    gold: float = 0.50
    multi: float = 0.20
    neg_removed: float = 0.15
    neg_other: float = 0.08
    neg_multi: float = 0.07
    neg_negation: float = 0.0
    neg_antonym: float = 0.0
    neg_swap: float = 0.0
    neg_word: float = 0.0
    neg_condition: float = 0.0
    pos_antonym: float = 0.0
    pos_swap: float = 0.0
    pos_word: float = 0.0
    neg_within: float = 0.0
    pos_within: float = 0.0
    max_distractors: int = 4
    max_len: int = 1024
    max_answer_tokens: int = 30

    def pick(self, rng: random.Random) -> str:
        kinds = ("gold", "multi", "neg_removed", "neg_other", "neg_multi", *UNANSWERABLE_KINDS, *SUPPORTED_KINDS)
        return rng.choices(kinds, weights=[getattr(self, k) for k in kinds])[0]


def answer_token_span(prompt: Prompt, chunk_index: int, char_start: int, char_end: int) -> tuple[int, int] | None:
    """Prompt positions [first, last] of the tokens of chunk ``chunk_index`` overlapping the char
    span; None if the span fell outside the (possibly truncated) chunk."""
    s, e = prompt.chunk_spans[chunk_index]
    first = last = None
    for t in range(s, e):
        a, b = prompt.token_chars[t]
        if b <= char_start or a >= char_end:
            continue
        if first is None:
            first = t
        last = t
    if first is None or last is None:
        return None
    return first, last


def remove_answer_sentences(context: str, answers: Sequence[str]) -> str | None:
    """The paragraph without the sentences that contain any answer; None if nothing is left or an
    answer string still occurs."""
    sents = _SENT_END.split(context)
    keep = [s for s in sents if not any(a.lower() in s.lower() for a in answers if a)]
    if len(keep) == len(sents) or not keep:
        return None
    text = " ".join(keep)
    if any(a and a.lower() in text.lower() for a in answers):
        return None
    return text


def make_example(
    builder: PromptBuilder,
    item: QAItem,
    chunks: list[ContextChunk],
    gold_index: int,
    kind: str,
    max_len: int,
    max_answer_tokens: int,
) -> QAExample | None:
    """Lay out one example; ``gold_index`` is the chunk holding ``item``'s answer (-1: abstain)."""
    prompt = builder.build(item.question, chunks, max_len=max_len - max_answer_tokens - 2)
    ids = list(prompt.input_ids)
    types = list(prompt.token_type_ids)
    if gold_index >= 0 and gold_index < len(prompt.chunks):
        span = answer_token_span(prompt, gold_index, item.answer_starts[0], item.answer_starts[0] + len(item.answers[0]))
        if span is None:
            return None  # the answer was truncated away; skip rather than teach a wrong abstention
        first, last = span
        if last - first + 1 > max_answer_tokens:
            return None
        answer_positions = list(range(first, last + 1))
        inputs = [builder.answer_id] + [ids[p] for p in answer_positions]
        targets = [POINTER_OFFSET + p for p in answer_positions] + [END_CLASS]
    elif gold_index >= 0:
        return None
    else:
        inputs = [builder.answer_id]
        targets = [ABSTAIN_CLASS]
    prefix = len(ids)
    ids.extend(inputs)
    types.extend([0] * len(inputs))
    pointer_mask = [c >= 0 for c in prompt.token_chunk]
    a0 = prompt.answer_start_position
    positions = list(prompt.position_ids) + list(range(a0, a0 + len(inputs)))
    gold = gold_index if gold_index < len(prompt.chunks) else -1
    return QAExample(ids, types, prefix, targets, kind, gold, pointer_mask, list(prompt.block), positions)


def paragraphs_by_article(items: Sequence[QAItem]) -> dict[str, list[str]]:
    """The distinct paragraphs of each article, in order of first appearance."""
    by_article: dict[str, list[str]] = {}
    for it in items:
        paras = by_article.setdefault(it.article, [])
        if it.context not in paras:
            paras.append(it.context)
    return by_article


class QAExampleSource:
    """Draws training examples from SQuAD items.

    ``distractors(item, n)`` returns up to ``n`` paragraph texts that lack the item's answers (e.g.
    BM25 neighbours); paragraphs of the same article are used too."""

    def __init__(
        self,
        builder: PromptBuilder,
        items: Sequence[QAItem],
        distractors: Callable[[QAItem, int], list[str]],
        mix: QAMix | None = None,
        seed: int = 0,
        *,
        mine: int = 1,
        scorer: Callable[[list[QAExample]], list[float]] | None = None,
    ) -> None:
        if mine < 1 or (mine > 1 and scorer is None):
            raise ValueError("mine must be >= 1, and mining (mine > 1) needs a scorer")
        self.mine, self.scorer = mine, scorer
        self.builder = builder
        self.items = [it for it in items if it.answers]
        self.distractors = distractors
        self.mix = mix or QAMix()
        # mining's other candidates: rule kinds drawn in the mix's proportions
        self._rules = [k for k in UNANSWERABLE_KINDS if getattr(self.mix, k) > 0]
        self._rule_weights = [getattr(self.mix, k) for k in self._rules]
        self.rng = random.Random(seed)
        self.by_article = paragraphs_by_article(items)

    def _clean(self, texts: list[str], item: QAItem) -> list[str]:
        low = [a.lower() for a in item.answers if a]
        return [t for t in texts if t != item.context and not any(a in t.lower() for a in low)]

    def _same_article(self, item: QAItem) -> list[str]:
        return self._clean(self.by_article.get(item.article, []), item)

    def example(self, item: QAItem, kind: str) -> QAExample | None:
        m, rng = self.mix, self.rng
        gold = ContextChunk(0, item.context)
        if kind == "gold":
            return make_example(self.builder, item, [gold], 0, kind, m.max_len, m.max_answer_tokens)
        if kind == "neg_removed":
            text = remove_answer_sentences(item.context, item.answers)
            if text is None:
                return None
            return make_example(self.builder, item, [ContextChunk(0, text)], -1, kind, m.max_len, m.max_answer_tokens)
        others = [p for p in self.by_article.get(item.article, []) if p != item.context]
        if kind in UNANSWERABLE_KINDS:
            kinds = [kind]
            if self.mine > 1:
                kinds += rng.choices(self._rules, weights=self._rule_weights, k=self.mine - 1) if self._rules else [kind] * (self.mine - 1)
            candidates, questions = [], set()
            for k in kinds:
                question = make_unanswerable(k, item.question, item.context, others, rng, item.answer_starts[0])
                if question is None or question in questions:
                    continue
                questions.add(question)
                neg = QAItem(item.qid, question, item.context, (), (), item.article)
                candidates.append(make_example(self.builder, neg, [gold], -1, k, m.max_len, m.max_answer_tokens))
            if len(candidates) > 1:
                scores = self.scorer(candidates)  # p(ABSTAIN): the lowest looks most answerable
                return candidates[min(range(len(candidates)), key=scores.__getitem__)]
            return candidates[0] if candidates else None
        if kind in SUPPORTED_KINDS:
            made = make_supported(kind, item.question, item.context, item.answers[0], item.answer_starts[0], others, rng)
            if made is None:
                return None
            question, context, answer, start = made
            twin = QAItem(item.qid, question, context, (answer,), (start,), item.article)
            return make_example(self.builder, twin, [ContextChunk(0, context)], 0, kind, m.max_len, m.max_answer_tokens)
        n = rng.randint(1, m.max_distractors)
        pool = self._clean(self.distractors(item, n + 2), item)
        same = self._same_article(item)
        rng.shuffle(same)
        pool = pool[: max(1, n - 1)] + same
        if kind == "neg_other":
            if not pool:
                return None
            return make_example(self.builder, item, [ContextChunk(0, pool[0])], -1, kind, m.max_len, m.max_answer_tokens)
        others = [ContextChunk(i + 1, t) for i, t in enumerate(pool[:n])]
        if not others:
            return None
        if kind == "neg_multi":
            return make_example(self.builder, item, others, -1, kind, m.max_len, m.max_answer_tokens)
        pos = rng.randint(0, len(others))
        chunks = others[:pos] + [gold] + others[pos:]
        return make_example(self.builder, item, chunks, pos, kind, m.max_len, m.max_answer_tokens)

    def __iter__(self) -> Iterator[QAExample]:
        """An endless stream of examples in random order (reshuffled every pass)."""
        order = list(range(len(self.items)))
        while True:
            self.rng.shuffle(order)
            for i in order:
                ex = self.example(self.items[i], self.mix.pick(self.rng))
                if ex is not None:
                    yield ex
