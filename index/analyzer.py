"""Text analysis for the sparse (BM25) index: lowercase, word split, stopwords, Snowball stemming.

The default pipeline is the one bm25s applies (``bm25s.tokenize(texts, stopwords="en",
stemmer=Stemmer.Stemmer("english"))``), so token streams are comparable between the two:

1. lowercase (``str.lower``, unicode-aware);
2. split with the scikit-learn token pattern ``(?u)\\b\\w\\w+\\b`` (words of two or more word
   characters, any script);
3. drop English stopwords, matched on the lowercased, *unstemmed* word (bm25s's ``STOPWORDS_EN``);
4. stem with PyStemmer's Snowball stemmer, caching the stem of every distinct word.

An :class:`Analyzer` is a plain callable ``text -> list[str]``; its configuration round-trips
through :meth:`Analyzer.to_dict` / :meth:`Analyzer.from_dict` so a saved index can rebuild it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from common.errors import MissingDependency

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"

# bm25s.stopwords.STOPWORDS_EN (the list behind stopwords="en" / "english"), itself the Lucene
# English stop set.
STOPWORDS_EN: frozenset[str] = frozenset(
    (
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is",
        "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there",
        "these", "they", "this", "to", "was", "will", "with",
    )
)  # fmt: skip

_STOPWORD_LISTS: dict[str, frozenset[str]] = {"en": STOPWORDS_EN, "english": STOPWORDS_EN}


def resolve_stopwords(stopwords: str | Iterable[str] | None) -> frozenset[str]:
    """Map a stopword setting to a set: a language name (``"en"``/``"english"``), an iterable of
    words, or ``None`` for none. Raises ``ValueError`` on an unknown language name."""
    if stopwords is None:
        return frozenset()
    if isinstance(stopwords, str):
        try:
            return _STOPWORD_LISTS[stopwords.lower()]
        except KeyError:
            raise ValueError(
                f"unknown stopword list {stopwords!r}; choose from {sorted(_STOPWORD_LISTS)}, "
                "pass a list of words, or None"
            ) from None
    return frozenset(w.lower() for w in stopwords)


def _make_stemmer(name: str) -> Any:
    try:
        import Stemmer
    except ImportError as exc:  # pragma: no cover - part of the default install
        raise MissingDependency("PyStemmer", feature="BM25 stemming") from exc
    try:
        return Stemmer.Stemmer(name)
    except KeyError:
        raise ValueError(
            f"unknown stemmer {name!r}; choose from {sorted(Stemmer.algorithms())} or None"
        ) from None


class Analyzer:
    """Turn text into index terms; ``Analyzer()(text) -> list[str]``.

    Args:
        stopwords: ``"en"`` (default, bm25s's English list), another known list name, an
            iterable of words, or ``None`` to keep every word.
        stemmer: a Snowball algorithm name understood by PyStemmer (``"english"``, default) or
            ``None`` for no stemming.
        lowercase: lowercase before splitting (default ``True``).
        token_pattern: the regular expression whose matches are the words.

    Calls are thread-safe; the stem cache only grows (one entry per distinct surviving word).
    """

    def __init__(
        self,
        stopwords: str | Iterable[str] | None = "en",
        stemmer: str | None = "english",
        lowercase: bool = True,
        token_pattern: str = DEFAULT_TOKEN_PATTERN,
    ) -> None:
        self._stopwords_setting: str | list[str] | None = (
            stopwords if stopwords is None or isinstance(stopwords, str) else sorted(set(stopwords))
        )
        self.stopwords = resolve_stopwords(stopwords)
        self.stemmer_name = stemmer
        self.lowercase = lowercase
        self.token_pattern = token_pattern
        self._findall = re.compile(token_pattern).findall
        self._stemmer = _make_stemmer(stemmer) if stemmer is not None else None
        self._stems: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, text: str) -> list[str]:
        """Analyze one text into its terms (in order, repeats kept)."""
        if self.lowercase:
            text = text.lower()
        words = self._findall(text)
        if self.stopwords:
            stop = self.stopwords
            words = [w for w in words if w not in stop]
        if self._stemmer is None:
            return words
        stems = self._stems
        missing = [w for w in words if w not in stems]
        if missing:
            self._stem_into_cache(missing)
        return [stems[w] for w in words]

    def analyze_many(self, texts: Sequence[str]) -> list[list[str]]:
        """Analyze several texts; stems every new distinct word in one stemmer call."""
        if self.lowercase:
            texts = [t.lower() for t in texts]
        split = [self._findall(t) for t in texts]
        if self.stopwords:
            stop = self.stopwords
            split = [[w for w in ws if w not in stop] for ws in split]
        if self._stemmer is None:
            return split
        stems = self._stems
        missing = {w for ws in split for w in ws if w not in stems}
        if missing:
            self._stem_into_cache(list(missing))
        return [[stems[w] for w in ws] for ws in split]

    def _stem_into_cache(self, words: list[str]) -> None:
        # PyStemmer objects keep internal state: one caller at a time.
        with self._lock:
            words = list(dict.fromkeys(words))
            for word, stem in zip(words, self._stemmer.stemWords(words), strict=True):
                self._stems[word] = stem

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable description that :meth:`from_dict` turns back into an analyzer."""
        return {
            "stopwords": self._stopwords_setting,
            "stemmer": self.stemmer_name,
            "lowercase": self.lowercase,
            "token_pattern": self.token_pattern,
        }

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Analyzer:
        """Rebuild an analyzer from :meth:`to_dict` output."""
        return cls(
            stopwords=config.get("stopwords", "en"),
            stemmer=config.get("stemmer", "english"),
            lowercase=config.get("lowercase", True),
            token_pattern=config.get("token_pattern", DEFAULT_TOKEN_PATTERN),
        )

    def __repr__(self) -> str:
        return (
            f"Analyzer(stopwords={self._stopwords_setting!r}, stemmer={self.stemmer_name!r}, "
            f"lowercase={self.lowercase})"
        )
