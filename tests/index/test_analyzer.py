"""The BM25 analyzer: bm25s's pipeline (lowercase, \\w\\w+ split, English stopwords, Snowball)."""

from __future__ import annotations

import json

import pytest
from toydata import TOY_CORPUS, TOY_QUERIES

from index.analyzer import STOPWORDS_EN, Analyzer, resolve_stopwords

TEXTS = [
    "The Café-culture of Paris: running runners ran, naïve 3D x y 42",
    "Θερμοκρασία και πίεση στο ΕΡΓΑΣΤΗΡΙΟ; Straße STRASSE",
    "It is not the cats' fault that the generously generous generators generated nothing!",
    "",
    "a I x",  # nothing survives: one-letter words and stopwords
    *(f"{t} {x}" for t, x in TOY_CORPUS.values()),
    *TOY_QUERIES.values(),
]


def test_default_pipeline():
    a = Analyzer()
    assert a("The Café-culture of Paris: running runners ran, naïve 3D x y 42") == [
        "café", "cultur", "pari", "run", "runner", "ran", "naïv", "3d", "42",
    ]  # fmt: skip
    assert a("") == []
    assert a("a I x") == []


def test_stopwords_are_bm25s_english():
    stopwords = pytest.importorskip("bm25s.stopwords")
    assert STOPWORDS_EN == frozenset(stopwords.STOPWORDS_EN)
    assert resolve_stopwords("en") is STOPWORDS_EN
    assert resolve_stopwords("english") is STOPWORDS_EN


def test_tokens_equal_bm25s_tokenize():
    bm25s = pytest.importorskip("bm25s")
    Stemmer = pytest.importorskip("Stemmer")
    texts = [t for t in TEXTS if Analyzer()(t)]  # bm25s keeps a "" token for empty documents
    ours = Analyzer().analyze_many(texts)
    theirs = bm25s.tokenize(
        texts,
        stopwords="en",
        stemmer=Stemmer.Stemmer("english"),
        return_ids=False,
        show_progress=False,
    )
    assert ours == theirs
    plain = bm25s.tokenize(
        texts, stopwords=None, stemmer=None, return_ids=False, show_progress=False
    )
    assert Analyzer(stopwords=None, stemmer=None).analyze_many(texts) == plain


def test_options():
    text = "The Runners were RUNNING"
    assert Analyzer(stemmer=None)(text) == ["runners", "were", "running"]
    assert Analyzer(stopwords=None)(text) == ["the", "runner", "were", "run"]
    assert Analyzer(stopwords=["were", "THE"], stemmer=None)(text) == ["runners", "running"]
    assert Analyzer(stopwords=None, stemmer=None, lowercase=False)(text) == [
        "The",
        "Runners",
        "were",
        "RUNNING",
    ]
    assert Analyzer(stemmer="french")("les chanteuses chantaient") != [
        "les",
        "chanteuses",
        "chantaient",
    ]


def test_unknown_names_raise_value_error():
    with pytest.raises(ValueError, match="stemmer"):
        Analyzer(stemmer="klingon")
    with pytest.raises(ValueError, match="stopword"):
        Analyzer(stopwords="klingon")


def test_analyze_many_matches_call_and_cache_is_stable():
    a = Analyzer()
    batch = a.analyze_many(TEXTS)
    assert batch == [Analyzer()(t) for t in TEXTS]
    assert batch == [a(t) for t in TEXTS]  # served from the stem cache the second time


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"stopwords": None, "stemmer": None}, {"stopwords": ["foo", "bar"], "lowercase": False}],
)
def test_config_round_trip(kwargs):
    a = Analyzer(**kwargs)
    config = json.loads(json.dumps(a.to_dict()))
    b = Analyzer.from_dict(config)
    assert b.to_dict() == a.to_dict()
    assert [b(t) for t in TEXTS] == [a(t) for t in TEXTS]
