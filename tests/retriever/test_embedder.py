"""``SentenceEncoder`` on the shipped all-MiniLM-L6-v2 weights: parity with sentence-transformers,
order, padding invariance, truncation, precisions."""

from __future__ import annotations

import os

import numpy as np
import pytest

from common.errors import InvalidInput
from retriever.embedder import SentenceEncoder, load_encoder

LONG = " ".join(f"word{i % 97} protein{i % 13} é" for i in range(700))  # ~2,100 words
TEXTS = [
    "Vitamin D deficiency is associated with an increased risk of multiple sclerosis.",
    "0-dimensional biomaterials show inductive properties.",
    "Naïve café crème — 日本語のテキスト, emoji 🧬 and Ελληνικά.",
    "",
    "   leading and trailing spaces   ",
    LONG,
    "short",
    "A " * 300,
]


@pytest.fixture(scope="module")
def ours(minilm_dir) -> SentenceEncoder:
    return SentenceEncoder.from_pretrained(minilm_dir, device="cpu")


@pytest.fixture(scope="module")
def ours_vecs(ours) -> np.ndarray:
    return ours.encode(TEXTS, batch_size=3)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_metadata_from_sentence_transformers_files(ours):
    assert ours.dim == 384
    assert ours.max_length == 256
    assert ours.pooling.mode == "mean" and ours.pooling.normalize
    assert ours.tokenizer.cls_id is not None


def test_parity_with_sentence_transformers(minilm_dir, ours_vecs):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    st_mod = pytest.importorskip("sentence_transformers")
    st = st_mod.SentenceTransformer(str(minilm_dir), device="cpu")
    theirs = st.encode(TEXTS, batch_size=3, convert_to_numpy=True)
    assert ours_vecs.shape == theirs.shape == (len(TEXTS), 384)
    assert ours_vecs.dtype == np.float32
    cos = _cos(ours_vecs, theirs)
    assert cos.min() >= 0.9999, cos


def test_output_is_normalised_by_default_and_raw_on_request(ours, ours_vecs):
    np.testing.assert_allclose(np.linalg.norm(ours_vecs, axis=1), 1.0, atol=1e-5)
    raw = ours.encode(TEXTS[:2], normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), ours_vecs[:2], atol=1e-5)


def test_results_come_back_in_input_order(ours, ours_vecs):
    perm = [5, 2, 7, 0, 3, 6, 1, 4]
    shuffled = ours.encode([TEXTS[i] for i in perm], batch_size=3)
    np.testing.assert_allclose(shuffled, ours_vecs[perm], atol=1e-5)


def test_padding_invariance_alone_vs_batched_with_longer_text(ours):
    short = "Padding must not change an embedding."
    alone = ours.encode([short])
    batched = ours.encode([short, LONG], batch_size=2)
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)


def test_empty_input_gives_empty_array(ours):
    out = ours.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_a_string_instead_of_a_list_is_refused(ours):
    with pytest.raises(InvalidInput):
        ours.encode("not a list")  # type: ignore[arg-type]


def test_long_texts_truncate_at_max_length(ours):
    ids = ours.tokenize([LONG, "short"])
    assert len(ids[0]) == 256 and ids[0][-1] == ours.tokenizer.sep_id
    assert len(ids[1]) == 3
    full = ours.tokenizer.encode_batch([LONG], max_length=256)[0].ids
    assert ids[0] == full  # the prefix shortcut gives the same ids as tokenising everything
    huge = LONG * 30  # ~2 MB of text
    np.testing.assert_allclose(ours.encode([huge]), ours.encode([LONG]), atol=1e-6)


def test_prefix_shortcut_falls_back_when_the_prefix_is_mostly_whitespace(ours):
    text = " " * 10_000 + "tail words here"
    assert ours.tokenize([text])[0] == ours.tokenizer.encode(text, max_length=256).ids


def test_reference_attention_path_matches_sdpa(minilm_dir, ours, ours_vecs):
    slow = SentenceEncoder(ours.model, ours.tokenizer, ours.pooling, ours.max_length, device="cpu", attn_impl="reference")
    assert _cos(slow.encode(TEXTS, batch_size=3), ours_vecs).min() >= 0.99999


def test_bf16_stays_close(minilm_dir, ours, ours_vecs):
    fast = SentenceEncoder(ours.model, ours.tokenizer, ours.pooling, ours.max_length, device="cpu", precision="bf16")
    assert _cos(fast.encode(TEXTS, batch_size=3), ours_vecs).min() >= 0.999


def test_unknown_precision_is_refused(ours):
    with pytest.raises(InvalidInput):
        SentenceEncoder(ours.model, ours.tokenizer, ours.pooling, ours.max_length, device="cpu", precision="fp8")


def test_load_encoder_caches_per_options(minilm_dir):
    a = load_encoder("all-MiniLM-L6-v2", device="cpu")
    assert load_encoder(minilm_dir, device="cpu") is a
    assert load_encoder(minilm_dir, device="cpu", precision="bf16") is not a
