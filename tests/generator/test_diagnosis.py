"""The diagnosis verdicts and the expected chunk's choice, on hand-made chunks."""

from __future__ import annotations

import pytest

from common.errors import InvalidInput
from generator.diagnosis import ChunkDiagnosis, chunk_verdict, pick_expected


def test_chunk_verdicts():
    assert chunk_verdict(False, None, None, None) == "not_retrieved"
    for reason in ("score_floor", "duplicate", "budget"):
        assert chunk_verdict(True, reason, None, None) == "cut"
    assert chunk_verdict(True, None, 0.10, 0.25) == "ignored"
    assert chunk_verdict(True, None, 0.25, 0.25) == "used"
    assert chunk_verdict(True, None, 0.60, 0.25) == "used"
    with pytest.raises(InvalidInput):
        chunk_verdict(True, None, None, 0.2)


def chunk(rank: int, doc: str, text: str, *, share=None, uniform=None, reason=None) -> ChunkDiagnosis:
    in_ctx = reason is None
    return ChunkDiagnosis(
        rank=rank, chunk_id=100 + rank, doc_id=doc, title="", text=text, scores={"fused": 1.0 / rank},
        in_context=in_ctx, context_index=rank if in_ctx else None, cut_reason=reason, truncated=False,
        n_tokens=10 if in_ctx else 0, share=share, uniform_share=uniform, share_by_layer_head=None,
        verdict=chunk_verdict(True, reason, share, uniform),
    )


CHUNKS = [
    chunk(1, "a", "Magma rises through the crust.", share=0.5, uniform=0.3),
    chunk(2, "gold", "The tower was built in Paris.", share=0.05, uniform=0.2),  # gold, no answer, ignored
    chunk(3, "gold", "It opened in 1889 to visitors.", reason="budget"),  # gold with the answer, cut
    chunk(4, "b", "Lava is molten rock; 1889 was a year.", share=0.3, uniform=0.2),
    chunk(5, "c", "Espresso in Paris.", reason="duplicate"),
]


def test_pick_expected_tiers_and_preferences():
    # the expected document's chunk holding the answer wins over its other chunk, even when cut
    exp = pick_expected(CHUNKS, "gold", ["1889"])
    assert exp is not None and exp.rank == 3 and exp.verdict == "cut" and exp.cut_reason == "budget"
    # without the answer, the gold chunk that got furthest: in the context (ignored) beats cut
    exp = pick_expected(CHUNKS, "gold")
    assert exp is not None and exp.rank == 2 and exp.verdict == "ignored"
    # an answer alone matches any document, case-insensitively; in-context chunks first
    exp = pick_expected(CHUNKS, None, ["LAVA IS"])
    assert exp is not None and exp.rank == 4 and exp.verdict == "used"
    exp = pick_expected(CHUNKS, None, ["1889"])
    assert exp is not None and exp.rank == 4  # rank 3 holds it too but was cut
    assert pick_expected(CHUNKS, "missing") is None  # -> not_retrieved
    assert pick_expected(CHUNKS, None, ["glacier"]) is None
    assert pick_expected(CHUNKS, "c").cut_reason == "duplicate"  # type: ignore[union-attr]
    with pytest.raises(InvalidInput):
        pick_expected(CHUNKS, None, [])
