"""Attention diagnostics: the verdict logic and the share arithmetic on hand-made inputs, the
one-pass attention against the cached decode it explains, and the HTTP route on a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from toydata import TOY_DOCS, add_toy, build_tiny_qa, make_settings

from common.errors import InvalidInput
from eval.diagnose import (
    ChunkDiagnosis,
    DiagnosedQuestion,
    answer_attention,
    chunk_shares,
    chunk_verdict,
    failure_kind,
    pick_expected,
    prompt_attention,
    summarize_diagnoses,
    token_shares,
    uniform_shares,
)

# --- verdicts ---------------------------------------------------------------------------------------


def test_chunk_verdicts():
    assert chunk_verdict(False, None, None, None) == "not_retrieved"
    for reason in ("score_floor", "duplicate", "budget"):
        assert chunk_verdict(True, reason, None, None) == "cut"
    assert chunk_verdict(True, None, 0.10, 0.25) == "ignored"
    assert chunk_verdict(True, None, 0.25, 0.25) == "used"
    assert chunk_verdict(True, None, 0.60, 0.25) == "used"
    with pytest.raises(InvalidInput):
        chunk_verdict(True, None, None, 0.2)
    assert [failure_kind(v) for v in ("not_retrieved", "cut", "ignored", "used")] == [
        "not_retrieved", "cut", "ignored", "used_but_wrong"]
    with pytest.raises(InvalidInput):
        failure_kind("lost")


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


def test_summarize_diagnoses_by_hand():
    def q(qid, f1, verdict, reason=None, n=3, top_a=None, top_r=None):
        return DiagnosedQuestion(qid, f1, f1 == 0.0, verdict, reason, n, top_a, top_r, top_a)

    records = [
        q("w1", 0.0, "not_retrieved", n=2), q("w2", 0.2, "cut", "budget"), q("w3", 0.4, "cut", "score_floor"),
        q("w4", 0.0, "ignored", top_a=False, top_r=True), q("w5", 0.1, "used", top_a=True, top_r=True),
        q("c1", 1.0, "used", top_a=True, top_r=False), q("c2", 0.5, "ignored", top_a=False, top_r=True),
        q("c3", 0.8, "used", n=1, top_a=True, top_r=True),  # one chunk in context: not counted
        q("c4", 1.0, "cut", "budget"),  # correct without the gold chunk: not counted
    ]
    s = summarize_diagnoses(records)
    assert s["verdicts"] == {"not_retrieved": 1, "cut": 2, "ignored": 1, "used_but_wrong": 1}
    assert s["cut_reasons"] == {"budget": 1, "score_floor": 1}
    assert (s["n"], s["n_wrong"], s["n_correct"], s["n_correct_with_gold"]) == (9, 5, 4, 2)
    assert s["gold_top_attention_rate"] == 0.5 and s["gold_top_retrieval_rate"] == 0.5
    assert summarize_diagnoses([])["gold_top_attention_rate"] is None


# --- shares -----------------------------------------------------------------------------------------


def test_shares_on_a_hand_made_attention_tensor():
    rng = np.random.default_rng(0)
    L, H, A, P = 2, 3, 2, 6  # noqa: N806
    att = rng.random((L, H, A, P + A))  # rows over prompt + answer keys, not normalised
    before = att.copy()
    pa = prompt_attention(att, P)
    assert np.array_equal(att, before)  # input untouched
    assert pa.shape == (L, H, A, P) and np.allclose(pa.sum(-1), 1.0)
    tok = token_shares(pa)
    assert tok.shape == (L, H, P) and np.allclose(tok.sum(-1), 1.0)
    spans = [(1, 3), (4, 6)]
    shares = chunk_shares(tok, spans)
    assert shares.shape == (2, L, H)
    expected = np.stack([(att[..., :P] / att[..., :P].sum(-1, keepdims=True))[..., s:e].sum(-1).mean(-1)
                         for s, e in spans])
    assert np.allclose(shares, expected)
    assert uniform_shares(spans, P) == [2 / 6, 2 / 6]
    # all of the attention on chunk 0's tokens: share 1 there, 0 elsewhere
    peaked = np.zeros((1, 1, 1, P + 1))
    peaked[..., 1] = 3.0
    peaked[..., 2] = 1.0
    peaked[..., P] = 5.0  # mass on an answer key is dropped by the renormalisation
    s = chunk_shares(token_shares(prompt_attention(peaked, P)), spans)
    assert np.allclose(s[:, 0, 0], [1.0, 0.0])
    assert np.allclose(token_shares(prompt_attention(peaked, P))[0, 0, 1:3], [0.75, 0.25])
    assert np.allclose(prompt_attention(np.zeros((1, 1, 1, 4)), 3), 0.0)  # no mass: zeros, not NaN


def sharpen(model) -> None:
    """Scale a random model's embeddings and q/k/v weights so its attention is far from uniform
    (at init, inputs of std 0.02 give near-equal scores)."""
    dec = model.decoder
    with torch.no_grad():
        dec.tok_embeddings.weight.mul_(25.0)
        dec.pos_embeddings.weight.mul_(25.0)
        for layer in dec.layers:
            layer.attention.wqkv.weight.mul_(40.0)


@pytest.fixture(scope="module")
def sharp_model(minilm_dir):
    """A tiny random GroundedQA whose attention is far from uniform (scaled q/k weights)."""
    from generator.config import DecoderConfig
    from generator.model import Decoder
    from generator.prompt import PromptBuilder
    from generator.qa_model import GroundedQA, QAConfig
    from retriever.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(minilm_dir)
    cfg = DecoderConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=2, intermediate_size=64,
                        max_seq_len=512, norm="layer", norm_placement="post", mlp="gelu", activation="gelu",
                        positions="learned", qkv_bias=True, out_bias=True, mlp_bias=True, final_norm=False,
                        tie_word_embeddings=True)
    torch.manual_seed(1)
    model = GroundedQA(Decoder(cfg), QAConfig(pointer_dim=16, max_answer_tokens=6)).eval()
    sharpen(model)
    return model, PromptBuilder(tok)


def test_one_pass_attention_matches_the_cached_decode(sharp_model):
    """The diagnostic pass must see what decoding saw: its answer rows equal the attention of the
    prefill's [ANS] row and of every cached decode step (same mask, same positions)."""
    from generator.prompt import ContextChunk
    from generator.qa_model import parallel_context_mask

    model, builder = sharp_model
    prompt = builder.build("why do volcanoes erupt", [ContextChunk(i, d["text"]) for i, d in enumerate(TOY_DOCS[:4])])
    qa = model.answer(prompt, builder.answer_id, abstain_threshold=1.0)
    assert not qa.abstained and len(qa.answer_ids) >= 2
    ids = list(qa.answer_ids)
    full = answer_attention(model, prompt, ids)  # (L, H, A, P + A)
    p, a = len(prompt.input_ids), len(ids)
    cfg = model.decoder.config
    assert full.shape == (cfg.n_layers, cfg.n_heads, a, p + a)
    assert torch.allclose(full.sum(-1), torch.ones(()), atol=1e-5)
    assert float(full[..., 0, p + 1 :].abs().max()) == 0.0  # causal among answer steps
    assert float(full.max()) > 5.0 / p  # sharp enough for the comparison to mean something

    dec = model.decoder
    dec.setup_caches(1, cfg.max_seq_len)
    a0 = prompt.answer_start_position
    with torch.inference_mode():
        x = torch.tensor([prompt.input_ids + ids[:1]])
        pos = torch.tensor([prompt.position_ids + [a0]])
        mask = parallel_context_mask(torch.tensor([prompt.block]), torch.tensor([p]), torch.ones_like(x, dtype=torch.bool))
        out = dec(x, start_pos=0, position_ids=pos, attn_mask=mask, attn_impl="reference", output_attentions=True,
                  compute_logits=False)
        for layer, w in enumerate(out.attentions):
            assert torch.allclose(w[0, :, -1], full[layer, :, 0, : p + 1], atol=1e-5)
        for step in range(1, a):
            out = dec(torch.tensor([[ids[step]]]), start_pos=p + step, position_ids=torch.tensor([[a0 + step]]),
                      attn_impl="reference", output_attentions=True, compute_logits=False)
            for layer, w in enumerate(out.attentions):
                assert torch.allclose(w[0, :, 0, : p + step + 1], full[layer, :, step, : p + step + 1], atol=1e-5)


# --- the route --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_qa(tmp_path_factory, minilm_dir) -> Path:
    """The API tests' tiny random model with sharpened attention, so shares differ from uniform."""
    from generator.qa_model import GroundedQA
    from retriever.tokenizer import Tokenizer

    path = build_tiny_qa(tmp_path_factory.mktemp("tiny_qa"), minilm_dir)
    model, _ = GroundedQA.load(path)
    sharpen(model)
    return model.save(path, Tokenizer.from_dir(path))


@pytest.fixture
def client(tmp_path, tiny_qa):
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(make_settings(tmp_path / "data", generator=str(tiny_qa), index_save_delay_s=0.2))) as c:
        add_toy(c)
        yield c


D = "/v1/collections/toy/diagnose"


def test_route_reports_every_chunk(client):
    r = client.post(D, json={"question": "why do volcanoes erupt", "k": 5, "budget": 512, "mode": "hybrid",
                             "expected_doc_id": "d3", "abstain_threshold": 1.0, "tokens": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["abstained"] and body["answer"]
    chunks = body["chunks"]
    assert [c["rank"] for c in chunks] == [1, 2, 3, 4, 5]
    kept = [c for c in chunks if c["in_context"]]
    assert len(kept) == 5 and sorted(c["context_index"] for c in kept) == list(range(5))
    texts = {d["id"]: d["text"] for d in TOY_DOCS}
    for c in kept:
        assert c["verdict"] == ("used" if c["share"] >= c["uniform_share"] else "ignored")
        assert len(c["share_by_layer_head"]) == body["n_layers"] and len(c["share_by_layer_head"][0]) == body["n_heads"]
        assert np.isclose(np.mean(c["share_by_layer_head"][-1]), c["share"], atol=1e-3)  # last layer
        assert np.isclose(np.mean(c["share_by_layer_head"]), c["share_all_layers"], atol=1e-3)
        assert "".join(c["tokens"]) == texts[c["doc_id"]] == c["text"]
        assert len(c["token_attention"]) == c["n_tokens"]
        assert np.isclose(sum(c["token_attention"]), c["share"], atol=1e-3)
        assert c["uniform_share"] == pytest.approx(c["n_tokens"] / body["prompt_tokens"], abs=1e-4)
    assert 0.0 < sum(c["share"] for c in kept) <= 1.0 + 1e-6  # the question and markers take the rest
    assert body["answer_steps"] >= 2  # [ANS] + at least one copied token
    (expected,) = [c for c in chunks if c["expected"]]
    assert expected["doc_id"] == "d3" and body["expected_chunk_id"] == expected["chunk_id"]
    assert body["verdict"] == expected["verdict"] in ("used", "ignored") and body["cut_reason"] is None
    (top,) = [c for c in chunks if c["most_attended"]]
    assert top["share"] == max(c["share"] for c in kept) and body["most_attended_chunk_id"] == top["chunk_id"]


def test_route_verdicts_cut_not_retrieved_and_abstention(client):
    # a budget holding one chunk: the others are cut for the budget, and so is an expected one of them
    ask = {"question": "volcano crust mantle plates", "k": 4, "budget": 70, "mode": "bm25"}
    body = client.post(D, json=ask).json()
    assert body["verdict"] is None and sum(c["in_context"] for c in body["chunks"]) == 1
    cut = {c["doc_id"]: c["cut_reason"] for c in body["chunks"] if not c["in_context"]}
    assert len(cut) >= 1 and set(cut.values()) == {"budget"}
    kept_doc = next(c["doc_id"] for c in body["chunks"] if c["in_context"])
    body = client.post(D, json={**ask, "expected_doc_id": next(iter(cut))}).json()
    assert body["verdict"] == "cut" and body["cut_reason"] == "budget"
    body = client.post(D, json={**ask, "expected_doc_id": kept_doc}).json()
    assert body["verdict"] in ("used", "ignored") and body["cut_reason"] is None
    # a score floor above every score: everything cut for the floor, nothing attended
    body = client.post(D, json={"question": "why do volcanoes erupt", "k": 3, "score_floor": 10.0,
                                "expected_answer": "MAGMA"}).json()
    assert body["abstained"] and body["verdict"] == "cut" and body["cut_reason"] == "score_floor"
    assert all(c["share"] is None and c["verdict"] == "cut" for c in body["chunks"])
    assert body["most_attended_chunk_id"] is None and body["answer_steps"] == 0
    # a document outside the top k
    body = client.post(D, json={"question": "why do volcanoes erupt", "k": 1, "mode": "bm25",
                                "expected_doc_id": "d7"}).json()
    assert body["verdict"] == "not_retrieved" and body["expected_chunk_id"] is None
    # an abstention is diagnosed from the [ANS] step alone
    body = client.post(D, json={"question": "why do volcanoes erupt", "k": 3, "abstain_threshold": 0.0}).json()
    assert body["abstained"] and body["answer_steps"] == 1 and body["verdict"] is None
    assert sum(c["most_attended"] for c in body["chunks"]) == 1
    assert all(c["verdict"] in ("used", "ignored") for c in body["chunks"])
    # errors are the API's: unknown collection, unknown field
    assert client.post("/v1/collections/nope/diagnose", json={"question": "x"}).status_code == 404
    assert client.post(D, json={"question": "x", "expected": "d1"}).status_code == 422
