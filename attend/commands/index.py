"""``attend index PATH... --collection C [--create] [--ray [ADDRESS]]``: index files (.txt, .md,
.html), folders (recursively) and BEIR ``corpus.jsonl`` files through the same engine path as the
API; with ``--ray`` the chunking and encoding run on a Ray actor pool
(``engine.distributed.ingest``) and the store writes stay here."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.errors import InvalidInput

logger = logging.getLogger(__name__)

GROUP = 512  # documents read and handed to the engine at a time
RAY_GROUP = 50_000  # ... with --ray: one pipeline run each (its actors load the encoder once)


def register(parsers) -> None:
    p = parsers.top.add_parser("index", help="index files, folders or a BEIR corpus.jsonl into a collection")
    p.add_argument("paths", nargs="+", type=Path, help="files (.txt .md .html .jsonl) or folders")
    p.add_argument("--collection", "-c", required=True, help="target collection")
    p.add_argument("--create", action="store_true", help="create the collection if it does not exist")
    p.add_argument("--batch-size", type=int, default=64, help="documents per store transaction")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--ray", nargs="?", const="", default=None, metavar="ADDRESS",
        help="chunk and embed on a Ray cluster (needs attend[distributed]); ADDRESS as ray.init takes it "
        "(ray://head:10001, head:6379, auto); without it: ATTEND_RAY_ADDRESS, else RAY_ADDRESS, else a cluster "
        "started on this machine, else a new local one",
    )
    p.add_argument("--actors", type=int, default=None,
                   help="with --ray: encoder actors, one model each (and one GPU each when the cluster has GPUs); default 2")
    p.add_argument("--ray-batch-size", type=int, default=None, help="with --ray: documents per actor call; default 256")
    p.set_defaults(func=run)


def _is_corpus(path: Path) -> bool:
    return path.suffix.lower() == ".jsonl"


def collect_files(paths: list[Path]) -> list[tuple[Path, str]]:
    """``(file, document id)`` for every indexable file: a folder's files get ids relative to the
    folder, a file given directly its name. A folder holding ``corpus.jsonl`` is a BEIR folder."""
    from engine.types import SUPPORTED_FILES

    out: list[tuple[Path, str]] = []
    for p in paths:
        if p.is_dir():
            if (p / "corpus.jsonl").is_file():
                out.append((p / "corpus.jsonl", ""))
                continue
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in SUPPORTED_FILES:
                    out.append((f, f.relative_to(p).as_posix()))
        elif p.is_file():
            if not (_is_corpus(p) or p.suffix.lower() in SUPPORTED_FILES):
                raise InvalidInput(f"{p}: unsupported file type (use .txt, .md, .html or a BEIR corpus .jsonl)")
            out.append((p, p.name))
        else:
            raise InvalidInput(f"{p} does not exist")
    return out


def count_documents(files: list[tuple[Path, str]]) -> int:
    n = 0
    for f, _ in files:
        if _is_corpus(f):
            with open(f, encoding="utf-8", errors="replace") as fh:
                n += sum(1 for line in fh if line.strip())
        else:
            n += 1
    return n


def iter_documents(files: list[tuple[Path, str]]) -> Iterator[dict[str, Any]]:
    """Engine documents (``id``, ``text``, ``title``, ``metadata``). A file that cannot be read
    yields a document with an ``error`` the caller reports."""
    from common.beir import iter_corpus
    from engine import extract_text

    for f, doc_id in files:
        if _is_corpus(f):
            bad: list[tuple[int, InvalidInput]] = []
            for doc_id, record in iter_corpus(f, on_error=lambda lineno, exc, into=bad: into.append((lineno, exc))):
                yield from _bad_lines(f, bad)
                yield {"id": doc_id, **record}
            yield from _bad_lines(f, bad)
            continue
        try:
            ext = extract_text(f.name, f.read_bytes())
        except (InvalidInput, OSError) as exc:
            yield {"id": doc_id, "error": str(exc)}
            continue
        yield {"id": doc_id, "title": ext.title, "text": ext.text, "metadata": {"source": str(f), "format": ext.kind}}


def _bad_lines(f: Path, bad: list[tuple[int, InvalidInput]]) -> Iterator[dict[str, Any]]:
    """Error documents for the corpus lines reported so far (emptying ``bad``)."""
    while bad:
        lineno, exc = bad.pop(0)
        yield {"id": f"{f.name}:{lineno}", "error": f"bad corpus line: {exc}"}


def ray_options(args: argparse.Namespace, default_address: str | None) -> Any:
    """The ``RayOptions`` of ``--ray``, ``--actors`` and ``--ray-batch-size`` (None without
    ``--ray``); ``--ray`` without an address joins ``default_address`` (``ATTEND_RAY_ADDRESS``).
    InvalidInput when Ray is not installed."""
    if args.ray is None:
        if args.actors is not None or args.ray_batch_size is not None:
            raise InvalidInput("--actors and --ray-batch-size need --ray")
        return None
    from engine.distributed.cluster import import_ray
    from engine.distributed.ingest import RayOptions

    import_ray()
    given = {"actors": args.actors, "batch_size": args.ray_batch_size}
    return RayOptions(address=args.ray or default_address, write_batch_size=args.batch_size,
                      **{k: v for k, v in given.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from common.errors import NotFound
    from common.settings import get_settings
    from engine import engine_session

    settings = get_settings()
    ray = ray_options(args, settings.ray_address)
    files = collect_files(args.paths)
    total = count_documents(files)
    counts: dict[str, int] = {}
    failures: list[tuple[str, str]] = []
    with engine_session(settings) as engine:
        try:
            engine.get_collection(args.collection)
        except NotFound:
            if not args.create:
                raise
            engine.create_collection(args.collection)
            print(f"created collection {args.collection!r}")
        bar = tqdm(total=total, unit="doc", desc=f"index {args.collection}", disable=args.no_progress)
        group: list[dict[str, Any]] = []

        def flush() -> None:
            good = [d for d in group if "error" not in d]
            for d in group:
                if "error" in d:
                    failures.append((d["id"], d["error"]))
                    counts["failed"] = counts.get("failed", 0) + 1
                    bar.update(1)
            if good:
                if ray is None:
                    report = engine.upsert_documents(args.collection, good, batch_size=args.batch_size, progress=bar.update)
                else:
                    from engine.distributed.ingest import ingest_on_ray

                    report = ingest_on_ray(engine, args.collection, good, ray, progress=bar.update)
                for k, v in report.counts().items():
                    counts[k] = counts.get(k, 0) + v
                failures.extend((o.doc_id, o.error or "failed") for o in report.failed)
                bar.update(len(report.failed))
            group.clear()

        for doc in iter_documents(files):
            group.append(doc)
            if len(group) >= (GROUP if ray is None else RAY_GROUP):
                flush()
        flush()
        bar.close()
    print(f"{args.collection}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if counts else "nothing to index")
    for doc_id, reason in failures[:20]:
        print(f"  failed {doc_id}: {reason}")
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more failures")
    return 1 if failures and len(failures) == sum(counts.values()) else 0
