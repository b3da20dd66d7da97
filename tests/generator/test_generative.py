"""Generative grounded answers on a tiny random chat model: the prompt and its maps, the budget,
streaming, citations, the verifier and the unsupported flag."""

from __future__ import annotations

import random

import pytest
import torch

from generator import generative as gen_mod
from generator.answer import AnswerStream
from generator.chat_model import load_chat_model
from generator.chat_prompt import ChatPromptBuilder
from generator.citations import REFUSAL
from generator.context import Candidate
from generator.generate import GenerationStep
from generator.generative import GenerativeAnswerer, Verifier
from generator.prompt import ContextChunk
from generator.qa_model import QAAnswer

TEXTS = [
    "The Eiffel Tower is a lattice tower in Paris. It was completed in 1889 by the company of Gustave Eiffel.",
    "Mount Fuji is the highest mountain in Japan. It last erupted in 1707.",
    "Berlin is the capital of Germany, and Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog, again and again, all day long.",
]


@pytest.fixture(scope="module")
def chat(tiny_chat_gguf):
    return load_chat_model(str(tiny_chat_gguf))


def cands(texts=TEXTS):
    return [Candidate(chunk_id=10 + i, doc_id=f"doc{i}", text=t, score=1.0 / (i + 1), rank=i + 1,
                      char_start=5 * i, char_end=5 * i + len(t)) for i, t in enumerate(texts)]


# --- the prompt ------------------------------------------------------------------------------------


def test_prompt_maps_every_chunk_token_back_to_its_text(chat):
    b = ChatPromptBuilder(chat)
    chunks = [ContextChunk(i, t) for i, t in enumerate(TEXTS)]
    p = b.build("When was the tower completed?", chunks)
    assert p.input_ids == chat.encode(p.text)
    assert p.text.index("[1] ") < p.text.index("[2] ") < p.text.index("Question: When was the tower completed?")
    for ci, (s, e) in enumerate(p.chunk_spans):
        assert e > s and all(p.token_chunk[t] == ci for t in range(s, e))
        pieces = "".join(TEXTS[ci][a:c] for a, c in p.token_chars[s:e])
        assert pieces == TEXTS[ci]
    assert sum(c >= 0 for c in p.token_chunk) == sum(e - s for s, e in p.chunk_spans)


def test_costs_bound_the_built_prompt(chat):
    b = ChatPromptBuilder(chat)
    rng = random.Random(0)
    for _ in range(20):
        texts = rng.sample(TEXTS, rng.randint(1, 4))
        q = rng.choice(["why?", "When was the Eiffel Tower completed, and by whom?", "fox"])
        p = b.build(q, [ContextChunk(i, t) for i, t in enumerate(texts)])
        assert len(p) <= b.question_cost(q) + sum(b.chunk_cost(t) for t in texts)


def test_build_never_exceeds_max_len_and_truncates_at_a_token(chat):
    b = ChatPromptBuilder(chat)
    chunks = [ContextChunk(i, t) for i, t in enumerate(TEXTS)]
    full = len(b.build("fox?", chunks))
    for max_len in range(b.question_cost("fox?"), full + 1, 7):
        p = b.build("fox?", chunks, max_len=max_len)
        assert len(p) <= max_len
        for i in p.truncated_chunks:
            assert TEXTS[i].startswith(p.chunks[i].text) and p.chunks[i].text != TEXTS[i]
    with pytest.raises(Exception, match="cannot hold the question"):
        b.build("fox?", chunks, max_len=b.question_cost("fox?") - 1)


# --- answering end to end on random weights ----------------------------------------------------------


@pytest.mark.parametrize("budget", [300, 360, 480, 1024])
def test_budget_is_never_overrun(chat, budget):
    ga = GenerativeAnswerer(chat, max_new_tokens=12)
    r = ga.answer("When was the Eiffel Tower completed?", cands(), budget=budget)
    assert len(r.prompt.input_ids) == r.context.tokens
    assert r.context.tokens + len(r.answer_ids) <= budget
    assert r.context.tokens + ga.answer_reserve <= budget
    assert [c.chunk_id for c in r.context.kept] == [int(c.chunk_id) for c in r.prompt.chunks]
    assert r.kind == "generative" and r.qa is None


def test_stream_pieces_are_the_generated_text(chat):
    ga = GenerativeAnswerer(chat, max_new_tokens=16, repetition_penalty=1.0)
    stream = ga.start("Where is the tower?", cands(), budget=512)
    assert isinstance(stream, AnswerStream) and stream.result is None
    pieces = list(stream)
    r = stream.result
    assert r is not None and "".join(pieces) == chat.decode(list(r.answer_ids))
    assert r.timings_ms["generated_tokens"] == len(r.answer_ids)


def test_generation_is_greedy_and_matches_the_decoder(chat):
    from generator.generate import generate

    ga = GenerativeAnswerer(chat, max_new_tokens=10, repetition_penalty=1.0)
    r = ga.answer("Where is the tower?", cands(), budget=512)
    ref = generate(chat.decoder, r.prompt.input_ids, max_new_tokens=10, stop_token_ids=chat.stop_ids)
    assert list(r.answer_ids) == ref.tokens[0]


# --- scripted generations: citations, refusal, verifier ----------------------------------------------


def scripted(monkeypatch, chat, text: str) -> None:
    """Make the decoder 'write' ``text``: stream_generate yields its tokens, then a stop."""
    ids = chat.encode(text)

    def fake(model, prompts, **kwargs):
        for t in ids:
            yield GenerationStep(tokens=torch.tensor([t]), emitted=torch.tensor([True]))
        yield GenerationStep(tokens=torch.tensor([chat.stop_ids[0]]), emitted=torch.tensor([False]))

    monkeypatch.setattr(gen_mod, "stream_generate", fake)


def test_model_citations_are_parsed_and_verified_by_overlap(monkeypatch, chat):
    scripted(monkeypatch, chat, "It was completed in 1889 by Gustave Eiffel [1]. Mount Fuji last erupted in 1707 [2].")
    r = GenerativeAnswerer(chat, max_new_tokens=64).answer("When was the Eiffel Tower completed?", cands(), budget=1024)
    assert not r.abstained and not r.unsupported
    assert [s.sources for s in r.sentences] == [[1], [2]]
    assert [s.chunk_ids for s in r.sentences] == [[10], [11]]
    assert all(s.supported and s.support == "overlap" and not s.attributed for s in r.sentences)
    c = r.citations[0]
    assert (c.source, c.chunk_id, c.doc_id) == (1, 10, "doc0")
    assert c.quote == TEXTS[0][c.char_start:c.char_end] and "1889" in c.quote
    assert (c.doc_char_start, c.doc_char_end) == (c.char_start, c.char_end)  # doc0 starts at 0
    assert r.citations[1].doc_char_start == 5 + r.citations[1].char_start


def test_uncited_sentence_is_attributed_by_the_verifier(monkeypatch, chat):
    scripted(monkeypatch, chat, "Mount Fuji last erupted in 1707.")
    r = GenerativeAnswerer(chat, max_new_tokens=64).answer("When did Fuji erupt?", cands(), budget=1024)
    s = r.sentences[0]
    assert s.supported and s.attributed and s.sources == [2]
    assert r.citations[0].attributed and r.citations[0].source == 2


def test_unsupported_answer_is_flagged_and_can_abstain(monkeypatch, chat):
    scripted(monkeypatch, chat, "The tower was painted green in 1925 by Lyon artists [1].")
    ga = GenerativeAnswerer(chat, max_new_tokens=64)
    r = ga.answer("When was the Eiffel Tower completed?", cands(), budget=1024)
    assert r.unsupported and not r.abstained and r.answer
    assert r.citations[0].supported is False and not r.sentences[0].supported
    r2 = ga.answer("When was the Eiffel Tower completed?", cands(), budget=1024, abstain_unsupported=True)
    assert r2.unsupported and r2.abstained and r2.answer is None


def test_invalid_source_numbers_are_ignored(monkeypatch, chat):
    scripted(monkeypatch, chat, "Mount Fuji last erupted in 1707 [9].")
    r = GenerativeAnswerer(chat, max_new_tokens=64).answer("When did Fuji erupt?", cands(), budget=1024)
    assert r.sentences[0].sources == [2] and r.sentences[0].attributed  # [9] does not exist


def test_refusal_is_an_abstention(monkeypatch, chat):
    scripted(monkeypatch, chat, REFUSAL)
    r = GenerativeAnswerer(chat, max_new_tokens=64).answer("Who won in 2030?", cands(), budget=1024)
    assert r.abstained and r.answer is None and r.citations == [] and not r.unsupported


def test_no_context_abstains_without_generating(monkeypatch, chat):
    def boom(*a, **k):
        raise AssertionError("must not generate")

    monkeypatch.setattr(gen_mod, "stream_generate", boom)
    cf = gen_mod.ContextFilter(score_floor=5.0, answer_reserve=16)
    r = GenerativeAnswerer(chat, max_new_tokens=16).answer("fox?", cands(), budget=512, context_filter=cf)
    assert r.abstained and not r.context.kept and len(r.context.cut) == len(TEXTS)


class FakeReader:
    """An extractive reader that extracts ``span`` from chunks containing it, else abstains."""

    def __init__(self, span: str) -> None:
        self.span, self.calls = span, 0

    def read_chunk(self, question, chunk, *, abstain_threshold=None):
        self.calls += 1
        at = chunk.text.find(self.span)
        if at < 0:
            return QAAnswer(abstained=True, abstain_prob=0.9)
        return QAAnswer(abstained=False, char_start=at, char_end=at + len(self.span), text=self.span)


def test_verifier_with_reader_needs_the_span_and_the_claims():
    chunk = ContextChunk(1, TEXTS[0])
    q = "When was the Eiffel Tower completed?"
    v = Verifier(FakeReader("1889"))
    ok = v.check(q, "It was completed in 1889.", chunk)
    assert ok.how == "reader" and TEXTS[0][ok.span[0]:ok.span[1]] == "1889"
    # The reader's span is there, but most of what the sentence adds is invented.
    assert v.check(q, "It was completed on 10 July 1889 for the anniversary of the Lyon fair.", chunk).how is None
    assert v.check(q, "It was completed in 1925.", chunk).how is None
    assert Verifier(FakeReader("Paris")).check(q, "It was completed in Paris in 1890.", chunk).how is None
    cache: dict = {}
    reader = FakeReader("1889")
    v2 = Verifier(reader)
    for _ in range(3):
        v2.check(q, "It was completed in 1889.", chunk, cache=cache)
    assert reader.calls == 1  # one reader pass per chunk and question
