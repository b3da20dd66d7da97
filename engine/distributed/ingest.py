"""Distributed ingestion: chunk and embed on a pool of Ray actors, write through the engine.

The driver (the process holding the ``Engine``: ``attend index --ray`` or a server's job thread)
validates every document, asks the store which ones changed (so a re-run or a retry only redoes
what is not stored yet), and writes the others' metadata at once. The changed ones go through a
Ray Data pipeline: ``from_items`` -> ``map_batches`` over an actor pool where each actor loads the
collection's encoder and chunker once (one GPU per actor when the cluster has GPUs) and returns
one row per chunk (offsets, token count, embedding). The driver reassembles each document's chunks
and writes them with ``Engine.write_prepared``, ``write_batch_size`` documents per store
transaction, in input order. The store stays the source of truth: other service nodes reconcile
their indexes from it as they always do.

Failures: a killed actor is restarted by Ray and its batch redone (``actor_retries``); rows that
arrive twice are dropped; a write is idempotent (identical content is ``unchanged``). When the
pipeline still fails for a system reason (actors out of restarts, a node lost), the driver runs it
again for the documents not yet written, up to ``max_attempts`` times. Errors in our own code are
not retried: they would fail again.

Ray is imported inside the functions only (``engine.distributed.cluster`` joins the cluster), so
importing this module never needs it.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import InvalidInput
from engine.distributed.cluster import connect
from engine.engine import Engine
from engine.ingest import IngestReport, chunker_for, parse_documents, prepare_documents
from index.chunking import Chunk
from index.records import DocumentInput, PreparedChunks

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]
ActorHook = Callable[[list[str]], None]

_INT_COLUMNS = ("slot", "n_chunks", "ordinal", "char_start", "char_end", "token_count")


@dataclass(frozen=True)
class RayOptions:
    """How to run an ingestion on Ray.

    ``address``: the cluster (``ray://head:10001``, ``head:6379``, ``auto``); None attaches to
    ``RAY_ADDRESS`` or a cluster started on this machine, else starts a local one. ``actors``:
    encoder actors (one model each). ``batch_size``: documents per actor call; 256 documents are
    about 400 chunks of 200 tokens, a few seconds of CPU or a fraction of a second of GPU, so the
    per-call overhead (milliseconds) is negligible and a killed actor redoes little (a guess, to be
    measured). ``write_batch_size``: documents per store transaction. ``actor_retries``: restarts
    of each actor and retries of each batch before the pipeline fails; ``max_attempts``: pipeline
    runs before the ingestion fails. ``gpus``: None gives each actor a GPU when the cluster has any.
    """

    address: str | None = None
    actors: int = 2
    batch_size: int = 256
    write_batch_size: int = 64
    max_attempts: int = 3
    actor_retries: int = 3
    cpus_per_actor: float = 1.0
    gpus: bool | None = None
    progress_bars: bool = False

    def __post_init__(self) -> None:
        for name in ("actors", "batch_size", "write_batch_size", "max_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInput(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.actor_retries, int) or self.actor_retries < 0:
            raise InvalidInput(f"actor_retries must be an integer >= 0, got {self.actor_retries!r}")
        if not self.cpus_per_actor > 0:
            raise InvalidInput(f"cpus_per_actor must be > 0, got {self.cpus_per_actor!r}")


@dataclass
class RayIngestReport(IngestReport):
    """An :class:`IngestReport` plus how the run went: pipeline ``attempts`` (1 unless a system
    failure made the driver run it again; 0 when nothing needed encoding), the ``actors`` used
    and ``gpus_per_actor``."""

    attempts: int = 0
    actors: int = 0
    gpus_per_actor: int = 0
    errors: list[str] = field(default_factory=list)  # the Ray errors that caused a new attempt


@dataclass(frozen=True)
class EncoderSpec:
    """What an actor needs to load the collection's encoder and chunker."""

    name: str
    precision: str
    settings: dict[str, Any]
    device: str = "cpu"


class PrepareActor:
    """A Ray Data actor: loads the encoder and chunker once, then turns each batch of documents
    (``slot``, ``id``, ``title``, ``text``) into one row per chunk (see :func:`chunk_rows`).
    ``hook``, called with the batch's document ids before the work, is for tests."""

    def __init__(self, spec: EncoderSpec, hook: ActorHook | None = None) -> None:
        from retriever.embedder import load_encoder

        self.enc = load_encoder(spec.name, device=spec.device, precision=spec.precision)
        self.chunker = chunker_for(self.enc.tokenizer, spec.settings)
        self.hook = hook

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        docs = [DocumentInput(external_id=str(i), text=str(t), title=str(h))
                for i, t, h in zip(batch["id"], batch["text"], batch["title"], strict=True)]
        if self.hook is not None:
            self.hook([d.external_id for d in docs])
        prepared = prepare_documents(docs, self.enc, self.chunker)
        return chunk_rows([int(s) for s in batch["slot"]], [prepared[d.external_id] for d in docs], self.enc.dim)


def chunk_rows(slots: Sequence[int], prepared: Sequence[PreparedChunks], dim: int) -> dict[str, np.ndarray]:
    """Columns of one row per chunk: the document's ``slot`` and chunk count (``n_chunks``), the
    chunk's ``ordinal``, offsets, ``token_count`` and ``embedding`` ``(rows, dim)``. A document
    without chunks gets one row with ``n_chunks`` 0, so the driver still hears of it. The chunk
    text is not sent: it is ``text[char_start:char_end]`` of the document the driver holds."""
    cols: dict[str, list[int]] = {k: [] for k in _INT_COLUMNS}
    vecs: list[np.ndarray] = []
    for slot, p in zip(slots, prepared, strict=True):
        rows = [(i, c.char_start, c.char_end, c.token_count) for i, c in enumerate(p.chunks)] or [(-1, 0, 0, 0)]
        for ordinal, start, end, tokens in rows:
            for k, v in zip(_INT_COLUMNS, (slot, len(p.chunks), ordinal, start, end, tokens), strict=True):
                cols[k].append(v)
        vecs.append(np.asarray(p.embeddings, dtype=np.float32) if p.chunks else np.zeros((1, dim), np.float32))
    out = {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()}
    out["embedding"] = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)  # (rows, dim)
    return out


class ChunkAssembler:
    """Collects chunk rows into whole documents, whatever the batching the rows arrive in; a row
    seen twice (a retried batch) is dropped."""

    def __init__(self, docs: Mapping[int, DocumentInput]) -> None:
        self.waiting = dict(docs)
        self._rows: dict[int, dict[int, tuple[int, int, int, np.ndarray]]] = {}

    def add(self, batch: Mapping[str, np.ndarray]) -> list[tuple[int, PreparedChunks]]:
        """The documents that ``batch`` completes, as ``(slot, PreparedChunks)``."""
        done: list[tuple[int, PreparedChunks]] = []
        emb = np.asarray(batch["embedding"], dtype=np.float32)
        for r, (slot, n, ordinal, start, end, tokens) in enumerate(zip(*(batch[k] for k in _INT_COLUMNS), strict=True)):
            slot = int(slot)
            doc = self.waiting.get(slot)
            if doc is None:
                continue  # finished already, or not ours
            rows = self._rows.setdefault(slot, {})
            if ordinal >= 0:
                rows[int(ordinal)] = (int(start), int(end), int(tokens), emb[r])
            if len(rows) == int(n):  # ordinals 0..n-1 all here
                ordered = [rows[i] for i in range(int(n))]
                chunks = [Chunk(i, doc.text[s:e], s, e, t) for i, (s, e, t, _) in enumerate(ordered)]
                vecs = np.stack([v for *_, v in ordered]) if ordered else np.zeros((0, emb.shape[1]), np.float32)
                done.append((slot, PreparedChunks(chunks, vecs)))
                del self.waiting[slot]
                self._rows.pop(slot, None)
        return done


def ingest_on_ray(
    engine: Engine,
    collection: str,
    docs: Sequence[Mapping[str, Any] | DocumentInput],
    options: RayOptions | None = None,
    *,
    progress: Progress | None = None,
    actor_hook: ActorHook | None = None,
) -> RayIngestReport:
    """Ingest ``docs`` into ``collection`` with the encoding on Ray (see the module docstring):
    the same outcomes, store content and indexes as ``Engine.upsert_documents``. ``progress`` is
    called with the number of documents after each store transaction (it may raise to stop the
    run; what was written stays). ``actor_hook``: see :class:`PrepareActor`."""
    opts = options or RayOptions()
    t0 = time.perf_counter()
    info = engine.get_collection(collection)
    report = RayIngestReport()
    valid = parse_documents(docs, report)
    ray = None
    while pending := [(slot, d) for slot, d in valid if report.outcomes[slot].status == "pending"]:
        changed = {d.external_id for d in engine.store.changed_documents(collection, [d for _, d in pending])}
        for group in _groups([(s, d) for s, d in pending if d.external_id not in changed], opts.write_batch_size):
            _write(engine, collection, group, {}, report, progress)  # content stored already: metadata only
        todo = {s: d for s, d in pending if d.external_id in changed}
        if not todo:
            continue
        if report.attempts >= opts.max_attempts:
            raise RuntimeError(f"{len(todo)} documents not stored after {report.attempts} attempts: {report.errors[-1]}")
        ray = ray or connect(opts.address)
        report.attempts += 1
        try:
            missing = _run_pipeline(ray, engine, collection, info.settings, todo, opts, report, progress, actor_hook)
        except Exception as exc:
            if not _retryable(ray, exc) or report.attempts >= opts.max_attempts:
                raise
            reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
            logger.warning("ingestion of %s on Ray: attempt %d failed (%s); resuming", collection, report.attempts, reason)
            report.errors.append(reason)
            continue
        if missing:  # not seen before; the next attempt (or the error above) deals with them
            report.errors.append(f"the pipeline returned no chunks for {missing} documents")
    report.seconds = time.perf_counter() - t0
    return report


def _run_pipeline(
    ray: Any,
    engine: Engine,
    collection: str,
    settings: Mapping[str, Any],
    todo: dict[int, DocumentInput],
    opts: RayOptions,
    report: RayIngestReport,
    progress: Progress | None,
    hook: ActorHook | None,
) -> int:
    """One run of the pipeline over ``todo`` (slot -> document), writing as documents complete.
    Returns how many documents it got no rows for (none, unless Ray lost some)."""
    gpus, actors = _placement(ray, opts)
    report.actors, report.gpus_per_actor = actors, gpus
    spec = EncoderSpec(str(settings.get("encoder") or engine.default_encoder), engine.encoder_precision,
                       dict(settings), "cuda" if gpus else "cpu")
    ds = ray.data.from_items([{"slot": s, "id": d.external_id, "title": d.title, "text": d.text} for s, d in todo.items()])
    ds.context.execution_options.preserve_order = True  # documents are stored in input order
    ds.context.enable_progress_bars = opts.progress_bars
    with warnings.catch_warnings():
        # Ray 2.5x deprecates passing remote args as keywords without naming a replacement for
        # these two yet; without them a batch that kills its actor every time is retried forever.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        out = ds.map_batches(
            PrepareActor, fn_constructor_kwargs={"spec": spec, "hook": hook},
            compute=ray.data.ActorPoolStrategy(size=actors), batch_size=opts.batch_size, batch_format="numpy",
            num_cpus=opts.cpus_per_actor, num_gpus=gpus,
            max_restarts=opts.actor_retries, max_task_retries=opts.actor_retries,
        )
    assembler = ChunkAssembler(todo)
    ready: list[tuple[int, PreparedChunks]] = []
    for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
        ready.extend(assembler.add(batch))
        while len(ready) >= opts.write_batch_size:
            _write_prepared(engine, collection, todo, ready[: opts.write_batch_size], report, progress)
            del ready[: opts.write_batch_size]
    if ready:
        _write_prepared(engine, collection, todo, ready, report, progress)
    return len(assembler.waiting)


def _write_prepared(
    engine: Engine,
    collection: str,
    todo: Mapping[int, DocumentInput],
    ready: list[tuple[int, PreparedChunks]],
    report: IngestReport,
    progress: Progress | None,
) -> None:
    group = [(slot, todo[slot]) for slot, _ in ready]
    _write(engine, collection, group, {todo[slot].external_id: p for slot, p in ready}, report, progress)


def _write(
    engine: Engine,
    collection: str,
    group: list[tuple[int, DocumentInput]],
    prepared: Mapping[str, PreparedChunks],
    report: IngestReport,
    progress: Progress | None,
) -> None:
    """One store transaction for ``group``; its outcomes go to their slots of ``report``."""
    sub = engine.write_prepared(collection, [d for _, d in group], prepared)
    for (slot, _), outcome in zip(group, sub.outcomes, strict=True):
        report.outcomes[slot] = outcome
    if progress is not None:
        progress(len(group))


def _groups(items: list[tuple[int, DocumentInput]], size: int) -> list[list[tuple[int, DocumentInput]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _placement(ray: Any, opts: RayOptions) -> tuple[int, int]:
    """``(GPUs per actor, actors)``: a GPU each when ``opts.gpus`` says so or, by default, when the
    cluster has GPUs; then no more actors than GPUs by default (the others would wait forever)."""
    available = int(ray.cluster_resources().get("GPU", 0))
    if opts.gpus is None:
        if available < 1:
            return 0, opts.actors
        if opts.actors > available:
            logger.warning("%d encoder actors asked for, the cluster has %d GPUs: using %d", opts.actors, available, available)
        return 1, min(opts.actors, available)
    if opts.gpus and available < 1:
        raise InvalidInput("GPUs were asked for but the Ray cluster has none")
    return int(opts.gpus), opts.actors


def _retryable(ray: Any, exc: BaseException) -> bool:
    """A failure of the cluster (an actor or worker died, an object or a node was lost), which a
    new attempt may get past; not an exception raised in our code on an actor (Ray raises those
    as ``UserCodeException``), which would come again."""
    errors = ray.exceptions
    if isinstance(exc, errors.UserCodeException):
        return False
    if isinstance(exc, errors.RayTaskError):
        cause = getattr(exc, "cause", None)
        return isinstance(cause, errors.RayError) and not isinstance(cause, errors.UserCodeException)
    return isinstance(exc, errors.RayError)
