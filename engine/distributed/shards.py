"""Shards of a collection held in Ray actors: the :class:`~index.shards.ShardSet` that
``index.shards.ShardedCollectionIndex`` scatters to and gathers from across a cluster.

Each actor is an :class:`~index.shards.ShardServer` (its BM25 and FAISS parts); a call goes to
every named shard at once and waits for all of them, so a query costs one round trip per side
(BM25, dense), whatever the shard count. Arrays travel through Ray's object store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.distributed.cluster import connect
from index.shards import ShardServer


class RayShards:
    """One Ray actor per shard. ``actor_options`` are Ray's (``num_cpus``, ``num_gpus``,
    ``resources``, ``scheduling_strategy``...); shard actors default to ``num_cpus=0`` (they wait on
    queries, and must not starve the encoding actors of a shared cluster)."""

    def __init__(self, specs: Sequence[Mapping[str, Any]], *, address: str | None = None,
                 actor_options: Mapping[str, Any] | None = None) -> None:
        self._ray = connect(address)
        options = {"num_cpus": 0, "max_restarts": 0, **(actor_options or {})}
        actor = self._ray.remote(ShardServer).options(**options)
        self.actors = [actor.remote(**spec) for spec in specs]

    def __len__(self) -> int:
        return len(self.actors)

    def call(self, method: str, args: Mapping[int, tuple[Any, ...]]) -> dict[int, Any]:
        refs = {i: getattr(self.actors[i], method).remote(*a) for i, a in args.items()}
        values = self._ray.get(list(refs.values()))
        return dict(zip(refs, values, strict=True))

    def pids(self) -> list[int]:
        """The process id of each shard's actor (to check they are separate processes)."""
        import os

        return self._ray.get([a.__ray_call__.remote(lambda _self: os.getpid()) for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        self.actors.clear()


def ray_shard_factory(address: str | None = None, actor_options: Mapping[str, Any] | None = None):
    """A :data:`~index.shards.ShardFactory` that places each shard in a Ray actor."""

    def make(specs: list[dict[str, Any]]) -> RayShards:
        return RayShards(specs, address=address, actor_options=actor_options)

    return make
