"""Calibrate the generator's abstain threshold on held-out training articles.

The QA model abstains when p(ABSTAIN) at the first answer step reaches ``abstain_threshold``. The
right cut depends on how often questions have no answer in the context and on how the model's
probabilities came out of training, so it is chosen by measurement, never on the dev sets: for
held-out questions (whole articles the training never saw) the model reads

- the gold paragraph (answerable: scored by SQuAD F1 of the answer it would give), and
- an unanswerable case built from the same question (the paragraph with its answer sentences
  removed, another paragraph of the same article, or the question rewritten by a rule of
  :mod:`generator.unanswerable`: only an abstention scores),

in equal numbers, and the threshold that maximises mean F1 over both is kept. Each question is run
once with abstention disabled, so every candidate threshold is scored without decoding again.

Which unanswerable kind a question gets matters: the kinds differ widely in difficulty (held out,
the shipped model separates "another paragraph" cases almost perfectly and antonym rewrites far
less well), and the easier the negatives, the higher the cut that still catches them. By default
(``negatives="squad2"``) the kind is drawn, among those that apply to the question, in the shares
SQuAD 2.0's crowd-written unanswerable questions come in (Rajpurkar et al. 2018, table 3: negation
9%, antonym 20%, entity swap 21%, mutual exclusion 15% and other neutral 24% (both made here by
``neg_word``), impossible condition 4%, other 7% (split between the answer removed and another
paragraph)), so the cut is set against the mixture the service will face on adversarial questions
rather than against the easiest cases. ``negatives="uniform"`` draws uniformly among the kinds
that apply (the rule before 2026-12-02).

Rule-made negatives stay easier than crowd-written ones (on SQuAD 2.0 dev the shipped model's
median p(ABSTAIN) on unanswerable questions is about 0.27, on the calibration negatives 0.86, while
answerable questions look alike in both), so a cut set on them abstains too rarely on adversarial
questions. A team with its own labelled questions (SQuAD 2.0 format, unanswerable ones marked
``is_impossible``) can calibrate on those instead: :func:`score_labeled`, ``attend train calibrate
--labeled FILE``. :func:`cross_calibrated` measures what that buys without tuning on the questions
it scores: each group of questions (an article) is cut at the threshold chosen on the other groups.
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from common.errors import InvalidInput
from common.squad import SquadExample, f1_score, gold_answers
from generator.prompt import ContextChunk, PromptBuilder
from generator.qa_data import QAItem, paragraphs_by_article, remove_answer_sentences
from generator.qa_model import NEVER_ABSTAIN, GroundedQA
from generator.unanswerable import UNANSWERABLE_KINDS, make_unanswerable, negative_shares

logger = logging.getLogger(__name__)


# The rule-made kinds calibration draws from, one per SQuAD 2.0 category it approximates. Kinds
# added to training later (``neg_within``, an entity swap inside the paragraph) stay out, so that a
# calibration published with a seed still reproduces.
CALIBRATION_KINDS = ("neg_negation", "neg_antonym", "neg_swap", "neg_word", "neg_condition")
assert set(CALIBRATION_KINDS) <= set(UNANSWERABLE_KINDS)


@dataclass(frozen=True)
class Scored:
    """One calibration case: the model's p(ABSTAIN) and the F1 it earns if it answers."""

    abstain_prob: float
    answer_f1: float  # F1 of the answer given when not abstaining (0 for unanswerable cases)
    answerable: bool
    kind: str  # "gold", "neg_removed", "neg_other", one of CALIBRATION_KINDS, or "labeled"


@dataclass(frozen=True)
class Calibration:
    threshold: float
    f1: float  # mean F1 over the calibration cases at ``threshold``
    has_ans_f1: float
    no_ans_acc: float
    n_answerable: int
    n_unanswerable: int
    f1_at_default: float  # the same figure at the threshold the model had before
    negatives: str | None = None  # how the unanswerable cases were drawn (set by calibrate)
    has_ans_floor: float | None = None  # the answerable F1 the cut had to keep, if one was asked for

    def as_dict(self) -> dict[str, float | int | str | None]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def unsupported_case(
    item: QAItem, same_article: Sequence[str], rng: random.Random, shares: Mapping[str, float] | None = None
) -> tuple[str, str, str] | None:
    """An unanswerable case for ``item``: ``(question, context, kind)``, drawn among the kinds that
    apply (the answer sentences removed, another paragraph of the article, or the question
    rewritten by a rule of :mod:`generator.unanswerable` against the gold paragraph): uniformly, or
    in proportion to ``shares`` (kind -> weight; kinds it lacks are never drawn)."""
    low = [a.lower() for a in item.answers if a]
    others = [p for p in same_article if p != item.context]
    options: list[tuple[str, str, str]] = []
    removed = remove_answer_sentences(item.context, item.answers)
    if removed is not None:
        options.append((item.question, removed, "neg_removed"))
    clean = [p for p in others if not any(a in p.lower() for a in low)]
    if clean:
        options.append((item.question, rng.choice(clean), "neg_other"))
    for kind in CALIBRATION_KINDS:
        q = make_unanswerable(kind, item.question, item.context, others, rng)
        if q is not None:
            options.append((q, item.context, kind))
    if shares is not None:
        options = [o for o in options if shares.get(o[2], 0) > 0]
        return rng.choices(options, weights=[shares[o[2]] for o in options])[0] if options else None
    return rng.choice(options) if options else None


def score_cases(
    model: GroundedQA, builder: PromptBuilder, items: Sequence[QAItem], *, n: int = 400, seed: int = 0, negatives: str = "squad2"
) -> list[Scored]:
    """Run the model on ``n`` held-out questions, each with its gold paragraph and with an
    unsupported context (2n cases in all; ``negatives`` says how its kind is drawn)."""
    shares = negative_shares(negatives)
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    by_article = paragraphs_by_article(items)
    answerable = [it for it in items if it.answers]
    chosen = rng.sample(answerable, min(n, len(answerable)))
    out: list[Scored] = []
    for it in tqdm(chosen, desc="calibrate", unit="q"):
        neg = unsupported_case(it, by_article[it.article], rng, shares)
        if neg is None:
            continue
        ans = model.read(builder.build(it.question, [ContextChunk(0, it.context)]), builder.answer_id, abstain_threshold=NEVER_ABSTAIN)
        out.append(Scored(ans.abstain_prob, f1_score(ans.text, list(it.answers)), True, "gold"))
        question, text, kind = neg
        ans = model.read(builder.build(question, [ContextChunk(0, text)]), builder.answer_id, abstain_threshold=NEVER_ABSTAIN)
        out.append(Scored(ans.abstain_prob, 0.0, False, kind))
    return out


def f1_at(cases: Sequence[Scored], threshold: float) -> tuple[float, float, float]:
    """Mean F1 over all cases, over answerable ones, and accuracy on unanswerable ones, when the
    model abstains at p(ABSTAIN) >= ``threshold``."""
    has = [c.answer_f1 if c.abstain_prob < threshold else 0.0 for c in cases if c.answerable]
    no = [1.0 if c.abstain_prob >= threshold else 0.0 for c in cases if not c.answerable]
    total = (sum(has) + sum(no)) / max(len(has) + len(no), 1)
    return total, sum(has) / max(len(has), 1), sum(no) / max(len(no), 1)


class FloorUnreachable(ValueError):
    """No threshold keeps answerable F1 at the floor asked for."""


def check_has_ans_floor(floor: float | None) -> None:
    """An answerable-F1 floor is a figure on the 0-100 scale SQuAD F1 is reported in."""
    if floor is not None and not 0.0 <= floor <= 100.0:
        raise InvalidInput(f"--has-ans-floor is answerable F1 on the 0-100 scale; got {floor:g}")


def best_threshold(cases: Sequence[Scored], default: float = 0.5, *, has_ans_floor: float | None = None) -> Calibration:
    """The threshold maximising mean F1 over ``cases``: candidates are midpoints between sorted
    distinct abstain probabilities (ties go to the one nearest ``default``). With ``has_ans_floor``
    (0-100) only cuts that keep F1 over the answerable cases at or above it compete (a service that
    must not refuse answerable questions beyond a point); :class:`FloorUnreachable` if none does."""
    if not cases:
        raise ValueError("no calibration cases")
    check_has_ans_floor(has_ans_floor)
    probs = sorted({c.abstain_prob for c in cases})
    candidates = [probs[0] / 2] + [(a + b) / 2 for a, b in zip(probs, probs[1:], strict=False)] + [(probs[-1] + 1.0) / 2]
    # candidate k answers the cases at probs[:k] and abstains on the rest: one sweep of running sums
    # gives every candidate's mean F1 (O(n log n); re-scoring each candidate was quadratic)
    index = {p: i for i, p in enumerate(probs)}
    answered_f1, unanswerable = [0.0] * len(probs), [0] * len(probs)
    for c in cases:
        if c.answerable:
            answered_f1[index[c.abstain_prob]] += c.answer_f1
        else:
            unanswerable[index[c.abstain_prob]] += 1
    has_sum, no_left = 0.0, sum(unanswerable)
    totals, has_sums = [no_left / len(cases)], [0.0]
    for f1, no in zip(answered_f1, unanswerable, strict=True):
        has_sum, no_left = has_sum + f1, no_left - no
        totals.append((has_sum + no_left) / len(cases))
        has_sums.append(has_sum)
    if candidates[-1] <= probs[-1]:  # p(ABSTAIN) of 1.0: the top cut (1.0) still abstains there
        totals[-1], has_sums[-1] = totals[-2], has_sums[-2]
    scored = list(zip(candidates, totals, strict=True))
    if has_ans_floor is not None:
        n_answerable = sum(c.answerable for c in cases)
        has_f1 = [100 * h / max(n_answerable, 1) for h in has_sums]
        scored = [ct for ct, h in zip(scored, has_f1, strict=True) if h >= has_ans_floor - 1e-9]
        if not scored:
            raise FloorUnreachable(f"no threshold keeps answerable F1 at {has_ans_floor:g}: even answering every question gives {max(has_f1):.2f}")
    best = max(scored, key=lambda ct: (round(ct[1], 9), -abs(ct[0] - default)))[0]
    total, has, no = f1_at(cases, best)
    return Calibration(
        threshold=float(best),
        f1=100 * total,
        has_ans_f1=100 * has,
        no_ans_acc=100 * no,
        n_answerable=sum(c.answerable for c in cases),
        n_unanswerable=sum(not c.answerable for c in cases),
        f1_at_default=100 * f1_at(cases, default)[0],
        has_ans_floor=has_ans_floor,
    )


def calibrate(
    model: GroundedQA,
    builder: PromptBuilder,
    items: Sequence[QAItem],
    *,
    n: int = 400,
    seed: int = 0,
    negatives: str = "squad2",
    has_ans_floor: float | None = None,
) -> Calibration:
    """Score ``n`` held-out questions and set ``model.config.abstain_threshold`` to the best cut
    (among those keeping answerable F1 at ``has_ans_floor``, if given)."""
    return _set_threshold(model, score_cases(model, builder, items, n=n, seed=seed, negatives=negatives), negatives, has_ans_floor)


def _set_threshold(model: GroundedQA, cases: Sequence[Scored], negatives: str, has_ans_floor: float | None = None) -> Calibration:
    """Set ``model.config.abstain_threshold`` to the best cut over ``cases`` (drawn as ``negatives``
    says) and return the calibration. An unreachable floor is the caller's input error."""
    try:
        best = best_threshold(cases, default=model.config.abstain_threshold, has_ans_floor=has_ans_floor)
    except FloorUnreachable as e:
        raise InvalidInput(f"--has-ans-floor: {e}") from e
    cal = replace(best, negatives=negatives)
    logger.info("abstain threshold %.4f -> %.4f (F1 %.2f -> %.2f on %d cases)", model.config.abstain_threshold, cal.threshold, cal.f1_at_default, cal.f1, len(cases))
    model.config.abstain_threshold = cal.threshold
    return cal


def score_labeled(model: GroundedQA, builder: PromptBuilder, examples: Sequence[SquadExample]) -> list[Scored]:
    """Run the model on labelled questions, each over its own paragraph as the only chunk (cut to
    the context window): an answerable one scores the F1 of the answer it would give, an
    unanswerable one (``is_impossible``) only an abstention."""
    from tqdm.auto import tqdm

    out: list[Scored] = []
    for ex in tqdm(examples, desc="calibrate", unit="q"):
        prompt = builder.build(ex.question, [ContextChunk(0, ex.context)], max_len=model.max_prompt_len)
        ans = model.read(prompt, builder.answer_id, abstain_threshold=NEVER_ABSTAIN)
        if ex.is_impossible:
            out.append(Scored(ans.abstain_prob, 0.0, False, "labeled"))
        else:
            out.append(Scored(ans.abstain_prob, 0.0 if ans.abstained else f1_score(ans.text, gold_answers(ex)), True, "gold"))
    return out


def calibrate_labeled(
    model: GroundedQA, builder: PromptBuilder, examples: Sequence[SquadExample], *, has_ans_floor: float | None = None
) -> Calibration:
    """Set ``model.config.abstain_threshold`` to the cut that maximises mean F1 on labelled
    questions (among those keeping answerable F1 at ``has_ans_floor``, if given); they must hold
    both answerable and unanswerable ones."""
    n_no = sum(ex.is_impossible for ex in examples)
    if not n_no or n_no == len(examples):
        raise InvalidInput(
            f"calibrating on labelled questions needs both answerable and unanswerable ones "
            f"(SQuAD 2.0 'is_impossible'); got {len(examples) - n_no} answerable and {n_no} unanswerable"
        )
    return _set_threshold(model, score_labeled(model, builder, examples), "labeled", has_ans_floor)


def cross_calibrated(
    cases: Sequence[Scored], groups: Sequence[str], *, folds: int = 5, default: float = 0.5, has_ans_floor: float | None = None
) -> tuple[float, list[float]] | None:
    """Mean F1 (0-100) over ``cases`` when each one is cut at the threshold calibrated on the cases
    of the other folds (under ``has_ans_floor`` if given), and those thresholds. Groups (articles:
    questions on one article share wording and topic) go to ``folds`` folds by crc32 of their name,
    so no threshold is chosen on the group it is applied to. None when fewer than two folds hold
    cases; :class:`FloorUnreachable` when a fold's calibration cases cannot keep the floor."""
    if len(cases) != len(groups):
        raise ValueError("one group per case")
    fold_of = [zlib.crc32(g.encode()) % folds for g in groups]
    used = sorted(set(fold_of))
    if len(used) < 2:
        return None
    total, thresholds = 0.0, []
    for k in used:
        rest = [c for c, f in zip(cases, fold_of, strict=True) if f != k]
        mine = [c for c, f in zip(cases, fold_of, strict=True) if f == k]
        t = best_threshold(rest, default=default, has_ans_floor=has_ans_floor).threshold
        thresholds.append(t)
        total += f1_at(mine, t)[0] * len(mine)
    return 100 * total / len(cases), thresholds
