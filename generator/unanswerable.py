"""Synthetic unanswerable questions, made from answerable ones by rule.

SQuAD 2.0's unanswerable questions were written against their paragraph to look answerable: the
paragraph is on topic and holds a plausible answer, but the question asks for something it does not
state. Rajpurkar et al. (2018) sort them into negation, antonym, entity swap, mutual exclusion,
impossible condition and other. Removing the answer sentence (``neg_removed`` in
:mod:`generator.qa_data`) teaches none of these, so a model trained only on it cannot tell an
adversarial question from a real one. Without SQuAD 2.0 training data, each category can be
approximated from answerable questions by rule, keeping the gold paragraph as the context:

- ``negate_question``: "What did X found?" -> "What didn't X found?";
- ``antonym_question``: "the largest city" -> "the smallest city" (a fixed list of pairs);
- ``swap_entity``: a name or number of the question that the paragraph contains is replaced by one
  from another paragraph of the article that this paragraph lacks ("When did Chopin leave Warsaw?"
  -> "When did Liszt leave Warsaw?");
- ``swap_word``: the same for a plain content word ("What did the treaty end?" -> "What did the
  blockade end?"), the "other neutral" and "mutual exclusion" kinds, where one word moves the
  question off what the paragraph says; the new word keeps the old one's inflection (-s, -ed, -ing,
  -ly) so the question still reads as English;
- ``add_condition``: a year the paragraph never mentions is added as a condition ("Who ruled
  Poland?" -> "Who ruled Poland in 1712?"), the "impossible condition" kind;
- ``swap_within``: a name or number of the question that the answer's sentence contains is replaced
  by another of the same kind *from the same paragraph*, one that sentence lacks ("When did Chopin
  leave Warsaw?" -> "When did Chopin leave Vienna?" where the paragraph mentions Vienna elsewhere).

All rules but the last bring in a word the paragraph lacks, and so teach a shortcut (refuse a
question with an unfamiliar word) that crowd-written questions do not follow: they mostly reuse the
paragraph's own words. ``swap_within`` leaves the question's words all in the paragraph; only how
they relate is wrong. Its contrastive twin (``pos_within``) exchanges the two names throughout the
paragraph, so the very same question becomes answerable.

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
    ("winter", "summer"), ("enter", "leave"), ("father", "mother"), ("husband", "wife"),
    ("son", "daughter"), ("brother", "sister"), ("king", "queen"), ("men", "women"),
    ("boys", "girls"), ("import", "export"), ("imports", "exports"), ("buy", "sell"),
    ("bought", "sold"), ("attack", "defend"), ("arrived", "departed"),
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
    r = _antonym(question)
    return None if r is None else r[0]


def _antonym(question: str) -> tuple[str, str, str] | None:
    m = _ANTONYM_RE.search(question)
    if m is None:
        return None
    word = m.group(0)
    new = _ANTONYM[word.lower()]
    return question[: m.start()] + _match_case(new, word) + question[m.end():], word.lower(), new


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
    r = _swap_entity(question, context, others, rng)
    return None if r is None else r[0]


def _swap_entity(question: str, context: str, others: Sequence[str], rng: random.Random) -> tuple[str, str, str] | None:
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
    return question.replace(old, new, 1), old, new


_WORD = re.compile(r"\b[a-z][a-z\-]{2,}[a-z]\b")  # ends on a letter: never "mid-" of "mid-1960s"
_STOP = frozenset(
    """about above after again against also among another around because been before being below
    between both came come could does doing down during each either else even ever every first from
    further have having here into itself just know known last less like made make many more most much
    must near never next often only other over same should since some such than that their them then
    there these they thing things this those though through thus under until upon used using very
    want were what when where which while whom whose will with within without would year years your
    called name named kind type part percent according""".split()
)
_SUFFIXES = ("ing", "ed", "ly", "s")
_AFTER_DET = re.compile(r"\b(?:the|a|an|his|her|its|their|this|that)\s+([a-z][a-z\-]{2,}[a-z])\b(?!-)", re.IGNORECASE)
_TIME_WORDS = re.compile(r"\b(when|year|years|century|date|period|age|era|decade)\b", re.IGNORECASE)
_YEAR = re.compile(r"\b1[0-9]{3}\b|\b20[0-9]{2}\b")


def _suffix(word: str) -> str:
    return next((x for x in _SUFFIXES if word.endswith(x)), "")


def swap_word(question: str, context: str, others: Sequence[str], rng: random.Random) -> str | None:
    """Replace a lowercase content word of ``question`` that follows a determiner ("the treaty") and
    occurs in ``context`` with a word that follows a determiner in ``others``, has the same
    inflection, and that neither the context nor the question contains."""
    r = _swap_word(question, context, others, rng)
    return None if r is None else r[0]


def _swap_word(question: str, context: str, others: Sequence[str], rng: random.Random) -> tuple[str, str, str] | None:
    ctx_words = set(_WORD.findall(context.lower()))
    q_words = set(_WORD.findall(question.lower()))
    found = sorted({w for w in _AFTER_DET.findall(question) if w.islower() and w in ctx_words and w not in _STOP})
    if not found:
        return None
    old = rng.choice(found)
    pool = sorted({w for text in others for w in _AFTER_DET.findall(text) if w.islower()} - ctx_words - q_words - _STOP)
    pool = [w for w in pool if _suffix(w) == _suffix(old)]
    if not pool:
        return None
    new = rng.choice(pool)
    return re.sub(rf"\b{re.escape(old)}\b", new, question, count=1), old, new


_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z0-9\"'(])")


def _sentences(context: str) -> list[tuple[int, int]]:
    """Character bounds of the sentences of ``context``."""
    bounds, start = [], 0
    for m in _SENTENCE_END.finditer(context):
        bounds.append((start, m.end()))
        start = m.end()
    return [*bounds, (start, len(context))]


def swap_within(question: str, context: str, answer_start: int | None, rng: random.Random) -> str | None:
    """Replace a name or number of ``question`` that the answer's sentence contains with another of
    the same kind that the paragraph mentions elsewhere but that sentence lacks."""
    r = _swap_within(question, context, answer_start, rng)
    return None if r is None else r[0]


def _swap_within(question: str, context: str, answer_start: int | None, rng: random.Random) -> tuple[str, str, str] | None:
    if answer_start is None:
        return None
    bounds = _sentences(context)
    a, b = next(((a, b) for a, b in bounds if a <= answer_start < b), bounds[-1])
    sentence, q_low = context[a:b], question.lower()
    found = [(k, s) for k, s in _spans(question, skip_first=True) if s in sentence]
    if not found:
        return None
    kind, old = rng.choice(found)
    # names and numbers of the other sentences (a sentence's capitalised opening word is no name)
    pool = {s for x, y in bounds if (x, y) != (a, b) for k, s in _spans(context[x:y].strip(), skip_first=True) if k == kind}
    pool = [s for s in pool if s not in sentence and s.lower() not in q_low and old not in s and s not in old]
    if kind == "num":
        pool = [s for s in pool if len(s) == len(old)]
    if not pool:
        return None
    new = rng.choice(sorted(pool))
    return question.replace(old, new, 1), old, new


def add_condition(question: str, context: str, others: Sequence[str], rng: random.Random) -> str | None:
    """Add "in YEAR" to a question that names no year and does not ask for a time, with a year the context never mentions,
    taken from ``others`` when they have one (so it is on topic) or else near the context's years."""
    body = question.rstrip()
    if not body.endswith("?") or _YEAR.search(question) or _TIME_WORDS.search(question):
        return None
    ctx_years = set(_YEAR.findall(context))
    pool = sorted({y for text in others for y in _YEAR.findall(text)} - ctx_years)
    if not pool:
        base = [int(y) for y in ctx_years] or [1900]
        pool = [str(y) for y in (rng.choice(base) + d for d in range(-30, 31) if d) if str(y) not in ctx_years]
    return body[:-1].rstrip() + f" in {rng.choice(pool)}?"


UNANSWERABLE_KINDS = ("neg_negation", "neg_antonym", "neg_swap", "neg_word", "neg_condition", "neg_within")


def make_unanswerable(
    kind: str, question: str, context: str, others: Sequence[str], rng: random.Random, answer_start: int | None = None
) -> str | None:
    """The question rewritten by the rule named ``kind`` (one of ``UNANSWERABLE_KINDS``);
    ``neg_within`` needs ``answer_start`` (where the answer sits in ``context``)."""
    if kind == "neg_negation":
        return negate_question(question)
    if kind == "neg_antonym":
        return antonym_question(question)
    if kind == "neg_swap":
        return swap_entity(question, context, others, rng)
    if kind == "neg_word":
        return swap_word(question, context, others, rng)
    if kind == "neg_condition":
        return add_condition(question, context, others, rng)
    if kind == "neg_within":
        return swap_within(question, context, answer_start, rng)
    raise ValueError(f"unknown unanswerable kind {kind!r}; expected one of {UNANSWERABLE_KINDS}")


# Shares of SQuAD 2.0's unanswerable categories (Rajpurkar et al. 2018, table 3), by the kind made
# here: mutual exclusion and other neutral are both ``neg_word``; "other" is split between the
# answer removed and another paragraph (``generator.qa_data``). ``generator.calibrate`` draws its
# unanswerable cases in these shares by default (``negatives="squad2"``).
SQUAD2_SHARES: dict[str, float] = {
    "neg_negation": 9, "neg_antonym": 20, "neg_swap": 21, "neg_word": 15 + 24, "neg_condition": 4,
    "neg_removed": 3.5, "neg_other": 3.5,
}
NEGATIVES = ("squad2", "uniform")


def negative_shares(negatives: str) -> dict[str, float] | None:
    """The kind weights ``negatives`` names (``None``: uniform among the kinds that apply)."""
    if negatives not in NEGATIVES:
        raise ValueError(f"unknown negatives {negatives!r}; expected one of {NEGATIVES}")
    return SQUAD2_SHARES if negatives == "squad2" else None


# The twin kinds and how each rewrites its paragraph: (both ways, because the paragraph already uses
# both words; ignoring case, for plain words, where names are matched and copied as they are)
_TWIN_REWRITE = {"pos_antonym": (True, True), "pos_swap": (False, False), "pos_word": (False, True), "pos_within": (True, False)}
SUPPORTED_KINDS = tuple(_TWIN_REWRITE)


def make_supported(
    kind: str, question: str, context: str, answer: str, answer_start: int, others: Sequence[str], rng: random.Random
) -> tuple[str, str, str, int] | None:
    """The contrastive twin of a rule-made unanswerable question: the question rewritten by the rule
    ``kind`` names (``pos_antonym``, ``pos_swap``, ``pos_word``, ``pos_within``: the rules of
    ``neg_antonym``, ``neg_swap``, ``neg_word``, ``neg_within``) *and* the paragraph rewritten the
    same way, so that it answers the new question. Returns ``(question, context, answer,
    answer_start)``.

    Without these twins a model can learn to refuse any question that carries an odd word (a name
    from another paragraph, an antonym) instead of checking what the paragraph states; with them the
    same rewritten question is answerable or not depending on the paragraph alone. For antonyms the
    pair is swapped both ways in the paragraph ("largest" <-> "smallest") so it stays consistent,
    and so are the two names of ``pos_within``, which the paragraph both mentions.
    None when the rule does not apply, the paragraph never uses the replaced word, or a replacement
    would cut through the answer."""
    if kind == "pos_antonym":
        r = _antonym(question)
    elif kind == "pos_swap":
        r = _swap_entity(question, context, others, rng)
    elif kind == "pos_word":
        r = _swap_word(question, context, others, rng)
    elif kind == "pos_within":
        r = _swap_within(question, context, answer_start, rng)
    else:
        raise ValueError(f"unknown supported kind {kind!r}; expected one of {SUPPORTED_KINDS}")
    if r is None:
        return None
    new_q, old, new = r
    both_ways, ignore_case = _TWIN_REWRITE[kind]
    swap = {old.lower(): new, new.lower(): old} if both_ways else {old.lower(): new}
    flags = re.IGNORECASE if ignore_case else 0
    words = sorted({old, new} if both_ways else {old}, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, words)) + r")(?![\w-])", flags)
    answer_end = answer_start + len(answer)
    pieces: list[str] = []
    last = shift_start = shift_end = 0
    replaced_old = False
    for m in pattern.finditer(context):
        if m.start() < answer_end and m.end() > answer_start and not (answer_start <= m.start() and m.end() <= answer_end):
            return None  # the replacement would straddle the answer's boundary
        text = m.group(0)
        repl = swap[text.lower()]
        if ignore_case:  # plain words keep the case they had in the paragraph; names are copied as they are
            repl = _match_case(repl, text)
        replaced_old |= text.lower() == old.lower()
        delta = len(repl) - len(text)
        if m.end() <= answer_start:
            shift_start += delta
        if m.end() <= answer_end:
            shift_end += delta
        pieces += [context[last : m.start()], repl]
        last = m.end()
    if not replaced_old:
        return None
    new_ctx = "".join(pieces) + context[last:]
    start, end = answer_start + shift_start, answer_end + shift_end
    return new_q, new_ctx, new_ctx[start:end], start
