"""Text from uploaded or indexed files: ``.txt`` and ``.md`` as they are (Markdown is kept as
text), ``.html``/``.htm`` with tags, scripts and styles stripped by the standard library's
``html.parser``. Shared by ``POST .../documents/upload`` and ``attend index``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath

from common.errors import InvalidInput

TEXT_SUFFIXES = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
                 ".html": "html", ".htm": "html"}
SUPPORTED = tuple(sorted(TEXT_SUFFIXES))

_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head"}
_BLOCK_TAGS = {
    "p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table", "section",
    "article", "header", "footer", "blockquote", "pre", "hr", "dt", "dd", "figcaption", "main", "nav",
}
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ExtractedText:
    title: str
    text: str
    kind: str  # text, markdown or html


class _HTMLText(HTMLParser):
    """Collects visible text; block elements become line breaks, the <title> is kept apart."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip:
            self.parts.append(data)


def _tidy(text: str) -> str:
    """Collapse runs of spaces inside lines and of blank lines between paragraphs."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    out = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return out.strip()


def html_to_text(html: str) -> tuple[str, str]:
    """``(title, visible text)`` of an HTML document."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return _tidy("".join(parser.title_parts)), _tidy("".join(parser.parts))


def kind_of(filename: str) -> str:
    """``text``, ``markdown`` or ``html`` by suffix; InvalidInput for anything else."""
    suffix = PurePath(filename).suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise InvalidInput(f"unsupported file type {suffix or '(none)'!r} for {filename!r}; supported: {', '.join(SUPPORTED)}")
    return TEXT_SUFFIXES[suffix]


def decode_text(data: bytes, filename: str) -> str:
    """UTF-8 (a BOM is dropped); InvalidInput for other encodings or binary data."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{filename!r} is not valid UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise InvalidInput(f"{filename!r} contains NUL bytes: not a text file")
    return text


def extract_text(filename: str, data: bytes) -> ExtractedText:
    """The title and text of a file's bytes. The title is the HTML ``<title>``, the first Markdown
    heading, or the file's stem."""
    kind = kind_of(filename)
    raw = decode_text(data, filename)
    stem = PurePath(filename).stem
    if kind == "html":
        title, text = html_to_text(raw)
        return ExtractedText(title or stem, text, kind)
    if kind == "markdown":
        m = _MD_HEADING.search(raw)
        return ExtractedText(m.group(1) if m else stem, raw.strip(), kind)
    return ExtractedText(stem, raw.strip(), kind)
