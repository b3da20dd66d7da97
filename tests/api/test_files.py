from __future__ import annotations

import pytest

from common.errors import InvalidInput
from index.extract import extract_text, html_to_text


def test_html_visible_text_only():
    title, text = html_to_text(
        "<!doctype html><html><head><title> My  Page </title><style>.a{}</style></head><body>"
        "<script>alert('x')</script><noscript>enable js</noscript><h1>Head</h1><p>One &lt;two&gt; &amp; three</p>"
        "<ul><li>a</li><li>b</li></ul><p>caf&eacute;<br>next</p></body></html>"
    )
    assert title == "My Page"
    assert text == "Head\n\nOne <two> & three\n\na\n\nb\n\ncafé\nnext"


def test_markdown_and_text_kept_as_is():
    md = extract_text("notes.MD", "\ufeffIntro\n\n## Section *one*\n\nBody **bold**.\n".encode())
    assert md.kind == "markdown" and md.title == "Section *one*" and md.text == "Intro\n\n## Section *one*\n\nBody **bold**."
    txt = extract_text("dir/plain.txt", b"  hello\n")
    assert (txt.title, txt.text, txt.kind) == ("plain", "hello", "text")


@pytest.mark.parametrize("name,data", [("a.pdf", b"%PDF"), ("noext", b"x"), ("a.txt", b"\xff\xfe\x00"), ("a.txt", b"a\x00b")])
def test_bad_files_raise_invalid_input(name, data):
    with pytest.raises(InvalidInput):
        extract_text(name, data)
