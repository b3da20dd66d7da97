"""Reading a generated answer: sentences, the sources each cites, refusals, and token-overlap support.

A generative answer cites its sources by number (``[1]``, ``[2, 3]``, ``[1][3]``), the numbers of
the chunks as the prompt listed them. These pure functions split the answer into sentences (a
citation just after a sentence's full stop belongs to that sentence), pull out the numbers each
sentence cites, recognise the refusal sentence, and measure how much of what a sentence asserts a
chunk contains (the verifier's fallback when the extractive reader is absent).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

REFUSAL = "I cannot answer this from the provided documents."

# A citation group: [1], [1, 2], [1; 3], [Source 2]; several groups may follow each other.
_CITE = re.compile(r"\[\s*(?:sources?\s*)?(\d{1,3}(?:\s*[,;]\s*(?:sources?\s*)?\d{1,3})*)\s*\]", re.IGNORECASE)
# End of a sentence: . ! ? (not inside a number like 3.5), optionally followed by closing quotes,
# then whitespace. Citations right after the stop are pulled into the sentence before the split.
_SENTENCE_END = re.compile(r"(?<!\d\.\d)(?<=[.!?])[\"')\]]*\s+")
_WORD = re.compile(r"\w+(?:[.,]\d+)*", re.UNICODE)

# Words that carry no claim: function words and the model's habitual framing.
STOPWORDS = frozenset(
    """a an the and or but if then than that this these those there here of in on at to for from by
    with without into onto over under about as is are was were be been being has have had do does did
    it its it's he she they them their his her him we our you your i me my not no yes so such can
    could would should will shall may might must which who whom whose what when where why how also
    very more most some any each all both either neither one answer question source sources according
    based provided documents document text context approximately about around called known""".split()
)


@dataclass(frozen=True)
class Sentence:
    """One sentence of an answer: ``text`` without its citation markers, ``raw`` as generated,
    ``start``/``end`` its character span in the answer, ``sources`` the cited numbers (1-based,
    in order, without repeats)."""

    text: str
    raw: str
    start: int
    end: int
    sources: tuple[int, ...]


# Framing small chat models put before the answer ("The answer to this question is: ...").
_LEAD_IN = re.compile(r"^\s*(?:the\s+)?answer(?:\s+to\s+(?:this|the|your)\s+question)?\s+is\s*:\s*", re.IGNORECASE)


def clean_answer(text: str) -> str:
    """``text`` stripped, without a leading "The answer (to this question) is:" framing."""
    text = text.strip()
    cleaned = _LEAD_IN.sub("", text, count=1)
    return cleaned[:1].upper() + cleaned[1:] if cleaned != text else text


def citation_numbers(text: str) -> list[int]:
    """Every source number cited in ``text``, in order of first appearance."""
    seen: list[int] = []
    for m in _CITE.finditer(text):
        for n in re.findall(r"\d+", m.group(1)):
            if int(n) not in seen:
                seen.append(int(n))
    return seen


def strip_citations(text: str) -> str:
    """``text`` without citation markers and the spaces they leave (``"Paris [1]."`` -> ``"Paris."``)."""
    out = _CITE.sub("", text)
    out = re.sub(r"\s+([.,;:!?])", r"\1", out)
    return re.sub(r"\s{2,}", " ", out).strip()


def split_sentences(answer: str) -> list[Sentence]:
    """Split ``answer`` into sentences. Citation markers that follow a sentence's full stop (``"It
    is red. [2] It is big [3]."``) belong to the sentence before them."""
    pieces: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(answer):
        end = m.end()
        # Pull citation groups that directly follow the stop into this sentence.
        while (c := _CITE.match(answer, end)) is not None:
            end = c.end()
            while end < len(answer) and answer[end].isspace():
                end += 1
        if end <= start:
            continue
        pieces.append((start, end))
        start = end
    if start < len(answer):
        pieces.append((start, len(answer)))
    out = []
    for s, e in pieces:
        raw = answer[s:e].strip()
        if not raw:
            continue
        if not strip_citations(raw).strip(" .!?"):  # a stray marker: it cites for the sentence before
            if out:
                prev = out[-1]
                merged = prev.raw + " " + raw
                out[-1] = Sentence(prev.text, merged, prev.start, e, tuple(citation_numbers(merged)))
            continue
        out.append(Sentence(strip_citations(raw), raw, s, e, tuple(citation_numbers(raw))))
    return out


def is_refusal(answer: str, refusal: str = REFUSAL) -> bool:
    """Whether the answer is (or opens with) the refusal sentence, ignoring case, punctuation and
    citation markers."""
    a, r = _norm(strip_citations(answer)), _norm(refusal)
    return bool(r) and (a == r or a.startswith(r))


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def content_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` that carry content (not in :data:`STOPWORDS`)."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def overlap_support(sentence: str, chunk: str, question: str = "") -> float:
    """The share of what ``sentence`` asserts beyond ``question`` that ``chunk`` contains: the
    recall, in ``chunk``, of the sentence's content words that the question does not already hold.
    0.0 when the sentence adds nothing to the question (it answers nothing)."""
    asked = set(content_words(question))
    claimed = [w for w in dict.fromkeys(content_words(sentence)) if w not in asked]
    if not claimed:
        return 0.0
    have = set(content_words(chunk))
    return sum(w in have for w in claimed) / len(claimed)


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers_supported(sentence: str, chunk: str, question: str = "") -> bool:
    """Whether every number the sentence states beyond the question occurs in ``chunk`` (a year or
    a quantity is a claim that must be exact; "1450" is not supported by a chunk saying "1440")."""
    have = set(_NUMBER.findall(chunk)) | set(_NUMBER.findall(question))
    return all(n in have for n in _NUMBER.findall(strip_citations(sentence)))


def best_quote(sentence: str, chunk: str) -> tuple[int, int]:
    """The character span of the sentence of ``chunk`` that shares the most content words with
    ``sentence`` (the whole chunk when it has one sentence)."""
    want = set(content_words(sentence))
    best, best_score = (0, len(chunk)), -1.0
    start = 0
    bounds = [m.end() for m in _SENTENCE_END.finditer(chunk)] + [len(chunk)]
    for end in bounds:
        piece = chunk[start:end]
        words = set(content_words(piece))
        score = len(want & words) / (len(words) ** 0.5 or 1.0)
        if piece.strip() and score > best_score:
            lead = len(piece) - len(piece.lstrip())
            best, best_score = (start + lead, start + len(piece.rstrip())), score
        start = end
    return best


def contains_answer(sentence: str, span: str) -> bool:
    """Whether ``sentence`` states the extracted answer ``span``: at least half of the span's words
    (all of them for spans of one or two words) occur in the sentence."""
    words = _WORD.findall(span.lower())
    if not words:
        return False
    have = set(_WORD.findall(sentence.lower()))
    hits = sum(w in have for w in words)
    return hits == len(words) if len(words) <= 2 else hits / len(words) >= 0.5


def cited_chunks(sentences: Sequence[Sentence], n_chunks: int) -> list[int]:
    """The distinct valid source numbers cited across ``sentences`` (1-based), in order."""
    out: list[int] = []
    for s in sentences:
        for n in s.sources:
            if 1 <= n <= n_chunks and n not in out:
                out.append(n)
    return out
