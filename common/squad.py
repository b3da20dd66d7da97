"""The SQuAD v1.1 / v2.0 data contract: reading the JSON files and the official answer comparison
the references are defined under.

Comparison follows the official v2.0 evaluation script, which agrees with v1.1 on answerable
questions: answers are normalised (lowercase, punctuation and the articles a/an/the removed,
whitespace collapsed), each measure is the maximum over the gold answers, and an unanswerable
question has the single gold answer ``""`` (only an empty prediction scores on it). The aggregate
benchmark scores are ``eval.squad.squad_scores``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

__all__ = [
    "SquadExample",
    "exact_match",
    "f1_score",
    "gold_answers",
    "load_squad",
    "normalize_answer",
    "sample_examples",
    "sample_questions",
    "squad_documents",
]


@dataclass(frozen=True)
class SquadExample:
    """One question over one paragraph.

    ``qid`` is the dataset's id, or ``"<article>-<paragraph>-<question>"`` (0-based indices) when
    the file has none (train-v1.1). ``paragraph_id`` is ``"<article>-<paragraph>"``, shared by all
    questions on the same context. Unanswerable (v2) questions have no answers.
    """

    qid: str
    question: str
    context: str
    answers: list[str] = field(default_factory=list)
    answer_starts: list[int] = field(default_factory=list)
    is_impossible: bool = False
    title: str = ""
    paragraph_id: str = ""


def _require(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise InvalidInput(f"{where}: missing {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        raise InvalidInput(
            f"{where}: {key!r} must be a {kind.__name__}, got {type(value).__name__}"
        )
    return value


def is_squad_file(path: str | os.PathLike[str]) -> bool:
    """Whether a data path names a SQuAD JSON file (else a BEIR folder): the one rule the
    retrieval benchmarks and reranker training share."""
    return Path(path).suffix.lower() == ".json"


def load_squad(path: str | os.PathLike[str]) -> list[SquadExample]:
    """Load every question of a SQuAD JSON file (v1.1 or v2.0), in file order.

    Raises NotFound for a missing file and InvalidInput for malformed JSON or a file that does
    not follow the SQuAD layout (the message names the article/paragraph/question), or for
    repeated question ids.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"SQuAD file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from exc
    articles = _require(raw, "data", list, str(path))

    examples: list[SquadExample] = []
    seen: set[str] = set()
    for a, article in enumerate(articles):
        where_a = f"{path}: data[{a}]"
        title = article.get("title", "") if isinstance(article, dict) else ""
        for p, para in enumerate(_require(article, "paragraphs", list, where_a)):
            where_p = f"{where_a}.paragraphs[{p}]"
            context = _require(para, "context", str, where_p)
            for q, qa in enumerate(_require(para, "qas", list, where_p)):
                where_q = f"{where_p}.qas[{q}]"
                question = _require(qa, "question", str, where_q)
                qid = str(qa.get("id") or f"{a}-{p}-{q}")
                if qid in seen:
                    raise InvalidInput(f"{where_q}: question id {qid!r} is repeated")
                seen.add(qid)
                texts: list[str] = []
                starts: list[int] = []
                for i, ans in enumerate(qa.get("answers") or []):
                    texts.append(_require(ans, "text", str, f"{where_q}.answers[{i}]"))
                    starts.append(int(ans.get("answer_start", -1)))
                examples.append(
                    SquadExample(
                        qid=qid,
                        question=question,
                        context=context,
                        answers=texts,
                        answer_starts=starts,
                        is_impossible=bool(qa.get("is_impossible", False)),
                        title=str(title),
                        paragraph_id=f"{a}-{p}",
                    )
                )
    logger.info("loaded %d SQuAD questions from %s", len(examples), path)
    return examples


_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """The official normalisation: lowercase, drop punctuation, drop a/an/the, collapse spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def gold_answers(example: SquadExample) -> list[str]:
    """The references an example is scored against: its answers that do not normalise to empty,
    or ``[""]`` when there are none (unanswerable), as the official v2.0 script does."""
    golds = [a for a in example.answers if normalize_answer(a)]
    return golds or [""]


def _as_golds(golds: str | Sequence[str]) -> list[str]:
    if isinstance(golds, str):
        return [golds]
    return list(golds) or [""]


def exact_match(prediction: str, golds: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer, else 0.0.

    An empty ``golds`` means unanswerable (the gold is ``""``).
    """
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _as_golds(golds)))


def _token_f1(prediction: str, gold: str) -> float:
    pred_toks = normalize_answer(prediction).split()
    gold_toks = normalize_answer(gold).split()
    if not pred_toks or not gold_toks:
        # Unanswerable gold or empty prediction: right only when both are empty.
        return float(pred_toks == gold_toks)
    common = collections.Counter(pred_toks) & collections.Counter(gold_toks)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: str | Sequence[str]) -> float:
    """Token-level F1 in [0, 1] after normalisation, the maximum over the gold answers.

    An empty ``golds`` means unanswerable (the gold is ``""``).
    """
    return max(_token_f1(prediction, g) for g in _as_golds(golds))


def sample_examples(examples: list[SquadExample], limit: int | None, seed: int) -> list[SquadExample]:
    """All examples, or ``limit`` of them drawn with a fixed seed (spread over articles)."""
    if not limit or limit >= len(examples):
        return examples
    rng = random.Random(seed)
    return sorted(rng.sample(examples, limit), key=lambda e: e.qid)


def sample_questions(examples: Sequence[SquadExample], limit: int | None, seed: int = 0) -> list[SquadExample]:
    """A deterministic order that spreads questions across articles: each article's questions are
    shuffled with ``seed``, then taken round-robin (one per article per round, articles in file
    order). Returns the first ``limit`` (all when None)."""
    by_article: collections.OrderedDict[str, list[SquadExample]] = collections.OrderedDict()
    for ex in examples:
        by_article.setdefault(ex.paragraph_id.split("-", 1)[0], []).append(ex)
    rng = random.Random(seed)
    queues = []
    for group in by_article.values():
        group = list(group)
        rng.shuffle(group)
        queues.append(group)
    out: list[SquadExample] = []
    depth = max((len(q) for q in queues), default=0)
    for i in range(depth):
        for q in queues:
            if i < len(q):
                out.append(q[i])
                if limit is not None and len(out) >= limit:
                    return out
    return out


def squad_documents(examples: Sequence[SquadExample]) -> list[dict[str, Any]]:
    """One document per distinct paragraph, in file order: ``id`` = paragraph id, ``title``,
    ``text`` = the context."""
    docs: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
    for ex in examples:
        if ex.paragraph_id not in docs:
            docs[ex.paragraph_id] = {"id": ex.paragraph_id, "title": ex.title, "text": ex.context}
    return list(docs.values())
