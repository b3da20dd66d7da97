"""The one way the server, the CLI and the benchmarks make an ``Engine``: from ``Settings``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from common.settings import Settings
from engine.engine import Engine


def build_engine(settings: Settings) -> Engine:
    """An (unopened) engine over the store and data directory of ``settings``; it owns the store
    (``Engine.close`` closes it)."""
    from index.store import Store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Engine(
        Store(settings.resolved_database_url),
        data_dir=settings.data_dir,
        encoder=settings.encoder,
        device=settings.device,
        encoder_precision=settings.encoder_precision,
        generator=settings.generator or None,
        generative=settings.generative,
        generator_quant=settings.generator_quant,
        reranker=settings.reranker or None,
        shard_backend=settings.shard_backend,
        ray_address=settings.ray_address or None,
    )


@contextmanager
def engine_session(settings: Settings) -> Iterator[Engine]:
    """An engine for one command or benchmark: indexes load lazily per collection, and are saved
    (and the store closed) on exit."""
    engine = build_engine(settings)
    try:
        yield engine
    finally:
        engine.close()
