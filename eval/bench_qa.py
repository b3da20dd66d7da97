"""``attend bench qa``: the grounded QA generator on SQuAD-format data, with the gold paragraph
alone or among BM25 distractors.

For each question the context is the gold paragraph plus ``distractors`` paragraphs of the same file
ranked by BM25 for the question (paragraphs that contain a reference answer are skipped, so the
gold chunk is the only one that supports an answer), with the gold paragraph at a seeded random
position. Scoring is the official SQuAD one (EM and F1, max over references; for unanswerable
questions only an abstention scores). ``citation_accuracy`` is the share of correct answers (F1 >=
0.5) whose cited chunk is the gold paragraph.

Each question is decoded once with abstention off and the model's threshold applied afterwards (the
answer does not depend on it), so two threshold-free diagnostics come for free: ``abstain_auc``
(how well p(ABSTAIN) ranks unanswerable above answerable questions; files with both kinds) and
``oracle_f1`` at ``oracle_threshold``, the best F1 any threshold reaches on this very sample (the
official SQuAD 2.0 script's ``best_f1``). The oracle is tuned on the evaluation data, so it is a
ceiling for calibration, never a result. ``cross_f1`` sits between the two: each article's questions
are cut at the threshold that maximises F1 on the other articles' questions (5 folds by article),
i.e. what calibrating on labelled questions like these (``attend train calibrate --labeled``)
would give on questions it never saw; ``cross_thresholds`` are the folds' cuts.
"""

from __future__ import annotations

import bisect
import logging
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.squad import (
    SquadExample,
    f1_score,
    gold_answers,
    load_squad,
    normalize_answer,
    sample_examples,
)
from eval.report import console_table, write_json
from eval.squad import squad_scores

if TYPE_CHECKING:
    from generator.calibrate import Scored

logger = logging.getLogger(__name__)


@dataclass
class QABenchConfig:
    data: str
    generator: str = "attend-qa"
    distractors: int = 0
    limit: int | None = None
    seed: int = 0
    abstain_threshold: float | None = None
    device: str | None = None
    predictions_path: str | None = None  # {qid: answer text}, "" for an abstention
    na_probs_path: str | None = None  # {qid: p(ABSTAIN)}
    has_ans_floor: float | None = None  # also report the best cut keeping answerable F1 at this (0-100)
    sweep: bool = False  # also report F1, HasAns/NoAns F1 and answer rate at a grid of cuts
    budget: int | None = None  # generative models: the context budget (default: 2048 or the window)
    reader: str | None = "attend-qa"  # generative models: the verifier's extractive reader (None: overlap)


# The cuts ``sweep`` reports (with the model's own): dense where calibrated cuts fall.
SWEEP_THRESHOLDS = (0.02, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def contexts(examples: list[SquadExample], chosen: list[SquadExample], distractors: int, seed: int):
    """Per chosen example, its chunks: the gold paragraph alone, or among ``distractors`` BM25-ranked
    paragraphs without a reference answer, the gold at a seeded random place."""
    from generator.prompt import ContextChunk
    from index.bm25 import BM25Index

    paragraphs = sorted({e.context for e in examples})
    bm25 = None
    if distractors:
        bm25 = BM25Index()
        bm25.add(list(range(len(paragraphs))), paragraphs)
    rng = random.Random(seed)
    for ex in chosen:
        refs = [a.lower() for a in ex.answers if a]
        chunks = [ContextChunk("gold", ex.context)]
        if bm25 is not None:
            ids, _ = bm25.search(ex.question, distractors + 10)
            others = [paragraphs[i] for i in ids.tolist() if paragraphs[i] != ex.context and not any(r in paragraphs[i].lower() for r in refs)]
            others = others[:distractors]
            pos = rng.randint(0, len(others))
            chunks = [ContextChunk(f"d{i}", t) for i, t in enumerate(others)]
            chunks.insert(pos, ContextChunk("gold", ex.context))
        yield ex, chunks


def run_benchmark(cfg: QABenchConfig) -> dict[str, Any]:
    from generator.chat_model import is_generative

    if is_generative(cfg.generator):
        return run_generative_benchmark(cfg)
    return run_extractive_benchmark(cfg)


def run_generative_benchmark(cfg: QABenchConfig) -> dict[str, Any]:
    """The generative path: the chat model answers from the chunks (numbered in the prompt), the
    verifier checks its sentences. Scored on the answer without its citation markers. Besides EM/F1
    (answers as written; only the refusal sentence abstains), ``*_abstain_unsupported`` score the
    same answers with unsupported ones turned into abstentions; ``refusal_rate`` is the share of
    unanswerable questions the model refused; ``supported_rate`` the share of answers with a
    supported sentence; ``citation_accuracy`` the share of correct answers (F1 >= 0.5) all of
    whose citations (the model's or, where it cited nothing, the verifier's) are the gold chunk,
    and ``model_citation_rate`` / ``model_citation_accuracy`` the same for the model's own ``[n]``.
    ``contains_gold`` is the share of answerable questions whose answer contains a reference answer
    (after SQuAD normalisation): the accuracy generative readers are usually scored by (Liu et al.,
    2023, "Lost in the Middle"), since a correct sentence scores a low F1 against a short span."""
    from generator.answer import Answerer
    from generator.citations import strip_citations
    from generator.context import Candidate
    from generator.generative import GenerativeAnswerer

    examples = load_squad(cfg.data)
    chosen = sample_examples(examples, cfg.limit, cfg.seed)
    reader = Answerer.load(cfg.reader, device=cfg.device) if cfg.reader else None
    answerer = GenerativeAnswerer.load(cfg.generator, device=cfg.device, reader=reader)
    budget = min(cfg.budget or 2048, answerer.max_context)
    preds: dict[str, str] = {}
    preds_strict: dict[str, str] = {}
    cited_gold: list[bool] = []
    own_cited: list[bool] = []
    own_gold: list[bool] = []
    supported: list[bool] = []
    refused: list[bool] = []
    contains: list[bool] = []
    latencies: list[float] = []
    tokens = 0.0
    gen_s = 0.0
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    for ex, chunks in tqdm(contexts(examples, chosen, cfg.distractors, cfg.seed), total=len(chosen), desc="qa", unit="q"):
        # doc_id is the chunk's name ("gold" or "dN"): what a citation names is checked against it.
        cands = [Candidate(chunk_id=i, doc_id=str(c.chunk_id), text=c.text, score=1.0, rank=i + 1, char_end=len(c.text))
                 for i, c in enumerate(chunks)]
        t = time.perf_counter()
        r = answerer.answer(ex.question, cands, budget=budget, abstain_threshold=cfg.abstain_threshold)
        latencies.append(time.perf_counter() - t)
        tokens += r.timings_ms.get("generated_tokens", 0.0)
        gen_s += r.timings_ms.get("generate_ms", 0.0) / 1e3
        pred = "" if r.abstained else strip_citations(r.answer or "")
        preds[ex.qid] = pred
        preds_strict[ex.qid] = "" if r.unsupported else pred
        if ex.is_impossible:
            refused.append(r.abstained)
        else:
            norm = normalize_answer(pred)
            contains.append(bool(pred) and any(g and normalize_answer(g) in norm for g in gold_answers(ex)))
        if not r.abstained:
            supported.append(not r.unsupported)
            if not ex.is_impossible and f1_score(pred, gold_answers(ex)) >= 0.5:
                docs = {c.doc_id for c in r.citations}
                cited_gold.append(docs == {"gold"})
                own = {c.doc_id for c in r.citations if not c.attributed}
                own_cited.append(bool(own))
                if own:
                    own_gold.append(own == {"gold"})
    wall = time.perf_counter() - t0
    scores = squad_scores(preds, chosen)
    strict = squad_scores(preds_strict, chosen)
    answered = sum(1 for p in preds.values() if p)
    result: dict[str, Any] = {
        "data": cfg.data, "generator": cfg.generator, "kind": "generative", "distractors": cfg.distractors,
        "n": len(chosen), "budget": budget, "verifier": answerer.verifier.method,
        "em": round(scores["em"], 2), "f1": round(scores["f1"], 2),
        "answer_rate": round(answered / max(len(chosen), 1), 4),
        "citation_accuracy": round(sum(cited_gold) / len(cited_gold), 4) if cited_gold else None,
        "model_citation_rate": round(sum(own_cited) / len(own_cited), 4) if own_cited else None,
        "model_citation_accuracy": round(sum(own_gold) / len(own_gold), 4) if own_gold else None,
        "supported_rate": round(sum(supported) / len(supported), 4) if supported else None,
        "refusal_rate": round(sum(refused) / len(refused), 4) if refused else None,
        "contains_gold": round(sum(contains) / len(contains), 4) if contains else None,
        "em_abstain_unsupported": round(strict["em"], 2), "f1_abstain_unsupported": round(strict["f1"], 2),
        "questions_per_s": round(len(chosen) / wall, 3),
        "latency_p50_ms": round(statistics.median(latencies) * 1e3, 1) if latencies else None,
        "decode_tokens_per_s": round(tokens / gen_s, 1) if gen_s else None,
    }
    for key in ("has_ans_em", "has_ans_f1", "no_ans_em", "no_ans_f1", "has_ans_total", "no_ans_total"):
        if key in scores:
            result[key] = round(scores[key], 2) if isinstance(scores[key], float) else scores[key]
        if key in strict and key.endswith("f1"):
            result[f"{key}_abstain_unsupported"] = round(strict[key], 2)
    if cfg.predictions_path:
        write_json(preds, cfg.predictions_path)
    return result


def run_extractive_benchmark(cfg: QABenchConfig) -> dict[str, Any]:
    from generator.answer import Answerer
    from generator.calibrate import Scored, best_threshold, check_has_ans_floor, cross_calibrated
    from generator.qa_model import NEVER_ABSTAIN

    check_has_ans_floor(cfg.has_ans_floor)
    examples = load_squad(cfg.data)
    chosen = sample_examples(examples, cfg.limit, cfg.seed)
    answerer = Answerer.load(cfg.generator, device=cfg.device)
    model, builder = answerer.model, answerer.builder
    preds: dict[str, str] = {}
    cited_gold: list[bool] = []
    latencies: list[float] = []
    cases: list[Scored] = []
    groups: list[str] = []  # each case's article, for cross_f1
    na_probs: dict[str, float] = {}
    threshold = model.config.abstain_threshold if cfg.abstain_threshold is None else cfg.abstain_threshold
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    for ex, chunks in tqdm(contexts(examples, chosen, cfg.distractors, cfg.seed), total=len(chosen), desc="qa", unit="q"):
        t = time.perf_counter()
        # Chunks past the context window (gold plus long distractors) are truncated or dropped.
        prompt = builder.build(ex.question, chunks, max_len=model.max_prompt_len)
        ans = model.read(prompt, builder.answer_id, abstain_threshold=NEVER_ABSTAIN)  # the cut comes below
        latencies.append(time.perf_counter() - t)
        answer_f1 = 0.0 if ans.abstained or ex.is_impossible else f1_score(ans.text, gold_answers(ex))
        cases.append(Scored(ans.abstain_prob, answer_f1, not ex.is_impossible, "gold"))
        groups.append(ex.title or ex.paragraph_id.rsplit("-", 1)[0])
        na_probs[ex.qid] = round(ans.abstain_prob, 6)
        abstained = ans.abstained or ans.abstain_prob >= threshold
        pred = "" if abstained else ans.text
        preds[ex.qid] = pred
        if not abstained and answer_f1 >= 0.5:  # answer_f1 is 0 for unanswerable questions
            cited_gold.append(prompt.chunks[ans.chunk_index].chunk_id == "gold")
    wall = time.perf_counter() - t0
    scores = squad_scores(preds, chosen)
    answered = sum(1 for p in preds.values() if p)
    result: dict[str, Any] = {
        "data": cfg.data,
        "generator": cfg.generator,
        "distractors": cfg.distractors,
        "n": len(chosen),
        "em": round(scores["em"], 2),
        "f1": round(scores["f1"], 2),
        "answer_rate": round(answered / max(len(chosen), 1), 4),
        "citation_accuracy": round(sum(cited_gold) / len(cited_gold), 4) if cited_gold else None,
        "questions_per_s": round(len(chosen) / wall, 2),
        "latency_p50_ms": round(statistics.median(latencies) * 1e3, 1) if latencies else None,
        "abstain_threshold": round(threshold, 4),
    }
    if cases:
        oracle = best_threshold(cases, default=threshold)
        result["oracle_f1"] = round(oracle.f1, 2)
        result["oracle_threshold"] = round(oracle.threshold, 4)
        cross = cross_calibrated(cases, groups, default=threshold)
        if cross is not None:
            result["cross_f1"] = round(cross[0], 2)
            result["cross_thresholds"] = [round(t, 4) for t in cross[1]]
        if cfg.has_ans_floor is not None and any(not c.answerable for c in cases):
            result.update(_floor_results(cases, groups, threshold, cfg.has_ans_floor))
        if cfg.sweep:
            result["sweep"] = sweep(cases, sorted({*SWEEP_THRESHOLDS, round(threshold, 4)}))
    if cfg.predictions_path:
        write_json(preds, cfg.predictions_path)
    if cfg.na_probs_path:
        write_json(na_probs, cfg.na_probs_path)
    auc = abstain_auc(cases)
    if auc is not None:
        result["abstain_auc"] = round(auc, 4)
    for key in ("has_ans_em", "has_ans_f1", "no_ans_em", "no_ans_f1", "has_ans_total", "no_ans_total"):
        if key in scores:
            result[key] = round(scores[key], 2) if isinstance(scores[key], float) else scores[key]
    return result


def _floor_results(cases: Sequence[Scored], groups: Sequence[str], threshold: float, floor: float) -> dict[str, Any]:
    """The oracle and cross-calibrated F1 when every cut must keep answerable F1 at ``floor``:
    how far abstention can go before it costs the answerable questions more than the floor allows.
    None where no cut (or some fold's cut) can keep it."""
    from generator.calibrate import FloorUnreachable, best_threshold, cross_calibrated

    out: dict[str, Any] = {"has_ans_floor": floor, "floor_oracle_f1": None, "floor_oracle_threshold": None, "floor_cross_f1": None}
    try:
        best = best_threshold(cases, default=threshold, has_ans_floor=floor)
        out.update(floor_oracle_f1=round(best.f1, 2), floor_oracle_threshold=round(best.threshold, 4))
        cross = cross_calibrated(cases, groups, default=threshold, has_ans_floor=floor)
        if cross is not None:
            out["floor_cross_f1"] = round(cross[0], 2)
    except FloorUnreachable as e:
        logger.warning("%s", e)
    return out


def sweep(cases: Sequence[Scored], thresholds: Sequence[float]) -> list[dict[str, float]]:
    """F1, HasAns F1, NoAns F1 (0-100; None without such cases) and answer rate at each cut."""
    from generator.calibrate import f1_at

    n_has = sum(c.answerable for c in cases)
    rows = []
    for t in thresholds:
        total, has, no = f1_at(cases, t)
        rows.append({
            "threshold": t,
            "f1": round(100 * total, 2),
            "has_ans_f1": round(100 * has, 2) if n_has else None,
            "no_ans_f1": round(100 * no, 2) if n_has < len(cases) else None,
            "answer_rate": round(sum(c.abstain_prob < t for c in cases) / len(cases), 4),
        })
    return rows


def abstain_auc(cases: Sequence[Scored]) -> float | None:
    """Probability that an unanswerable case gets a higher p(ABSTAIN) than an answerable one (ties
    count half): the ROC AUC of p(ABSTAIN) as a detector. None unless both kinds are present."""
    pos = sorted(c.abstain_prob for c in cases if not c.answerable)
    neg = [c.abstain_prob for c in cases if c.answerable]
    if not pos or not neg:
        return None
    wins = 0.0
    for p in neg:
        below, above = bisect.bisect_left(pos, p), bisect.bisect_right(pos, p)
        wins += len(pos) - above + 0.5 * (above - below)
    return wins / (len(pos) * len(neg))


def main(cfg: QABenchConfig, json_path: str | None = None) -> dict[str, Any]:
    result = run_benchmark(cfg)
    cols = [c for c in ("n", "distractors", "em", "f1", "has_ans_f1", "no_ans_f1", "answer_rate", "citation_accuracy", "abstain_auc", "cross_f1", "oracle_f1", "questions_per_s", "latency_p50_ms") if c in result]
    if result.get("kind") == "generative":
        cols += [c for c in ("contains_gold", "supported_rate", "refusal_rate", "model_citation_rate", "f1_abstain_unsupported", "decode_tokens_per_s") if c in result]
    print(console_table([result], columns=cols))
    if result.get("has_ans_floor") is not None:
        print(console_table([result], columns=["has_ans_floor", "floor_cross_f1", "floor_oracle_f1", "floor_oracle_threshold"]))
    if result.get("sweep"):
        print(console_table(result["sweep"], columns=["threshold", "f1", "has_ans_f1", "no_ans_f1", "answer_rate"]))
    if json_path:
        write_json(result, json_path)
    return result
