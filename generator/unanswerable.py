"""Synthetic unanswerable questions, made from answerable ones by rule.

SQuAD 2.0's unanswerable questions were written against their paragraph to look answerable: the
paragraph is on topic and holds a plausible answer, but the question asks for something it does not
state. Rajpurkar et al. (2018) sort them into negation, antonym, entity swap, mutual exclusion,
impossible condition and other. Removing the answer sentence (``neg_removed`` in
:mod:`generator.qa_data`) teaches none of these, so a model trained only on it cannot tell an
adversarial question from a real one. Without SQuAD 2.0 training data, three of the categories can
be made from answerable questions by rule, keeping the gold paragraph as the context:

- ``negate_question``: "What did X found?" -> "What didn't X found?";
- ``antonym_question``: "the largest city" -> "the smallest city" (a fixed list of pairs);
- ``swap_entity``: a name or number of the question that the paragraph contains is replaced by one
  from another paragraph of the article that this paragraph lacks ("When did Chopin leave Warsaw?"
  -> "When did Liszt leave Warsaw?").

Every function returns ``None`` when its rule does not apply. The results are noisy (a swapped
question is occasionally still answerable), as crowd-written ones are too; the abstain threshold is
calibrated afterwards on held-out data (:mod:`generator.calibrate`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

_AUX = re.compile(
    r"\b(is|are|was|were|did|does|do|can|could|has|have|had|will|would|should|might|must)\b(?! not\b)",
    re.IGNORECASE,
)

_PAIRS = [
    ("first", "last"), ("largest", "smallest"), ("biggest", "smallest"), ("most", "least"),
    ("highest", "lowest"), ("earliest", "latest"), ("before", "after"), ("increase", "decrease"),
    ("increased", "decreased"), ("more", "fewer"), ("older", "younger"), ("oldest", "youngest"),
    ("longest", "shortest"), ("north", "south"), ("east", "west"), ("northern", "southern"),
    ("eastern", "western"), ("best", "worst"), ("maximum", "minimum"), ("major", "minor"),
    ("early", "late"), ("won", "lost"), ("win", "lose"), ("larger", "smaller"), ("higher", "lower"),
    ("above", "below"), ("inside", "outside"), ("public", "private"), ("positive", "negative"),
    ("successful", "unsuccessful"), ("began", "ended"), ("start", "end"), ("rise", "fall"),
    ("rich", "poor"), ("male", "female"), ("modern", "ancient"), ("common", "rare"),
    ("top", "bottom"), ("upper", "lower"), ("internal", "external"), ("strong", "weak"),
    ("legal", "illegal"), ("accepted", "rejected"), ("supported", "opposed"), ("open", "closed"),
    ("primary", "secondary"), ("greatest", "least"), ("popular", "unpopular"), ("main", "minor"),
    ("winter", "summer"), ("enter", "leave"),
]
_ANTONYM = {a: b for a, b in _PAIRS} | {b: a for a, b in _PAIRS}
_ANTONYM_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _ANTONYM), key=len, reverse=True)) + r")\b", re.IGNORECASE)

# A run of capitalised words (allowing "of", "the" inside), or a number.
_NAME = re.compile(r"\b[A-Z][\w'\-]*(?:\s+(?:of\s+|the\s+|de\s+)?[A-Z][\w'\-]*)*")
_NUMBER = re.compile(r"\b\d[\d,.]*\b")


_NEGATED = {
    "is": "isn't", "are": "aren't", "was": "wasn't", "were": "weren't", "did": "didn't",
    "does": "doesn't", "do": "don't", "can": "can't", "could": "couldn't", "has": "hasn't",
    "have": "haven't", "had": "hadn't", "will": "won't", "would": "wouldn't",
    "should": "shouldn't", "might": "mightn't", "must": "mustn't",
}


def negate_question(question: str) -> str | None:
    """Negate the question's first auxiliary verb ("did" -> "didn't")."""
    m = _AUX.search(question)
    if m is None or m.end() >= len(question.rstrip(" ?")):
        return None
    word = m.group(0)
    return question[: m.start()] + _match_case(_NEGATED[word.lower()], word) + question[m.end():]


def _match_case(word: str, like: str) -> str:
    if like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def antonym_question(question: str) -> str | None:
    """Replace the first word of the question that has an antonym in the fixed list."""
    m = _ANTONYM_RE.search(question)
    if m is None:
        return None
    word = m.group(0)
    return question[: m.start()] + _match_case(_ANTONYM[word.lower()], word) + question[m.end():]


def _spans(text: str, skip_first: bool) -> list[tuple[str, str]]:
    """(kind, text) of the names and numbers in ``text``; the opening word of a question is not a
    name just for being capitalised."""
    out = [("num", m.group(0).rstrip(",.")) for m in _NUMBER.finditer(text)]
    for m in _NAME.finditer(text):
        if skip_first and m.start() == 0:
            rest = m.group(0).split(None, 1)
            if len(rest) < 2:
                continue
            out.append(("name", rest[1]))
        else:
            out.append(("name", m.group(0)))
    return [(k, s) for k, s in out if len(s) > 1]


def swap_entity(question: str, context: str, others: Sequence[str], rng: random.Random) -> str | None:
    """Replace a name or number of ``question`` found in ``context`` with one of the same kind from
    ``others`` (other paragraphs of the article) that ``context`` does not contain."""
    ctx_low = context.lower()
    found = [(k, s) for k, s in _spans(question, skip_first=True) if s.lower() in ctx_low]
    if not found:
        return None
    kind, old = rng.choice(found)
    pool = {s for text in others for k, s in _spans(text, skip_first=False) if k == kind}
    pool = [s for s in pool if s.lower() not in ctx_low and s.lower() not in question.lower()]
    if kind == "num":
        pool = [s for s in pool if len(s) == len(old)] or pool
    if not pool:
        return None
    new = rng.choice(sorted(pool))
    return question.replace(old, new, 1)


UNANSWERABLE_KINDS = ("neg_negation", "neg_antonym", "neg_swap")


def make_unanswerable(kind: str, question: str, context: str, others: Sequence[str], rng: random.Random) -> str | None:
    """The question rewritten by the rule named ``kind`` (one of ``UNANSWERABLE_KINDS``)."""
    if kind == "neg_negation":
        return negate_question(question)
    if kind == "neg_antonym":
        return antonym_question(question)
    if kind == "neg_swap":
        return swap_entity(question, context, others, rng)
    raise ValueError(f"unknown unanswerable kind {kind!r}; expected one of {UNANSWERABLE_KINDS}")
