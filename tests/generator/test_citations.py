"""Reading generated answers: sentences, citation markers, refusals, overlap support."""

from __future__ import annotations

import pytest

from generator.citations import (
    REFUSAL,
    best_quote,
    citation_numbers,
    clean_answer,
    contains_answer,
    is_refusal,
    numbers_supported,
    overlap_support,
    split_sentences,
    strip_citations,
)


def test_citation_numbers_forms_and_order():
    assert citation_numbers("A [2]. B [1, 3] and [Source 2][4].") == [2, 1, 3, 4]
    assert citation_numbers("no markers here, just [a] and [ ]") == []


def test_strip_citations_leaves_clean_text():
    assert strip_citations("Paris is the capital [1].") == "Paris is the capital."
    assert strip_citations("It is 3.5 m [1][2] tall , really [3]") == "It is 3.5 m tall, really"


def test_split_sentences_moves_trailing_markers_to_their_sentence():
    answer = "Paris is the capital. [1] It has 2.1 million people [2]. Berlin is bigger [1, 3]."
    got = split_sentences(answer)
    assert [s.text for s in got] == ["Paris is the capital.", "It has 2.1 million people.", "Berlin is bigger."]
    assert [s.sources for s in got] == [(1,), (2,), (1, 3)]
    for s in got:
        assert answer[s.start:s.end].strip() == s.raw


def test_split_sentences_attaches_a_lone_marker_to_the_sentence_before():
    got = split_sentences("It was built in 1889. [2].")
    assert len(got) == 1 and got[0].sources == (2,)
    assert split_sentences("[2].") == []  # markers only: nothing is asserted


@pytest.mark.parametrize("text,expected", [
    (REFUSAL, True),
    ("i cannot answer this from the provided documents", True),
    ("I cannot answer this from the provided documents. [1]", True),
    ("I cannot say for sure, but Paris.", False),
    ("Paris [1].", False),
])
def test_is_refusal(text, expected):
    assert is_refusal(text) is expected


def test_clean_answer_drops_the_framing_only():
    assert clean_answer("The answer to this question is: the Eiffel Tower [1].") == "The Eiffel Tower [1]."
    assert clean_answer("  The answer is:") == ""
    assert clean_answer("Answers vary.") == "Answers vary."


def test_overlap_support_counts_only_what_the_sentence_adds():
    chunk = "The Eiffel Tower in Paris was completed in 1889 by Gustave Eiffel's company."
    q = "When was the Eiffel Tower completed?"
    assert overlap_support("The Eiffel Tower was completed in 1889.", chunk, q) == 1.0
    assert overlap_support("The Eiffel Tower was completed in 1925 in Lyon.", chunk, q) == 0.0
    assert overlap_support("The Eiffel Tower was completed.", chunk, q) == 0.0  # adds nothing
    half = overlap_support("It was completed in 1889 in Lyon.", chunk, q)
    assert half == pytest.approx(0.5)


def test_contains_answer_and_best_quote():
    assert contains_answer("It opened in 1889.", "1889")
    assert not contains_answer("It opened in 1890.", "1889")
    assert contains_answer("Gustave Eiffel's company built it", "by Gustave Eiffel's company")
    chunk = "Mount Fuji is tall. The Eiffel Tower was completed in 1889. Berlin is big."
    a, b = best_quote("The tower was completed in 1889.", chunk)
    assert chunk[a:b] == "The Eiffel Tower was completed in 1889."


def test_numbers_must_be_exact():
    chunk = "Gutenberg built a press in Mainz around 1440 and printed 180 copies of 1,282 pages."
    assert numbers_supported("He built it around 1440 [1].", chunk)
    assert not numbers_supported("He built it around 1450 [1].", chunk)
    assert numbers_supported("Each copy had 1,282 pages.", chunk)
    assert numbers_supported("It was in 2020.", chunk, question="What happened in 2020?")
