"""Train the grounded QA generator on SQuAD-format data (``attend train generator``).

Warm start from a BERT-family checkpoint (the default encoder, all-MiniLM-L6-v2) into our decoder
with the parallel-context prefix-LM layout, then teacher-forced training of the pointer head on
answer steps only (see :mod:`generator.qa_data` for the example mix). Whole articles are held out
for validation: every ``eval_every`` steps a sample of them is answered and the answers are scored
by the ``score_answers`` the caller passes (``attend train generator`` passes
``eval.squad.squad_scores``); without one, training runs without validation. The loop is
:func:`common.training.fit`: checkpoints (model, optimiser, step, examples seen) are written every
``save_every`` steps and on exit, and the same command continues from the last one.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from common.squad import SquadExample, load_squad, sample_examples
from common.training import TrainRun, fit, held_out, load_run_state
from generator.prompt import ContextChunk, PromptBuilder
from generator.qa_data import QAExample, QAExampleSource, QAItem, QAMix
from generator.qa_model import GroundedQA, QAConfig, collate, qa_loss
from generator.unanswerable import negative_shares
from retriever.embedder import warn_if_bf16_emulated
from retriever.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

LOSS_EMA = 0.98  # the reported loss: an exponential moving average of the step losses

AnswerScorer = Callable[[Mapping[str, str], Sequence[SquadExample]], Mapping[str, float]]
"""``score_answers(predictions, examples)``: SQuAD figures (at least ``em`` and ``f1``) of the
predictions ``{qid: answer text, "" for an abstention}`` (the signature of
``eval.squad.squad_scores``)."""


@dataclass
class TrainConfig:
    data: str
    out: str
    base: str = "all-MiniLM-L6-v2"
    max_seq_len: int = 1024  # position table trained (question + one chunk + answer must fit)
    context_len: int = 2048  # context window of the saved model (all chunks + answer)
    steps: int = 3000
    lr: float = 1e-4
    warmup: float = 0.06
    weight_decay: float = 0.01
    batch_tokens: int = 4096  # tokens per batch (padded), examples bucketed by length
    max_batch: int = 32
    val_fraction: float = 0.04
    eval_every: int = 500
    eval_examples: int = 300
    save_every: int = 250
    max_minutes: float | None = None
    seed: int = 0
    threads: int | None = None
    mix: dict | None = None
    limit_items: int | None = None
    init: str | None = None  # start from a saved QA model (e.g. models/attend-qa) instead of the base
    calibrate_examples: int = 400  # held-out questions for the abstain threshold (0: keep 0.5)
    calibrate_negatives: str = "squad2"  # how the unanswerable calibration cases are drawn (generator.calibrate)
    precision: str = "fp32"  # "bf16": autocast matmuls to bfloat16 (fp32 master weights and loss)
    mine_negatives: int = 1  # > 1: each rule-made negative is the hardest of this many candidates
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda[:N]"


def split_articles(items: Sequence[QAItem], val_fraction: float) -> tuple[list[QAItem], list[QAItem]]:
    """Deterministic article-level split (crc32 of the title)."""
    train, val = [], []
    for it in items:
        (val if held_out(it.article, val_fraction) else train).append(it)
    return train, val


def load_items(path: str | Path, limit: int | None = None) -> list[QAItem]:
    items = [
        QAItem(e.qid, e.question, e.context, tuple(e.answers), tuple(e.answer_starts), e.title)
        for e in load_squad(path)
    ]
    return items[:limit] if limit else items


class BM25Distractors:
    """Top BM25 paragraphs for a question, from the training paragraphs only."""

    def __init__(self, items: Sequence[QAItem]) -> None:
        from index.bm25 import BM25Index

        self.paragraphs = sorted({it.context for it in items})
        self.index = BM25Index()
        self.index.add(list(range(len(self.paragraphs))), self.paragraphs)

    def __call__(self, item: QAItem, n: int) -> list[str]:
        ids, _ = self.index.search(item.question, n + 3)
        return [self.paragraphs[i] for i in ids.tolist() if self.paragraphs[i] != item.context][: n + 2]


def batches(source: Iterator[QAExample], batch_tokens: int, max_batch: int, pool: int = 512, seed: int = 0) -> Iterator[list[QAExample]]:
    """Length-bucketed batches: draw ``pool`` examples, sort by length, cut into batches whose
    padded size stays under ``batch_tokens``, shuffle the batches."""
    rng = random.Random(seed)
    while True:
        buf = sorted((next(source) for _ in range(pool)), key=lambda e: len(e.input_ids))
        out: list[list[QAExample]] = []
        cur: list[QAExample] = []
        for e in buf:
            longest = max([len(e.input_ids)] + [len(x.input_ids) for x in cur])
            if cur and (longest * (len(cur) + 1) > batch_tokens or len(cur) >= max_batch):
                out.append(cur)
                cur = []
            cur.append(e)
        if cur:
            out.append(cur)
        rng.shuffle(out)
        yield from out


def evaluate(
    model: GroundedQA, builder: PromptBuilder, items: Sequence[QAItem], score_answers: AnswerScorer,
    distract: BM25Distractors | None = None, n_distractors: int = 0,
) -> dict[str, float]:
    """EM/F1 (``score_answers``) on held-out items (gold paragraph plus ``n_distractors`` BM25
    paragraphs), and the abstention rate on the same questions with the answer sentences removed."""
    from generator.qa_data import remove_answer_sentences

    model.eval()
    preds: dict[str, str] = {}
    examples = []
    cited = correct = 0
    abstain_ok = abstain_n = 0
    for it in items:
        chunks = [ContextChunk(0, it.context)]
        if n_distractors and distract is not None:
            low = [a.lower() for a in it.answers]
            others = [t for t in distract(it, n_distractors) if not any(a in t.lower() for a in low)][:n_distractors]
            chunks = chunks + [ContextChunk(i + 1, t) for i, t in enumerate(others)]
        prompt = builder.build(it.question, chunks)
        ans = model.read(prompt, builder.answer_id)
        preds[it.qid] = "" if ans.abstained else ans.text
        examples.append(SquadExample(it.qid, it.question, it.context, list(it.answers), list(it.answer_starts), False, it.article, ""))
        if not ans.abstained:
            correct += 1
            cited += prompt.chunks[ans.chunk_index].chunk_id == 0
        neg = remove_answer_sentences(it.context, it.answers)
        if neg is not None:
            abstain_n += 1
            abstain_ok += model.read(builder.build(it.question, [ContextChunk(0, neg)]), builder.answer_id).abstained
    scores = score_answers(preds, examples)
    model.train()
    return {
        "em": scores["em"],
        "f1": scores["f1"],
        "answered_cites_gold": cited / max(correct, 1),
        "abstain_on_removed": abstain_ok / max(abstain_n, 1),
    }


def _batch(examples: list[QAExample], pad_id: int, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Model inputs and targets of ``examples``, collated and on ``device``."""
    data = {k: v.to(device, non_blocking=True) for k, v in collate(examples, pad_id=pad_id).items()}
    return data, data.pop("targets")


def abstain_scorer(model: GroundedQA, pad_id: int, precision: str = "fp32"):
    """p(ABSTAIN) at the first answer step of each example, from the model as it is now (one
    batched forward pass without gradients, dropout off; the model's train/eval mode is kept)."""
    from generator.qa_data import ABSTAIN_CLASS

    def score(examples: list[QAExample]) -> list[float]:
        was_training = model.training
        model.eval()
        try:
            data, _ = _batch(examples, pad_id, model.decoder.device)
            with torch.no_grad(), torch.autocast(model.decoder.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(**data)
            return torch.softmax(logits[:, 0].float(), dim=-1)[:, ABSTAIN_CLASS].tolist()
        finally:
            model.train(was_training)

    return score


def train(cfg: TrainConfig, *, score_answers: AnswerScorer | None = None) -> Path:
    """Run (or resume) training; returns the output directory with the final model.
    ``score_answers`` scores the validation answers (see the module docstring); None: no validation."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {cfg.precision!r} (fp32 or bf16)")
    negative_shares(cfg.calibrate_negatives)  # a bad name fails now, not after hours of training
    if cfg.mine_negatives < 1:
        raise ValueError("mine_negatives must be at least 1")
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    from common.paths import resolve_encoder

    base_dir = resolve_encoder(cfg.base)
    tokenizer = Tokenizer.from_dir(base_dir)
    builder = PromptBuilder(tokenizer)
    items = load_items(cfg.data, cfg.limit_items)
    train_items, val_items = split_articles(items, cfg.val_fraction)
    logger.info("%d training questions, %d held out (%d articles)", len(train_items), len(val_items), len({i.article for i in val_items}))
    t = time.perf_counter()
    distract = BM25Distractors(train_items)
    logger.info("BM25 over %d training paragraphs in %.1fs", len(distract.paragraphs), time.perf_counter() - t)
    mix = QAMix(**cfg.mix) if cfg.mix else QAMix()
    if cfg.init:
        model, _ = GroundedQA.load(cfg.init)
        model.train()
        logger.info("initialised from %s", cfg.init)
    else:
        model = GroundedQA.from_bert(base_dir, max_seq_len=cfg.max_seq_len, config=QAConfig())
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    model.to(device)
    logger.info("training on %s", device)
    warn_if_bf16_emulated(cfg.precision, model.decoder.device)
    state = load_run_state(out)
    if state is not None:
        state = {**state, "model": _model_state(state), "extra": {**state.get("extra", {}), "seen": _examples_seen(state)}}
    run = TrainRun(
        model, out=out, total=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
        save_every=cfg.save_every, max_minutes=cfg.max_minutes or None, desc="train generator",
        config=asdict(cfg), state=state, loss_ema=LOSS_EMA,
    )
    run.extra.setdefault("seen", 0)
    scorer = abstain_scorer(model, tokenizer.pad_id or 0, cfg.precision) if cfg.mine_negatives > 1 else None
    source = QAExampleSource(builder, train_items, distract, mix, seed=cfg.seed + run.step, mine=cfg.mine_negatives, scorer=scorer)
    stream = batches(iter(source), cfg.batch_tokens, cfg.max_batch, seed=cfg.seed + run.step)
    rng = random.Random(cfg.seed)
    val_sample = rng.sample(val_items, min(cfg.eval_examples, len(val_items)))

    def next_loss() -> torch.Tensor:
        batch = next(stream)
        data, targets = _batch(batch, tokenizer.pad_id or 0, device)
        with torch.autocast(model.decoder.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            logits = model(**data)
        run.extra["seen"] += len(batch)
        return qa_loss(logits, targets)

    def validate() -> None:
        assert score_answers is not None
        scores = evaluate(model, builder, val_sample, score_answers, distract)
        run.record({k: round(v, 4) for k, v in scores.items()}, seen=run.extra["seen"])

    model.train()
    fit(run, next_loss, every=cfg.eval_every, validate=validate if val_sample and score_answers is not None else None,
        postfix=lambda: {"seqs": run.extra["seen"]})
    model.eval()
    model.to("cpu")  # the shipped model is saved (and calibrated) as it will be served by default
    model.extend_context(cfg.context_len)
    extra: dict = {"training": {**asdict(cfg), "steps_done": run.step, "examples_seen": run.extra["seen"], "history": run.history}}
    if cfg.calibrate_examples and val_items:
        from generator.calibrate import calibrate

        extra["calibration"] = calibrate(model, builder, val_items, n=cfg.calibrate_examples, seed=cfg.seed, negatives=cfg.calibrate_negatives).as_dict()
    model.save(out / "model", tokenizer, extra=extra)
    (out / "history.json").write_text(json.dumps(run.history, indent=2))
    return out / "model"


def calibrate_saved(
    model_dir: str | Path,
    data: str | Path,
    *,
    n: int = 400,
    seed: int = 0,
    val_fraction: float | None = None,
    negatives: str = "squad2",
    out: str | Path | None = None,
    has_ans_floor: float | None = None,
) -> dict:
    """Calibrate the abstain threshold of a saved model on the held-out articles of its training
    data (the same article split as training), and rewrite its ``config.json`` (or, with ``out``,
    write a calibrated copy there)."""
    from common.paths import resolve_model_dir
    from generator.calibrate import calibrate

    _check_calibration_args(out, has_ans_floor)
    path = resolve_model_dir(model_dir)
    model, builder = GroundedQA.load(path)
    cfg = json.loads((path / "config.json").read_text())
    frac = val_fraction if val_fraction is not None else cfg.get("training", {}).get("val_fraction", 0.04)
    _, val_items = split_articles(load_items(data), frac)
    if not val_items:
        raise ValueError(f"no held-out articles in {data} at val_fraction {frac}")
    cal = calibrate(model, builder, val_items, n=n, seed=seed, negatives=negatives, has_ans_floor=has_ans_floor).as_dict()
    return _write_calibration(path, cfg, {**cal, "data": str(data), "val_fraction": frac, "n_questions": n, "seed": seed}, out)


def calibrate_labeled_saved(
    model_dir: str | Path,
    labeled: str | Path,
    *,
    n: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    has_ans_floor: float | None = None,
) -> dict:
    """Calibrate the abstain threshold of a saved model on labelled questions (a SQuAD 2.0-format
    file: answerable questions with their answers, unanswerable ones marked ``is_impossible``; all
    of them, or ``n`` drawn with ``seed``), and rewrite its ``config.json`` (or, with ``out``,
    write a calibrated copy there)."""
    from common.paths import resolve_model_dir
    from generator.calibrate import calibrate_labeled

    _check_calibration_args(out, has_ans_floor)
    path = resolve_model_dir(model_dir)
    examples = sample_examples(load_squad(labeled), n, seed)
    model, builder = GroundedQA.load(path)
    cfg = json.loads((path / "config.json").read_text())
    cal = calibrate_labeled(model, builder, examples, has_ans_floor=has_ans_floor).as_dict()
    return _write_calibration(path, cfg, {**cal, "data": str(labeled), "n_questions": len(examples), "seed": seed}, out)


def _check_calibration_args(out: str | Path | None, has_ans_floor: float | None) -> None:
    """Before any calibration work: refuse an ``out`` that holds anything and a floor off the F1 scale."""
    from common.errors import InvalidInput
    from generator.calibrate import check_has_ans_floor

    check_has_ans_floor(has_ans_floor)

    dest = None if out is None else Path(out)
    if dest is not None and dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidInput(f"--out {out} already exists and is not an empty directory")


def _write_calibration(path: Path, cfg: dict, calibration: dict, out: str | Path | None = None) -> dict:
    """Record ``calibration`` in the model's config: in ``path`` itself, or in a copy of the model
    written to ``out`` once the calibration has succeeded (so a failed run leaves no copy)."""
    import shutil

    from common.atomic import atomic_write_text

    if out is not None:
        shutil.copytree(path, out, dirs_exist_ok=True)
        path = Path(out)
    cfg["qa_config"]["abstain_threshold"] = calibration["threshold"]
    cfg["calibration"] = calibration
    atomic_write_text(path / "config.json", json.dumps(cfg, indent=2) + "\n")
    return calibration


def _model_state(state: dict) -> dict:
    """The model weights of a checkpoint. Checkpoints written before the decoder stopped
    registering its transposed-head cache hold a duplicate ``decoder._head_src``; drop it."""
    return {k: v for k, v in state["model"].items() if not k.endswith("._head_src")}


def _examples_seen(state: Mapping[str, Any]) -> int:
    """Training examples a checkpoint has seen: ``extra.seen`` (the loop of
    :mod:`common.training`), or the top-level ``seen`` of checkpoints written before it."""
    return int(state.get("extra", {}).get("seen", state.get("seen", 0)))


def export_checkpoint(run_dir: str | Path, dest: str | Path, *, base: str = "all-MiniLM-L6-v2", context_len: int = 2048) -> Path:
    """Write the model of a run's ``checkpoint.pt`` (possibly mid-training) as a shippable model
    directory (half precision, context extended to ``context_len``)."""
    from common.paths import resolve_encoder

    state = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)
    cfg = state.get("config", {})
    base_dir = resolve_encoder(cfg.get("base", base))
    model = GroundedQA.from_bert(base_dir, max_seq_len=cfg.get("max_seq_len", 1024), config=QAConfig())
    weights = _model_state(state)
    table = weights.get("decoder.pos_embeddings.weight")
    if table is not None:  # a run started with --init holds the exported (longer) position table
        model.extend_context(table.shape[0])
    model.load_state_dict(weights)
    model.eval()
    model.extend_context(context_len)
    info = {**cfg, "steps_done": state["step"], "examples_seen": _examples_seen(state), "history": state.get("history", [])}
    return model.save(dest, Tokenizer.from_dir(base_dir), extra={"training": info})
