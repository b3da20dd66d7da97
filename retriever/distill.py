"""Distil the sentence encoder into a smaller one trained from random initialisation
(``attend train distill``).

The student is our ``BertEncoder`` with fewer layers (and optionally fewer heads or a narrower MLP),
the teacher's WordPiece tokenizer and vocabulary, the teacher's pooling and the teacher's output
width, so it is a drop-in replacement: same directory format, same vector size, same chunking.
(A narrower student would need a projection head, which the checkpoint loader does not read yet,
so ``dim`` must equal the teacher's.)

Training texts are read from BEIR ``corpus.jsonl`` / ``queries.jsonl`` files, a BEIR folder (its
corpus and the queries judged in its ``train`` qrels, never another split's), SQuAD-format JSON (the
distinct paragraphs) or plain ``.txt`` (one text per line), and cut into the chunks the index
would embed: ``index.chunking.Chunker`` with the engine's default chunk size and overlap, the title
in front of each chunk as ``index.collection.index_text`` does. Queries are short and stay whole.
With ``sentences``, every sentence of at least ``MIN_SENTENCE_WORDS`` words is a text of its own as
well: short, query-like texts in the documents' own language, which is what the student sees at
search time (a claim or a question) and what chunks alone do not teach it.
The teacher embeds every text once; the vectors are cached in ``OUT/teacher.npy`` under a key of
the texts and the teacher (``OUT/teacher.json``), so a resumed or repeated run does not re-encode.

The loss is ``1 - cos(student, teacher)`` (``objective="cosine"``) or the squared distance
(``"mse"``, which also matches norms when the teacher does not normalise), plus, with weight
``contrastive``, InfoNCE of each student vector against the teacher vectors of the batch. A small
held-out share of the texts (crc32) measures the mean student-teacher cosine during training;
``eval_data`` adds nDCG@10/Recall@100/MRR@10 of the student on a BEIR split, scored by the
``score_run`` the caller passes (``attend train distill`` passes ``eval.metrics.evaluate``). The
loop is :func:`common.training.fit`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.atomic import atomic_write, atomic_write_text
from common.beir import iter_jsonl, load_beir
from common.errors import InvalidInput, NotFound
from common.paths import resolve_encoder
from common.squad import load_squad
from common.training import batch_stream, fit, held_out, load_run_state
from index.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, Chunker, split_sentences
from index.collection import index_text
from retriever.checkpoint import load_checkpoint, save_checkpoint
from retriever.embedder import SentenceEncoder
from retriever.encoder import BertConfig, BertEncoder
from retriever.encoder_training import (
    LoopConfig,
    RunScorer,
    embed,
    evaluate_retrieval,
    finish_run,
    info_nce,
)
from retriever.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

OBJECTIVES: tuple[str, ...] = ("cosine", "mse")
TEXT_FORMATS = ".jsonl (BEIR corpus or queries), a BEIR folder (corpus and train queries), .json (SQuAD), .txt (one text per line)"
MIN_SENTENCE_WORDS = 5


@dataclass(kw_only=True)
class DistillConfig(LoopConfig):
    """``attend train distill`` options (see the module docstring)."""

    texts: list[str] = field(default_factory=list)
    teacher: str = "all-MiniLM-L6-v2"
    layers: int = 4
    dim: int | None = None  # None: the teacher's width (required: see the module docstring)
    heads: int = 12
    intermediate: int | None = None  # None: 4 x dim
    objective: str = "cosine"
    sentences: bool = False  # also every sentence of the texts as a text of its own
    contrastive: float = 0.0  # weight of the in-batch InfoNCE term (student i vs teacher batch)
    scale: float = 20.0
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
    val_fraction: float = 0.02
    val_max: int = 2000
    eval_data: str | None = None  # BEIR folder for nDCG@10 of the student at each validation
    eval_split: str = "test"
    batch_size: int = 64
    lr: float = 5e-4
    epochs: int = 3
    save_every: int = 200


def _title_text(record: dict) -> tuple[str, str]:
    """``(title, text)`` of a BEIR corpus or queries record, empty strings for missing fields."""
    return str(record.get("title") or ""), str(record.get("text") or "")


def read_texts(path: str | Path) -> list[tuple[str, str]]:
    """``(title, text)`` records of one file: a BEIR corpus or queries ``.jsonl`` (title, text), a
    BEIR folder (corpus records, then the ``train`` split's queries), a SQuAD ``.json`` (distinct
    paragraphs, no title) or a ``.txt`` (non-blank lines)."""
    path = Path(path)
    if path.is_dir():
        ds = load_beir(path, split="train")
        return [_title_text(d) for d in ds.corpus.values()] + [("", q) for q in ds.queries.values()]
    if not path.is_file():
        raise NotFound(f"texts file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return [_title_text(obj) for _, obj in iter_jsonl(path)]
    if suffix == ".json":
        return [("", c) for c in dict.fromkeys(e.context for e in load_squad(path))]
    if suffix == ".txt":
        return [("", line.strip()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    raise InvalidInput(f"{path}: unknown text format {suffix!r}; use {TEXT_FORMATS}")


def load_texts(paths: list[str], tokenizer: Tokenizer, chunk_tokens: int, chunk_overlap: int, sentences: bool = False) -> list[str]:
    """The distinct training texts of all files, in file order: each record chunked as the index
    chunks documents, each chunk with its title in front; with ``sentences``, each record's sentences
    of at least ``MIN_SENTENCE_WORDS`` words too."""
    chunker = Chunker(tokenizer, max_tokens=chunk_tokens, overlap=chunk_overlap)
    texts: list[str] = []
    for path in paths:
        records = read_texts(path)
        chunked = chunker.chunk_batch([text for _, text in records])
        before = len(texts)
        for (title, text), chunks in zip(records, chunked, strict=True):
            if chunks:
                texts += [index_text(title, c.text) for c in chunks]
            elif title.strip():
                texts.append(index_text(title, text))
            if sentences:  # a one-sentence text (a query) is already there; the dedup below drops it
                texts += [s for s in split_sentences(text) if len(s.split()) >= MIN_SENTENCE_WORDS]
        logger.info("%s: %d records, %d texts", path, len(records), len(texts) - before)
    texts = list(dict.fromkeys(texts))
    if not texts:
        raise InvalidInput(f"no texts to train on in {', '.join(map(str, paths)) or '(no files)'}")
    return texts


def encode_teacher(teacher: SentenceEncoder, texts: list[str], batch_size: int) -> np.ndarray:
    """The teacher's vectors of ``texts`` (N, dim) float32."""
    logger.info("embedding %d texts with the teacher", len(texts))
    return teacher.encode(texts, batch_size=batch_size, show_progress=True)


def teacher_vectors(teacher: SentenceEncoder, teacher_dir: Path, texts: list[str], out: Path, batch_size: int) -> np.ndarray:
    """The teacher's vectors from ``OUT/teacher.npy`` when its key (texts, teacher directory,
    precision, max length, pooling) matches ``OUT/teacher.json``; else computed and cached."""
    h = hashlib.sha256(json.dumps({
        "teacher": str(teacher_dir.resolve()), "precision": teacher.precision, "max_length": teacher.max_length,
        "pooling": [teacher.pooling.mode, teacher.pooling.normalize],
    }).encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    key = h.hexdigest()
    npy, meta = out / "teacher.npy", out / "teacher.json"
    if npy.is_file() and meta.is_file():
        if json.loads(meta.read_text(encoding="utf-8")).get("key") == key:
            vecs = np.load(npy)
            if vecs.shape == (len(texts), teacher.dim):
                logger.info("teacher vectors from %s", npy)
                return vecs
        logger.warning("%s holds vectors of other texts or another teacher; embedding again", npy)
    vecs = encode_teacher(teacher, texts, batch_size).astype(np.float32)
    atomic_write(npy, lambda f: np.save(f, vecs))
    atomic_write_text(meta, json.dumps({"key": key, "texts": len(texts), "dim": int(vecs.shape[1]), "teacher": str(teacher_dir)}) + "\n")
    return vecs


def student_config(cfg: DistillConfig, teacher: BertConfig) -> BertConfig:
    """Our encoder architecture, smaller: vocabulary, positions and output width of the teacher."""
    dim = cfg.dim or teacher.hidden_size
    if dim != teacher.hidden_size:
        raise InvalidInput(
            f"student dim {dim} differs from the teacher's {teacher.hidden_size}: a projection head would "
            "be needed and the checkpoint loader does not read one; make the student smaller with fewer "
            "layers, heads or a narrower --intermediate"
        )
    if cfg.layers < 1:
        raise InvalidInput(f"layers must be >= 1, got {cfg.layers}")
    return BertConfig(
        vocab_size=teacher.vocab_size, hidden_size=dim, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate or 4 * dim, hidden_act=teacher.hidden_act,
        max_position_embeddings=teacher.max_position_embeddings, type_vocab_size=teacher.type_vocab_size,
        layer_norm_eps=teacher.layer_norm_eps, pad_token_id=teacher.pad_token_id,
    )


def distill_loss(student: torch.Tensor, target: torch.Tensor, objective: str, contrastive: float = 0.0, scale: float = 20.0) -> torch.Tensor:
    """``student`` (B, D) against the teacher's ``target`` (B, D): mean ``1 - cos`` or mean squared
    distance, plus ``contrastive`` x InfoNCE of student i against the teacher vectors of the batch."""
    if objective == "cosine":
        loss = (1 - torch.nn.functional.cosine_similarity(student, target, dim=-1)).mean()
    elif objective == "mse":
        loss = (student - target).pow(2).sum(dim=-1).mean()
    else:
        raise InvalidInput(f"objective {objective!r} is not one of {OBJECTIVES}")
    if contrastive:
        loss = loss + contrastive * info_nce(student, target, scale)
    return loss


def distill(cfg: DistillConfig, *, score_run: RunScorer | None = None) -> Path:
    """Train (or resume training) the student; returns ``OUT/model``. ``score_run`` scores the
    retrieval on ``eval_data`` (required with it; see :mod:`retriever.encoder_training`)."""
    out = cfg.setup()
    if cfg.objective not in OBJECTIVES:
        raise InvalidInput(f"objective {cfg.objective!r} is not one of {OBJECTIVES}")
    if cfg.contrastive < 0 or not 0 <= cfg.val_fraction < 1:
        raise InvalidInput("need contrastive >= 0 and 0 <= val_fraction < 1")
    if not cfg.texts:
        raise InvalidInput(f"name at least one texts file: {TEXT_FORMATS}")
    if cfg.eval_data and score_run is None:
        raise InvalidInput("eval_data needs a run scorer to report the student's retrieval figures")
    teacher_dir = resolve_encoder(cfg.teacher)
    tckpt = load_checkpoint(teacher_dir)
    tokenizer, pooling, max_length = tckpt.tokenizer, tckpt.pooling, tckpt.max_length
    scfg = student_config(cfg, tckpt.model.config)
    eval_ds = load_beir(cfg.eval_data, split=cfg.eval_split) if cfg.eval_data else None
    texts = load_texts(cfg.texts, tokenizer, cfg.chunk_tokens, cfg.chunk_overlap, cfg.sentences)
    teacher = SentenceEncoder(tckpt.model, tokenizer, pooling, cfg.max_seq_len, device=cfg.device, precision=cfg.precision)
    del tckpt
    targets = teacher_vectors(teacher, teacher_dir, texts, out, cfg.encode_batch_size)
    del teacher

    state = load_run_state(out)
    if state is not None:
        saved = BertConfig.from_dict(state["extra"]["student"])
        if saved.to_dict() != scfg.to_dict():
            logger.warning("%s holds a student of another shape than the options ask for; continuing with it", out / "checkpoint.pt")
        scfg = saved
    torch.manual_seed(cfg.seed)
    model = BertEncoder(scfg)
    enc = SentenceEncoder(model, tokenizer, pooling, cfg.max_seq_len, device=cfg.device, precision=cfg.precision)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("student: %d layers, dim %d, %d heads, MLP %d: %.1fM parameters", scfg.num_hidden_layers,
                scfg.hidden_size, scfg.num_attention_heads, scfg.intermediate_size, n_params / 1e6)

    val = [i for i, t in enumerate(texts) if held_out(t, cfg.val_fraction)][: cfg.val_max]
    held = set(val)
    train_idx = [i for i in range(len(texts)) if i not in held]
    if not train_idx:
        raise InvalidInput("every text is held out for validation; lower val_fraction or add texts")
    ids = enc.tokenize([texts[i] for i in train_idx])
    lengths = [len(x) for x in ids]
    total, per_epoch = cfg.total_steps(len(train_idx), lengths)
    run = cfg.train_run(model, total, "distill", state)
    run.extra["student"] = scfg.to_dict()
    target_t = torch.from_numpy(targets)  # (N, D)

    def validate() -> None:
        row: dict[str, float] = {}
        if val:
            vecs = enc.encode([texts[i] for i in val], batch_size=cfg.encode_batch_size)
            cos = (vecs * targets[val]).sum(1) / np.maximum(np.linalg.norm(vecs, axis=1) * np.linalg.norm(targets[val], axis=1), 1e-12)
            row["val_cosine"] = round(float(cos.mean()), 4)
        if eval_ds is not None and score_run is not None:
            doc_ids = list(eval_ds.corpus)
            scores = evaluate_retrieval(enc, doc_ids, [index_text(eval_ds.corpus[d]["title"], eval_ds.corpus[d]["text"]) for d in doc_ids], eval_ds.queries,
                                        eval_ds.qrels, score_run, batch_size=cfg.encode_batch_size)
            row.update({k: round(v, 4) for k, v in scores.items()})
        if row:
            run.record(row)
        model.train()

    logger.info("%d training texts (%d steps per epoch), %d held out", len(train_idx), per_epoch, len(val))
    model.train()
    stream = batch_stream(len(train_idx), cfg.batch_size, cfg.seed, run.step, lengths)

    def next_loss() -> torch.Tensor:
        batch = next(stream)
        student = embed(enc, [ids[i] for i in batch])  # (B, D)
        target = target_t[[train_idx[i] for i in batch]].to(student.device)  # (B, D)
        return distill_loss(student, target, cfg.objective, cfg.contrastive, cfg.scale)

    fit(run, next_loss, every=cfg.eval_every or per_epoch, validate=validate)
    model.eval()
    path = save_checkpoint(out / "model", model, tokenizer, pooling, max_length)
    facts = {
        "teacher": cfg.teacher,
        "architecture": f"{scfg.num_hidden_layers} layers, dim {scfg.hidden_size}, {scfg.num_attention_heads} heads, "
        f"MLP {scfg.intermediate_size}, {n_params / 1e6:.1f}M parameters, random initialisation, the teacher's tokenizer",
        "data": f"{', '.join(cfg.texts)}: {len(texts)} texts (chunks of {cfg.chunk_tokens} tokens), {len(val)} held out",
        "command": f"`{cfg.command}`" if cfg.command else "",
        "loss": f"{cfg.objective}" + (f" + {cfg.contrastive} x in-batch InfoNCE (scale {cfg.scale})" if cfg.contrastive else ""),
        "steps": f"{run.step} of {run.total} (batch {cfg.batch_size}, lr {cfg.lr}, {cfg.precision}, max {cfg.max_seq_len} tokens)",
        "training time": f"{run.seconds / 60:.1f} min",
    }
    finish_run(run, out, path, "Distilled sentence encoder", "A smaller encoder trained with `attend train distill` to reproduce the teacher's embeddings.", facts)
    return path
