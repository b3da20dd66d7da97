from __future__ import annotations

import time
from itertools import pairwise

import pytest

from common.errors import InvalidInput
from index.chunking import Chunk, Chunker
from retriever.tokenizer import Tokenizer

PROSE = (
    "Retrieval-augmented generation grounds a language model in documents. "
    "A retriever finds passages that are relevant to the question! "
    "Does the generator then cite them? It should, because citations let readers check the answer. "
    "Chunking splits long documents into passages small enough for the encoder; overlapping chunks keep "
    "sentences that straddle a boundary retrievable from either side.\n\n"
    "A second paragraph talks about indexes without ending in punctuation\n\n"
    "BM25 scores exact term matches while dense vectors capture paraphrases. "
    "Fusing both rankings usually beats either one alone. "
    "Unbelievably, hyperparameterisation of antidisestablishmentarianism remains rare."
)


@pytest.fixture(scope="module")
def tok(minilm_dir) -> Tokenizer:
    return Tokenizer.from_dir(minilm_dir)


def _spans_exact(text: str, chunks: list[Chunk]) -> None:
    for i, c in enumerate(chunks):
        assert c.ordinal == i
        assert 0 <= c.char_start < c.char_end <= len(text)
        assert c.text == text[c.char_start : c.char_end]


def test_spans_are_exact_slices_and_ordered(tok):
    chunks = Chunker(tok, max_tokens=24, overlap=6).chunk(PROSE)
    assert len(chunks) > 3
    _spans_exact(PROSE, chunks)
    assert [c.char_start for c in chunks] == sorted(c.char_start for c in chunks)
    assert chunks[0].char_start == 0
    assert chunks[-1].char_end == len(PROSE)


def test_every_token_covered_and_counts_bounded(tok):
    max_tokens = 20
    chunks = Chunker(tok, max_tokens=max_tokens, overlap=5).chunk(PROSE)
    enc = tok.encode(PROSE, add_special_tokens=False)
    for s, e in enc.offsets:
        assert any(c.char_start <= s and e <= c.char_end for c in chunks), PROSE[s:e]
    for c in chunks:
        assert 1 <= c.token_count <= max_tokens
        # Cuts fall on word boundaries here, so re-tokenizing a chunk gives the same count.
        assert tok.count(c.text) == c.token_count


def test_overlap_present(tok):
    text = " ".join(f"word{i} alpha beta gamma" for i in range(60))  # no sentence ends at all
    chunks = Chunker(tok, max_tokens=32, overlap=8).chunk(text)
    assert len(chunks) > 3
    _spans_exact(text, chunks)
    for a, b in pairwise(chunks):
        assert b.char_start < a.char_end, "consecutive chunks must overlap"
        overlap_tokens = tok.count(text[b.char_start : a.char_end])
        assert 4 <= overlap_tokens <= 8


def test_zero_overlap_tiles_text(tok):
    chunks = Chunker(tok, max_tokens=16, overlap=0).chunk(PROSE)
    for a, b in pairwise(chunks):
        assert a.char_end <= b.char_start
        assert PROSE[a.char_end : b.char_start].strip() == ""
    assert sum(c.token_count for c in chunks) == tok.count(PROSE)


def test_prefers_sentence_boundaries(tok):
    # Sentences of 8 tokens: a 20-token window holds two whole sentences and part of a third.
    sentences = [f"Sentence number {i} talks about topic {i}." for i in range(12)]
    text = " ".join(sentences)
    chunks = Chunker(tok, max_tokens=20, overlap=10).chunk(text)
    assert len(chunks) > 2
    for c in chunks:
        assert c.text.endswith("."), c.text  # ends at the last sentence end in the window
        assert c.text.startswith("Sentence number"), c.text  # start snapped forward to a sentence
        assert c.token_count == 16
    # Consecutive chunks share exactly one sentence (overlap 10 snapped forward to 8 tokens).
    for a, b in pairwise(chunks):
        assert text[b.char_start : a.char_end] == a.text.split(". ")[-1]
    # Without sentence ends the same window cuts at the token limit instead.
    flat = text.replace(".", "")
    flat_chunks = Chunker(tok, max_tokens=20, overlap=4).chunk(flat)
    assert flat_chunks[0].token_count == 20


def test_hard_cut_on_token_boundary_when_no_word_boundary(tok):
    text = "-".join(
        ["alpha", "beta", "gamma"] * 20
    )  # no whitespace: no word boundary to back off to
    chunks = Chunker(tok, max_tokens=16, overlap=4).chunk(text)
    _spans_exact(text, chunks)
    assert all(c.token_count <= 16 for c in chunks)
    assert chunks[0].token_count == 16
    assert chunks[-1].char_end == len(text)


def test_unicode_offsets(tok):
    text = "Café crème brûlée. Naïve résumé. " * 6 + "Ünïcödé ënding — ok. 東京は大きい。"
    chunks = Chunker(tok, max_tokens=16, overlap=4).chunk(text)
    _spans_exact(text, chunks)
    assert chunks[0].text.startswith("Café crème brûlée.")  # original case and accents kept
    assert "東京" in chunks[-1].text
    joined = "".join(c.text for c in chunks)
    assert "brûlée" in joined and "résumé" in joined


def test_short_text_single_chunk(tok):
    text = "  Café crème brûlée.  "
    chunks = Chunker(tok).chunk(text)
    assert chunks == [Chunk(0, "Café crème brûlée.", 2, 20, tok.count("Café crème brûlée."))]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t "])
def test_empty_text(tok, text):
    assert Chunker(tok).chunk(text) == []


@pytest.mark.parametrize(
    ("max_tokens", "overlap"), [(15, 0), (0, 0), (16, 16), (32, -1), (32, 40), (32.0, 4)]
)
def test_invalid_config(tok, max_tokens, overlap):
    with pytest.raises(InvalidInput):
        Chunker(tok, max_tokens=max_tokens, overlap=overlap)


def test_non_string_rejected(tok):
    with pytest.raises(InvalidInput):
        Chunker(tok).chunk(None)  # type: ignore[arg-type]


def test_chunk_batch_matches_chunk(tok):
    chunker = Chunker(tok, max_tokens=24, overlap=6)
    texts = [PROSE, "", "Short one.", PROSE[100:]]
    assert chunker.chunk_batch(texts) == [chunker.chunk(t) for t in texts]


def test_long_text_is_linear(tok):
    text = ("The quick brown fox jumps over the lazy dog. Then it naps!\n\n" * 17000)[:1_000_000]
    chunker = Chunker(tok, max_tokens=200, overlap=40)
    t0 = time.perf_counter()
    chunks = chunker.chunk(text)
    elapsed = time.perf_counter() - t0
    assert len(text) == 1_000_000
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(text.rstrip())
    assert all(c.token_count <= 200 for c in chunks)
    for c in chunks[:: max(1, len(chunks) // 50)]:
        assert c.text == text[c.char_start : c.char_end]
    # Generous bound: tokenizing is ~1 s; quadratic work on 1M chars would take minutes.
    assert elapsed < 30, elapsed


def test_split_sentences_cuts_where_the_chunker_prefers_to():
    from index.chunking import split_sentences

    text = 'Lava is hot. "Is it?" he asked!  Yes (mostly.) And the rest'
    assert split_sentences(text) == ["Lava is hot.", '"Is it?"', "he asked!", "Yes (mostly.)", "And the rest"]
    assert split_sentences("  ") == [] and split_sentences("3.5 units") == ["3.5 units"]
