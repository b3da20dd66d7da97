"""Metadata filters of a search: validation (``compile_filters``), matching (``matches``) and the
store's query for the chunks of matching documents (``Filters.filter_chunk_ids``).

A filter names top-level fields of a document's metadata: ``{"lang": "en"}`` or
``{"lang": {"$eq": "en"}}`` for equality, ``{"year": [2023, 2024]}`` or
``{"year": {"$in": [2023, 2024]}}`` for membership; every condition must hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from common.errors import InvalidInput
from index.records import check_json
from index.rows import ChunkRow, DocumentRow
from index.store.database import Database, batches


@dataclass(frozen=True)
class FilterCondition:
    """``metadata[key]`` must equal one of ``values``."""

    key: str
    values: tuple[Any, ...]


def compile_filters(filters: Mapping[str, Any] | None) -> list[FilterCondition]:
    """Validate search filters on top-level metadata fields; every condition must hold.

    ``{"lang": "en"}`` or ``{"lang": {"$eq": "en"}}``: equality. ``{"year": [2023, 2024]}`` or
    ``{"year": {"$in": [2023, 2024]}}``: membership. A list-valued metadata field (tags) matches
    when any of its elements does. Booleans never equal numbers (JSON semantics).
    """
    if filters is None:
        return []
    if not isinstance(filters, Mapping):
        raise InvalidInput(f"filters must be an object, got {type(filters).__name__}")
    out = []
    for key, spec in filters.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"filter keys must be non-empty strings, got {key!r}")
        if isinstance(spec, Mapping):
            if len(spec) != 1:
                raise InvalidInput(f"filter on {key!r} must have exactly one operator ($eq or $in)")
            op, operand = next(iter(spec.items()))
            if op == "$eq":
                values: tuple[Any, ...] = (operand,)
            elif op == "$in":
                if not isinstance(operand, (list, tuple)):
                    raise InvalidInput(f"$in on {key!r} needs a list, got {type(operand).__name__}")
                values = tuple(operand)
            else:
                raise InvalidInput(f"unknown filter operator {op!r} on {key!r}: use $eq or $in")
        elif isinstance(spec, (list, tuple)):
            values = tuple(spec)
        else:
            values = (spec,)
        check_json(list(values), f"filter on {key!r}")
        out.append(FilterCondition(key, values))
    return out


def _same(a: Any, b: Any) -> bool:
    """JSON equality: a boolean never equals a number, lists compare element by element."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _value_matches(value: Any, operand: Any) -> bool:
    """Whether a metadata value equals the operand, or, being a list, holds it."""
    if _same(value, operand):
        return True
    return (
        isinstance(value, list)
        and not isinstance(operand, (list, tuple))
        and any(_same(v, operand) for v in value)
    )


def matches(metadata: Mapping[str, Any], conditions: Sequence[FilterCondition]) -> bool:
    """Whether a document's metadata satisfies every condition."""
    for cond in conditions:
        if cond.key not in metadata:
            return False
        value = metadata[cond.key]
        if not any(_value_matches(value, v) for v in cond.values):
            return False
    return True


class Filters(Database):
    """The metadata-filter query of :class:`~index.store.Store`."""

    def filter_chunk_ids(self, collection: str, filters: Mapping[str, Any] | None) -> set[int]:
        """Ids of the chunks whose document metadata matches every filter (see
        :func:`compile_filters`: ``{"lang": "en"}``, ``{"year": {"$in": [2023, 2024]}}``).
        No filters: every chunk of the collection."""
        conditions = compile_filters(filters)
        with self._read() as s:
            cid = self._collection_id(s, collection)
            if not conditions:
                return set(s.scalars(select(ChunkRow.id).where(ChunkRow.collection_id == cid)))
            docs = s.execute(
                select(DocumentRow.id, DocumentRow.meta).where(DocumentRow.collection_id == cid)
            )
            keep = [doc_id for doc_id, meta in docs if matches(meta or {}, conditions)]
            out: set[int] = set()
            for batch in batches(keep):
                out.update(s.scalars(select(ChunkRow.id).where(ChunkRow.document_id.in_(batch))))
            return out
