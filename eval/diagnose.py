"""``attend bench diagnose``: why wrong answers are wrong, over a SQuAD file.

Each answerable question is answered through the engine's normal answer path and diagnosed with
:func:`generator.diagnosis.diagnose_answer` (the attention share and the verdicts are defined
there). Wrong answers (F1 < 0.5, abstentions included) are attributed to the expected chunk's fate
(:func:`failure_kind`): ``not_retrieved``, ``cut``, ``ignored`` or ``used_but_wrong``; among correct
answers with the gold chunk in a context of at least two chunks, ``gold_top_attention_rate`` is how
often the gold chunk has the largest attention share and ``gold_top_retrieval_rate`` how often it
is the best-ranked chunk of the context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.errors import InvalidInput
from common.squad import f1_score, gold_answers, load_squad
from generator.diagnosis import VERDICTS, Diagnosis, round_or_none

FAILURE_KINDS = ("not_retrieved", "cut", "ignored", "used_but_wrong")
CORRECT_F1 = 0.5


def failure_kind(verdict: str) -> str:
    """What a wrong answer is attributed to: the expected chunk's verdict, ``used`` becoming
    ``used_but_wrong``."""
    if verdict not in VERDICTS:
        raise InvalidInput(f"unknown verdict {verdict!r}")
    return "used_but_wrong" if verdict == "used" else verdict


def diagnose_question(
    engine: Any, collection: str, question: str, *, k: int, budget: int, mode: str,
    abstain_threshold: float | None, expected_doc_id: str | None, expected_answers: Sequence[str],
) -> Diagnosis:
    """Answer ``question`` through ``engine.answer`` (the engine's default generator for the
    collection) and diagnose the answer's attention."""
    return engine.diagnose(collection, question, k=k, budget=budget, mode=mode, abstain_threshold=abstain_threshold,
                           expected_doc_id=expected_doc_id, expected_answers=expected_answers)


@dataclass(frozen=True)
class DiagnosedQuestion:
    """One question's answer quality and its gold chunk's fate."""

    qid: str
    f1: float
    abstained: bool
    verdict: str
    cut_reason: str | None
    context_chunks: int
    gold_top_attention: bool | None  # None unless the gold chunk is in the context
    gold_top_retrieval: bool | None
    gold_top_lift: bool | None  # largest share / uniform share
    gold_top_all_layers: bool | None = None  # largest share_all_layers (mean over every layer)


def gold_tops(diag: Diagnosis) -> tuple[bool | None, bool | None, bool | None, bool | None]:
    """Whether the expected chunk has the largest attention share, the best rank, the largest
    share relative to uniform, and the largest all-layer share among the chunks in the context
    (None each when it is not there)."""
    exp = next((c for c in diag.chunks if c.expected), None)
    kept = [c for c in diag.chunks if c.in_context]
    if exp is None or not exp.in_context:
        return None, None, None, None
    return (
        exp.share == max(c.share or 0.0 for c in kept),
        exp.rank == min(c.rank for c in kept),
        exp.lift == max(c.lift or 0.0 for c in kept),
        exp.share_all_layers == max(c.share_all_layers or 0.0 for c in kept),
    )


def summarize_diagnoses(records: Sequence[DiagnosedQuestion]) -> dict[str, Any]:
    """Failure attribution of the wrong answers (F1 < 0.5) and gold-top rates of the correct ones
    with the gold chunk in a context of at least two chunks. Rates are ``None`` without cases."""
    wrong = [r for r in records if r.f1 < CORRECT_F1]
    correct = [r for r in records if r.f1 >= CORRECT_F1]
    verdicts = {kind: 0 for kind in FAILURE_KINDS}
    cut_reasons: dict[str, int] = {}
    for r in wrong:
        verdicts[failure_kind(r.verdict)] += 1
        if r.verdict == "cut" and r.cut_reason:
            cut_reasons[r.cut_reason] = cut_reasons.get(r.cut_reason, 0) + 1
    eligible = [r for r in correct if r.gold_top_attention is not None and r.context_chunks >= 2]

    def rate(key: str) -> float | None:
        return sum(bool(getattr(r, key)) for r in eligible) / len(eligible) if eligible else None

    return {
        "n": len(records),
        "n_wrong": len(wrong),
        "n_correct": len(correct),
        "n_correct_with_gold": len(eligible),
        "verdicts": verdicts,
        "cut_reasons": cut_reasons,
        "gold_top_attention_rate": rate("gold_top_attention"),
        "gold_top_retrieval_rate": rate("gold_top_retrieval"),
        "gold_top_lift_rate": rate("gold_top_lift"),
        "gold_top_all_layers_rate": rate("gold_top_all_layers"),
        "f1": sum(r.f1 for r in records) / len(records) if records else None,
    }


@dataclass
class DiagnoseBenchConfig:
    """What ``attend bench diagnose`` runs (answerable questions only)."""

    data: Path
    limit: int | None = None
    budget: int = 512
    k: int = 10
    mode: str = "hybrid"
    generator: str = "attend-qa"
    data_dir: Path | None = None
    collection: str | None = None
    seed: int = 0
    abstain_threshold: float | None = None


def run_diagnose_bench(cfg: DiagnoseBenchConfig, *, engine: Any = None, progress: bool = True) -> dict[str, Any]:
    """Diagnose the answers to the answerable questions of a SQuAD file; the expected chunk is the
    gold paragraph's chunk holding a reference answer (else any chunk of the gold paragraph).
    Returns :func:`summarize_diagnoses` plus ``questions`` (one row each) and ``config``."""
    from common.squad import sample_questions, squad_documents
    from eval.rag_bench import bench_engine, collection_name, prepare_collection

    examples = load_squad(cfg.data)
    if engine is None:
        with bench_engine(cfg.data_dir, cfg.generator) as eng:
            return run_diagnose_bench(cfg, engine=eng, progress=progress)
    from tqdm.auto import tqdm

    engine.answerer()  # load (and fail) before indexing
    prepared = prepare_collection(engine, cfg.collection or collection_name(cfg.data), squad_documents(examples),
                                  progress=progress)
    answerable = [ex for ex in examples if any(gold_answers(ex))]
    questions = sample_questions(answerable, cfg.limit, cfg.seed)
    records: list[DiagnosedQuestion] = []
    rows: list[dict[str, Any]] = []
    for ex in tqdm(questions, unit="q", desc="bench diagnose", disable=not progress):
        golds = gold_answers(ex)
        diag = diagnose_question(engine, prepared.collection, ex.question, k=cfg.k, budget=cfg.budget,
                                 mode=cfg.mode, abstain_threshold=cfg.abstain_threshold,
                                 expected_doc_id=ex.paragraph_id, expected_answers=golds)
        prediction = "" if diag.abstained else (diag.answer or "")
        top_attn, top_ret, top_lift, top_all = gold_tops(diag)
        rec = DiagnosedQuestion(
            qid=ex.qid, f1=f1_score(prediction, golds), abstained=diag.abstained,
            verdict=diag.verdict or "not_retrieved", cut_reason=diag.cut_reason,
            context_chunks=len(diag.in_context), gold_top_attention=top_attn, gold_top_retrieval=top_ret,
            gold_top_lift=top_lift,
            gold_top_all_layers=top_all,
        )
        records.append(rec)
        exp = next((c for c in diag.chunks if c.expected), None)
        rows.append({**asdict(rec), "question": ex.question, "prediction": prediction,
                     "gold_share": round_or_none(exp.share, 4) if exp else None,
                     "gold_uniform_share": round_or_none(exp.uniform_share, 4) if exp else None})
    config = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
              "collection": prepared.collection, "documents": prepared.documents, "indexed": prepared.indexed,
              "skipped_unanswerable": len(examples) - len(answerable)}
    return {**summarize_diagnoses(records), "questions": rows, "config": config}
