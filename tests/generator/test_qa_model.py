"""The grounded QA model: example construction, the parallel-context mask, cached decoding,
training steps, export and reload."""

from __future__ import annotations

import json

import pytest
import torch

from generator.config import DecoderConfig
from generator.model import Decoder
from generator.prompt import ContextChunk, PromptBuilder
from generator.qa_data import (
    ABSTAIN_CLASS,
    END_CLASS,
    POINTER_OFFSET,
    QAExampleSource,
    QAItem,
    QAMix,
    make_example,
    remove_answer_sentences,
)
from generator.qa_model import GroundedQA, QAConfig, collate, parallel_context_mask, qa_loss
from retriever.tokenizer import Tokenizer

PARA = "The Eiffel Tower was completed in 1889. It was designed by the company of Gustave Eiffel. It is in Paris."
OTHER = "Mount Everest is the highest mountain on Earth. Its summit is 8,849 metres above sea level."


@pytest.fixture(scope="module")
def builder(minilm_dir):
    return PromptBuilder(Tokenizer.from_dir(minilm_dir))


def _item(question="When was the Eiffel Tower completed?", answer="1889"):
    return QAItem("q1", question, PARA, (answer,), (PARA.index(answer),), "Eiffel")


def _tiny(builder, seed=0) -> GroundedQA:
    torch.manual_seed(seed)
    cfg = DecoderConfig(
        vocab_size=builder.tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2, intermediate_size=64,
        max_seq_len=512, norm="layer", norm_placement="post", mlp="gelu", activation="gelu",
        positions="learned", qkv_bias=True, out_bias=True, mlp_bias=True, final_norm=False,
        tie_word_embeddings=True,
    )
    return GroundedQA(Decoder(cfg), QAConfig(pointer_dim=16, max_answer_tokens=8))


def test_example_targets_copy_the_answer_tokens(builder):
    item = _item(answer="Gustave Eiffel")
    chunks = [ContextChunk(1, OTHER), ContextChunk(0, PARA)]
    ex = make_example(builder, item, chunks, 1, "multi", max_len=512, max_answer_tokens=30)
    assert ex.gold_chunk == 1
    positions = [t - POINTER_OFFSET for t in ex.targets[:-1]]
    assert ex.targets[-1] == END_CLASS
    # the copied prompt tokens decode to the answer, and the answer inputs are [ANS] + those tokens
    assert builder.tokenizer.decode([ex.input_ids[p] for p in positions]) == "gustave eiffel"
    assert ex.input_ids[ex.prefix_len] == builder.answer_id
    assert ex.input_ids[ex.prefix_len + 1 :] == [ex.input_ids[p] for p in positions]
    assert all(ex.pointer_mask[p] for p in positions)
    assert len(ex.position_ids) == len(ex.input_ids)


def test_abstention_examples_and_removed_sentences(builder):
    item = _item()
    ex = make_example(builder, item, [ContextChunk(0, OTHER)], -1, "neg_other", 512, 30)
    assert ex.targets == [ABSTAIN_CLASS] and ex.gold_chunk == -1
    removed = remove_answer_sentences(PARA, ["1889"])
    assert removed is not None and "1889" not in removed and "Gustave" in removed
    assert remove_answer_sentences("One sentence with 1889 only.", ["1889"]) is None


def test_source_mixes_kinds_and_never_leaks_the_answer_into_negatives(builder):
    items = [_item(), QAItem("q2", "How high is Everest?", OTHER, ("8,849 metres",), (OTHER.index("8,849"),), "Everest")]
    src = QAExampleSource(builder, items, lambda it, n: [OTHER, PARA], QAMix(), seed=1)
    it = iter(src)
    kinds = set()
    for _ in range(60):
        ex = next(it)
        kinds.add(ex.kind)
        if ex.kind.startswith("neg"):
            assert ex.targets == [ABSTAIN_CLASS]
            text = builder.tokenizer.decode(ex.input_ids[: ex.prefix_len])
            q = builder.tokenizer.decode(ex.input_ids[1 : ex.input_ids.index(builder.sep_id)])
            answer = "1889" if "eiffel" in q else "8, 849"
            assert answer not in text.replace(q, "")
    assert {"gold", "multi"} <= kinds and kinds & {"neg_removed", "neg_other", "neg_multi"}


def test_parallel_context_mask(builder):
    p = builder.build("q?", [ContextChunk(0, "alpha beta"), ContextChunk(1, "gamma delta")])
    n = len(p)
    block = torch.tensor([p.block])
    valid = torch.ones(1, n + 2, dtype=torch.bool)
    m = parallel_context_mask(block, torch.tensor([n]), valid)[0, 0]  # (T, T)
    q_end = p.question_tokens
    (s0, e0), (s1, e1) = p.chunk_spans
    assert m[s0, 0] and m[s0, s0] and not m[s0, s1]  # chunk 0 sees the question, itself, not chunk 1
    assert not m[0, s0]  # the question does not see chunks
    assert m[q_end - 1, 0]
    assert m[n, : n + 1].all() and not m[n, n + 1]  # answer token: causal over everything
    # chunk 1 restarts positions right after the question
    assert p.position_ids[s1 - 1] == p.position_ids[s0 - 1] == q_end


def test_chunk_encoding_does_not_depend_on_other_chunks(builder):
    model = _tiny(builder).eval()
    one = builder.build("When?", [ContextChunk(0, PARA)])
    two = builder.build("When?", [ContextChunk(0, PARA), ContextChunk(1, OTHER)])

    def hidden(p):
        ids = torch.tensor([p.input_ids])
        mask = parallel_context_mask(torch.tensor([p.block]), torch.tensor([len(p)]), torch.ones_like(ids, dtype=torch.bool))
        out = model.decoder(ids, position_ids=torch.tensor([p.position_ids]), attn_mask=mask, output_hidden=True, compute_logits=False)
        return out.hidden[0]

    s, e = one.chunk_spans[0]
    torch.testing.assert_close(hidden(one)[s:e], hidden(two)[s:e], atol=1e-5, rtol=1e-5)


def test_cached_answer_equals_teacher_forced_scores(builder):
    """The classes the cached decoder picks are the argmax of the full (uncached) pass."""
    model = _tiny(builder, seed=3).eval()
    model.config.abstain_threshold = 1.1  # never abstain, so the span decoding runs
    p = builder.build("Who designed it?", [ContextChunk(0, PARA), ContextChunk(1, OTHER)])
    ans = model.read(p, builder.answer_id)
    assert not ans.abstained
    chunk = p.chunks[ans.chunk_index]
    assert chunk.text[ans.char_start : ans.char_end] == ans.text
    # recompute every step without the cache
    start, end = ans.token_span
    ids = p.input_ids + list(ans.answer_ids)
    positions = p.position_ids + [p.answer_start_position + i for i in range(len(ans.answer_ids))]
    batch = {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "position_ids": torch.tensor([positions]),
        "block": torch.tensor([p.block]),
        "prefix_len": torch.tensor([len(p)]),
        "pointer_mask": torch.tensor([[c >= 0 for c in p.token_chunk]]),
        "answer_pos": torch.arange(len(p), len(ids))[None],
    }
    with torch.no_grad():
        logits = model(**batch)[0]  # (A, 2 + P)
    first = logits[0].clone()
    first[END_CLASS] = -1e9
    assert int(first[POINTER_OFFSET:].argmax()) == start
    for i, pos in enumerate(range(start + 1, end + 1), start=1):
        assert logits[i, POINTER_OFFSET + pos] > logits[i, END_CLASS]


def test_training_steps_reduce_the_loss(builder):
    model = _tiny(builder, seed=1).train()
    exs = [
        make_example(builder, _item(), [ContextChunk(0, PARA)], 0, "gold", 512, 30),
        make_example(builder, _item(), [ContextChunk(0, OTHER)], -1, "neg_other", 512, 30),
    ]
    batch = collate(exs)
    targets = batch.pop("targets")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = qa_loss(model(**batch), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_save_load_extend_and_answer(builder, tmp_path):
    model = _tiny(builder, seed=2).eval()
    model.extend_context(1024)
    assert model.decoder.config.max_seq_len == 1024 and model.decoder.pos_embeddings.weight.shape[0] == 1024
    model.save(tmp_path / "m", builder.tokenizer, half=False)
    loaded, b2 = GroundedQA.load(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["format"] == "attend-grounded-qa"
    p = builder.build("When was it completed?", [ContextChunk(0, PARA)])
    a, b = model.read(p, builder.answer_id), loaded.read(p, b2.answer_id)
    assert (a.abstained, a.token_span, a.text) == (b.abstained, b.token_span, b.text)


def test_train_command_runs_and_resumes(tmp_path, minilm_dir):
    """Two training steps on a toy SQuAD file, resumed for one more, then exported."""
    from eval.squad import squad_scores
    from generator.train_qa import TrainConfig, export_checkpoint, train

    data = {"version": "1.1", "data": [
        {"title": f"T{a}", "paragraphs": [{"context": PARA, "qas": [
            {"id": f"{a}-1", "question": "When was the Eiffel Tower completed?", "answers": [{"text": "1889", "answer_start": PARA.index("1889")}]},
            {"id": f"{a}-2", "question": "Who designed it?", "answers": [{"text": "Gustave Eiffel", "answer_start": PARA.index("Gustave")}]},
        ]}, {"context": OTHER, "qas": [
            {"id": f"{a}-3", "question": "How high is Everest?", "answers": [{"text": "8,849 metres", "answer_start": OTHER.index("8,849")}]},
        ]}]} for a in range(6)]}
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(data))
    cfg = TrainConfig(data=str(path), out=str(tmp_path / "run"), base=str(minilm_dir), steps=2, batch_tokens=600,
                      max_batch=4, eval_every=2, eval_examples=2, save_every=1, val_fraction=0.3, context_len=1024)
    model_dir = train(cfg, score_answers=squad_scores)
    assert (model_dir / "model.safetensors").is_file()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["step"] for r in history] == [2] and {"seen", "loss", "minutes", "em", "f1"} <= set(history[0])
    # resumed with mined rule-made negatives, on an explicit device
    cfg.steps, cfg.mine_negatives, cfg.device = 3, 3, "cpu"
    cfg.mix = {"gold": 1.0, "neg_negation": 1.0, "neg_swap": 1.0, "neg_condition": 1.0}
    train(cfg)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 3
    out = export_checkpoint(tmp_path / "run", tmp_path / "export", context_len=1024)
    model, _ = GroundedQA.load(out)
    assert model.decoder.config.max_seq_len == 1024
