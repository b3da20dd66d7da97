"""Context budget versus hallucination: retrieval-augmented answering on SQuAD at several budgets.

Every paragraph of a SQuAD file (v1.1 or v2.0) becomes one document of a collection (doc id = the
paragraph id ``"<article>-<paragraph>"``, title = the article title), indexed through the normal
ingestion path (``Engine.upsert_documents``) into ``data_dir``; a collection already there with
every paragraph is reused, so the slow part (encoding ~2,000 paragraphs on a CPU) runs once.

Questions (the first ``limit`` of a deterministic order that cycles through the articles) are
retrieved once per retrieval mode (top ``k``); only the context filter and the generation depend on
the budget, so every budget sees exactly the same hits. Each (budget, mode) cell is summarised by
:func:`eval.rag_metrics.summarize`, and accuracy by the gold chunk's place in the context by
:func:`eval.rag_metrics.by_position`; the definitions of every figure are in
:mod:`eval.rag_metrics` and ``docs/eval.md``.

With a reranker (``rerank``) every mode runs a second time with its best ``rerank_depth`` chunks
re-scored by the cross-encoder before the cut to ``k`` (rows ``<mode>+rerank``); its retrieval
time includes the rerank stage.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import BudgetExceeded, InvalidInput, NotFound
from common.squad import (
    SquadExample,
    exact_match,
    f1_score,
    gold_answers,
    load_squad,
    normalize_answer,
    sample_questions,
    squad_documents,
)
from eval.rag_metrics import (
    QuestionOutcome,
    by_position,
    context_has_answer,
    gold_position,
    summarize,
)

logger = logging.getLogger(__name__)

MODES = ("bm25", "dense", "hybrid")
RERANK_SUFFIX = "+rerank"  # the row label of a mode whose hits a cross-encoder re-scored
TABLE_COLUMNS = (
    "mode", "budget", "n", "em", "f1", "answer_rate", "hallucination_rate", "wrong_answer_rate",
    "abstain_precision", "abstain_recall", "gold_in_context", "mean_context_tokens", "latency_p50_ms",
    "retrieval_p50_ms",
)
POSITION_COLUMNS = ("mode", "budget", "position", "n", "f1", "em", "answer_rate")


@dataclass
class RagBenchConfig:
    """What ``attend bench rag`` runs. ``data_dir`` None: a temporary folder, deleted afterwards."""

    data: Path
    budgets: tuple[int, ...] = (128, 256, 512, 1024)
    modes: tuple[str, ...] = ("hybrid",)
    limit: int | None = None
    k: int = 10
    generator: str = "attend-qa"  # one name, or several comma-separated (compared on the same hits)
    data_dir: Path | None = None
    collection: str | None = None  # default: derived from the file name
    seed: int = 0
    abstain_threshold: float | None = None  # None: the model's own
    score_floor: float | None = None
    rerank: str | None = None  # a reranker: each mode also runs as "<mode>+rerank" (RERANK_SUFFIX)
    rerank_depth: int = 50
    rerank_weight: float | None = None  # None: the reranker's own (retriever.rerank.scorer_weight)

    def __post_init__(self) -> None:
        if not self.budgets or min(self.budgets) < 1:
            raise InvalidInput("budgets must be positive integers")
        unknown = set(self.modes) - set(MODES)
        if not self.modes or unknown:
            raise InvalidInput(f"unknown modes {sorted(unknown)}; choose from {MODES}")
        if self.k < 1:
            raise InvalidInput("k must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise InvalidInput("limit must be at least 1")
        if not self.generators:
            raise InvalidInput("give at least one generator")
        self.variants()  # the rerank option's checks (retriever.rerank.RerankSettings), before any work

    def variants(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(row label, retrieval mode, the search's rerank option) per retrieval run of a question:
        each mode as is (rerank off), then, with a reranker, each mode reranked."""
        from retriever.rerank import RerankSettings

        out: list[tuple[str, str, dict[str, Any]]] = [(m, m, {"model": None}) for m in self.modes]
        if self.rerank:
            opt = RerankSettings(self.rerank, self.rerank_depth, self.rerank_weight).to_dict()
            out += [(f"{m}{RERANK_SUFFIX}", m, opt) for m in self.modes]
        return out

    @property
    def generators(self) -> list[str]:
        return [g.strip() for g in self.generator.split(",") if g.strip()]


@dataclass
class PreparedBench:
    """A collection ready to query: its name and how it was obtained."""

    collection: str
    documents: int
    indexed: bool  # False when an existing collection was reused
    index_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# --- data --------------------------------------------------------------------------------------


def collection_name(path: Path) -> str:
    """``squad-<file stem>``, restricted to the characters collection names allow."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(path).stem)
    return f"squad-{stem}"[:64]


# --- engine ------------------------------------------------------------------------------------


@contextmanager
def bench_engine(data_dir: Path | None, generator: str, encoder: str | None = None,
                 reranker: str | None = None) -> Iterator[Any]:
    """An engine over SQLite in ``data_dir`` (the layout ``attend serve`` uses, so the collection
    can be served afterwards), or in a temporary folder when None. Indexes are saved on exit.
    ``reranker``: a reranker directory searches may name, beside those under ``models/``."""
    from common.settings import Settings
    from engine import build_engine

    tmp = tempfile.TemporaryDirectory(prefix="attend-bench-") if data_dir is None else None
    root = Path(tmp.name if tmp is not None else data_dir)  # type: ignore[arg-type]
    root.mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = {"encoder": encoder} if encoder else {}
    if reranker:
        kw["reranker"] = reranker
    engine = build_engine(Settings(_env_file=None, data_dir=root, database_url=None, generator=generator, **kw))
    try:
        yield engine
    finally:
        engine.close()
        if tmp is not None:
            tmp.cleanup()


def prepare_collection(engine: Any, name: str, docs: Sequence[dict[str, Any]], *, batch_size: int = 64,
                       progress: bool = True) -> PreparedBench:
    """Create collection ``name`` and ingest ``docs`` unless it already holds every one of them."""
    from tqdm.auto import tqdm

    try:
        engine.get_collection(name)
        have = engine.collection_stats(name, indexes=False)["documents"]
    except NotFound:
        engine.create_collection(name)
        have = 0
    if have == len(docs) and docs and all(engine.has_document(name, docs[i]["id"]) for i in (0, -1)):
        logger.info("reusing collection %s (%d documents)", name, have)
        return PreparedBench(name, have, indexed=False)
    t0 = time.perf_counter()
    with tqdm(total=len(docs), unit="doc", desc=f"index {name}", disable=not progress) as bar:
        report = engine.upsert_documents(name, docs, batch_size=batch_size, progress=bar.update)
    if report.failed:
        logger.warning("%d documents failed: %s", len(report.failed), report.failed[0].error)
    engine.save(name)
    return PreparedBench(name, len(docs), indexed=True, index_seconds=time.perf_counter() - t0)


# --- one question ------------------------------------------------------------------------------


def score_answer(ex: SquadExample, result: Any, retrieval_ms: float) -> QuestionOutcome:
    """Score one ``AnswerResult`` (or ``None`` when the budget could not hold the question)."""
    golds = gold_answers(ex)
    refs = [g for g in golds if g]
    prediction = "" if result is None or result.abstained else (result.answer or "")
    if result is not None and result.kind == "generative":
        from generator.citations import strip_citations

        prediction = strip_citations(prediction)  # score what it says, not its [n] markers
    kept = result.context.kept if result is not None else []
    texts = [c.text for c in kept]
    docs = [c.doc_id for c in kept]
    timings = result.timings_ms if result is not None else {}
    abstained = result is None or result.abstained
    # An answer whose text normalises to nothing (a lone "." or "the") is still an answer, not an
    # abstention: it scores 0 everywhere (the official script would credit it on unanswerables).
    empty_answer = not abstained and not normalize_answer(prediction)
    return QuestionOutcome(
        qid=ex.qid,
        answerable=bool(refs),
        abstained=abstained,
        prediction=prediction,
        em=0.0 if empty_answer else exact_match(prediction, golds),
        f1=0.0 if empty_answer else f1_score(prediction, golds),
        context_has_answer=context_has_answer(refs, texts),
        gold_in_context=ex.paragraph_id in docs,
        gold_position=gold_position(docs, texts, ex.paragraph_id, refs),
        context_tokens=result.context.tokens if result is not None else 0,
        generate_ms=timings.get("filter_ms", 0.0) + timings.get("generate_ms", 0.0),
        retrieval_ms=retrieval_ms,
    )


# --- the benchmark -----------------------------------------------------------------------------


def run_rag_bench(cfg: RagBenchConfig, *, engine: Any = None, progress: bool = True) -> dict[str, Any]:
    """Run the benchmark. Returns ``{"rows", "by_position", "outcomes", "config"}`` (see the
    module docstring). ``engine``: use this engine instead of one over ``cfg.data_dir``."""
    examples = load_squad(cfg.data)
    if engine is None:
        with bench_engine(cfg.data_dir, cfg.generators[0], reranker=cfg.rerank) as eng:
            return run_rag_bench(cfg, engine=eng, progress=progress)
    from tqdm.auto import tqdm

    generators = cfg.generators
    answerers = {g: engine.answerer(g) for g in generators}  # load (and fail) before indexing
    for g, answerer in answerers.items():
        too_big = [b for b in cfg.budgets if b > answerer.max_context]
        if too_big:
            raise InvalidInput(f"budgets {too_big} exceed {g}'s context window of {answerer.max_context} tokens")
    prepared = prepare_collection(engine, cfg.collection or collection_name(cfg.data), squad_documents(examples),
                                  progress=progress)
    questions = sample_questions(examples, cfg.limit, cfg.seed)
    budgets = sorted(set(cfg.budgets))
    variants = cfg.variants()
    outcomes: dict[tuple[str, str, int], list[QuestionOutcome]] = {
        (g, label, b): [] for g in generators for label, _, _ in variants for b in budgets
    }
    budget_errors: dict[tuple[str, str, int], int] = {key: 0 for key in outcomes}
    per_question: list[dict[str, Any]] = []
    with tqdm(total=len(questions) * len(variants), unit="q", desc="bench rag", disable=not progress) as bar:
        for ex in questions:
            for mode, search_mode, rerank in variants:
                found = engine.search(prepared.collection, ex.question, k=cfg.k, mode=search_mode, rerank=rerank)
                retrieval_ms = float(found.timings_ms.get("total_ms", 0.0))
                for g in generators:
                    for budget in budgets:
                        try:
                            result = engine.answer_from_search(
                                ex.question, found, budget=budget, score_floor=cfg.score_floor,
                                abstain_threshold=cfg.abstain_threshold, generator=g,
                            )
                        except BudgetExceeded:
                            result = None  # the question alone does not fit: nothing can be said
                            budget_errors[(g, mode, budget)] += 1
                        o = score_answer(ex, result, retrieval_ms)
                        outcomes[(g, mode, budget)].append(o)
                        per_question.append({"generator": g, "mode": mode, "budget": budget, **asdict(o)})
                bar.update(1)
    rows = []
    positions = []
    for (g, mode, budget), group in outcomes.items():
        rows.append({"generator": g, "mode": mode, "budget": budget, **summarize(group),
                     "budget_errors": budget_errors[(g, mode, budget)]})
        positions.extend({"generator": g, "mode": mode, "budget": budget, **r} for r in by_position(group))
    config = {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "budgets": budgets,
        "collection": prepared.collection,
        "documents": prepared.documents,
        "indexed": prepared.indexed,
        "index_seconds": prepared.index_seconds,
        "questions": len(questions),
        "answerable": sum(1 for ex in questions if any(gold_answers(ex))),
        "generator_max_context": answerers[generators[0]].max_context,
        "generators": {g: {"kind": a.kind, "max_context": a.max_context, "answer_reserve": a.answer_reserve}
                       for g, a in answerers.items()},
    }
    return {"rows": rows, "by_position": positions, "outcomes": per_question, "config": config}


# --- reporting ---------------------------------------------------------------------------------


def format_tables(result: dict[str, Any], table: Callable[..., str]) -> str:
    """The summary table and the by-position table, formatted with ``table``
    (:func:`eval.report.markdown_table` or :func:`eval.report.console_table`)."""
    several = len({r.get("generator") for r in result["rows"]}) > 1
    lead = ("generator",) if several else ()  # one generator: the table as it always was
    parts = [table(result["rows"], (*lead, *TABLE_COLUMNS))]
    pos = [r for r in result["by_position"] if r["n"]]
    if pos:
        parts += ["", "Accuracy by the gold chunk's position in the context (answerable questions, gold in context):",
                  "", table(pos, (*lead, *POSITION_COLUMNS))]
    return "\n".join(parts)


def plot_rag_bench(result: dict[str, Any], path: str | Path) -> Path:
    """F1, hallucination rate and gold-in-context rate against budget (log2 x axis): one colour
    per figure, one line style per retrieval mode. Written with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = (("f1", "F1", "tab:blue"), ("hallucination_rate", "hallucination rate", "tab:red"),
              ("gold_in_context", "gold in context", "tab:green"))
    styles = ("-", "--", ":", "-.")
    lines = list(OrderedDict.fromkeys((r.get("generator", ""), r["mode"]) for r in result["rows"]))
    several = len({g for g, _ in lines}) > 1
    markers = ("o", "s", "^", "D")
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    for li, (gen, mode) in enumerate(lines):
        rows = sorted((r for r in result["rows"] if (r.get("generator", ""), r["mode"]) == (gen, mode)), key=lambda r: r["budget"])
        xs = [r["budget"] for r in rows]
        tag = f"{gen}, {mode}" if several else mode
        for key, label, colour in series:
            ys = [float("nan") if r[key] is None else r[key] for r in rows]
            ax.plot(xs, ys, styles[li % len(styles)], color=colour, marker=markers[li % len(markers)], markersize=4,
                    label=f"{label} ({tag})")
    budgets = sorted({r["budget"] for r in result["rows"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("context budget (generator tokens)")
    ax.set_ylabel("fraction of questions")
    n = result["rows"][0]["n"] if result["rows"] else 0
    ax.set_title(f"Context budget vs hallucination ({Path(str(result['config'].get('data', ''))).name}, n={n})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=max(1, len(lines)), frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
