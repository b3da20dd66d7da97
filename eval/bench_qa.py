"""``attend bench qa``: the grounded QA generator on SQuAD-format data, with the gold paragraph
alone or among BM25 distractors.

For each question the context is the gold paragraph plus ``distractors`` paragraphs of the same file
ranked by BM25 for the question (paragraphs that contain a reference answer are skipped, so the
gold chunk is the only one that supports an answer), with the gold paragraph at a seeded random
position. Scoring is the official SQuAD one (EM and F1, max over references; for unanswerable
questions only an abstention scores). ``citation_accuracy`` is the share of correct answers (F1 >=
0.5) whose cited chunk is the gold paragraph.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

from eval.report import console_table, write_json
from eval.squad import SquadExample, f1_score, gold_answers, load_squad, squad_scores

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


def sample_examples(examples: list[SquadExample], limit: int | None, seed: int) -> list[SquadExample]:
    """All examples, or ``limit`` of them drawn with a fixed seed (spread over articles)."""
    if not limit or limit >= len(examples):
        return examples
    rng = random.Random(seed)
    return sorted(rng.sample(examples, limit), key=lambda e: e.qid)


def run_benchmark(cfg: QABenchConfig) -> dict[str, Any]:
    from generator.answer import Answerer
    from generator.prompt import ContextChunk
    from index.bm25 import BM25Index

    examples = load_squad(cfg.data)
    chosen = sample_examples(examples, cfg.limit, cfg.seed)
    answerer = Answerer.load(cfg.generator, device=cfg.device)
    model, builder = answerer.model, answerer.builder
    paragraphs = sorted({e.context for e in examples})
    bm25 = None
    if cfg.distractors:
        bm25 = BM25Index()
        bm25.add(list(range(len(paragraphs))), paragraphs)
    max_prompt = model.decoder.config.max_seq_len - model.config.max_answer_tokens - 2
    rng = random.Random(cfg.seed)
    preds: dict[str, str] = {}
    cited_gold: list[bool] = []
    latencies: list[float] = []
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    for ex in tqdm(chosen, desc="qa", unit="q"):
        refs = [a.lower() for a in ex.answers if a]
        chunks = [ContextChunk("gold", ex.context)]
        if bm25 is not None:
            ids, _ = bm25.search(ex.question, cfg.distractors + 10)
            others = [paragraphs[i] for i in ids.tolist() if paragraphs[i] != ex.context and not any(r in paragraphs[i].lower() for r in refs)]
            others = others[: cfg.distractors]
            pos = rng.randint(0, len(others))
            chunks = [ContextChunk(f"d{i}", t) for i, t in enumerate(others)]
            chunks.insert(pos, ContextChunk("gold", ex.context))
        t = time.perf_counter()
        # Chunks past the context window (gold plus long distractors) are truncated or dropped.
        prompt = builder.build(ex.question, chunks, max_len=max_prompt)
        ans = model.answer(prompt, builder.answer_id, abstain_threshold=cfg.abstain_threshold)
        latencies.append(time.perf_counter() - t)
        pred = "" if ans.abstained else ans.text
        preds[ex.qid] = pred
        if not ans.abstained and not ex.is_impossible and f1_score(pred, gold_answers(ex)) >= 0.5:
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
    }
    for key in ("has_ans_em", "has_ans_f1", "no_ans_em", "no_ans_f1", "has_ans_total", "no_ans_total"):
        if key in scores:
            result[key] = round(scores[key], 2) if isinstance(scores[key], float) else scores[key]
    return result


def main(cfg: QABenchConfig, json_path: str | None = None) -> dict[str, Any]:
    result = run_benchmark(cfg)
    cols = [c for c in ("n", "distractors", "em", "f1", "has_ans_f1", "no_ans_f1", "answer_rate", "citation_accuracy", "questions_per_s", "latency_p50_ms") if c in result]
    print(console_table([result], columns=cols))
    if json_path:
        write_json(result, json_path)
    return result
