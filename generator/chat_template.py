"""``ChatTemplate``: a model's Jinja2 chat template, rendered exactly as Hugging Face renders it.

Chat models ship their prompt format as a Jinja2 template (``tokenizer.chat_template`` in a GGUF
file, ``chat_template`` in ``tokenizer_config.json``, or a ``chat_template.jinja`` file). The
environment here mirrors ``transformers.utils.chat_template_utils``: a sandbox with
``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, a ``tojson`` filter that
does not escape HTML, the ``raise_exception`` and ``strftime_now`` globals, a ``{% generation %}``
block that renders its body, and the variables ``messages``, ``add_generation_prompt``, ``tools``,
``documents`` and the named special tokens (``bos_token``, ``eos_token``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from common.errors import CheckpointError, InvalidInput

Message = Mapping[str, Any]


class _GenerationBlock(Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks in
    transformers; rendering only needs its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def compile_template(source: str) -> jinja2.Template:
    """Compile ``source`` in Hugging Face's chat template environment."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, "jinja2.ext.loopcontrols"],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise CheckpointError(f"chat template does not compile: {exc}") from exc


@dataclass
class ChatTemplate:
    """A compiled chat template. ``special_tokens`` maps ``bos_token``, ``eos_token``, ... to their
    strings, the variables the template may use besides the messages."""

    source: str
    special_tokens: dict[str, str] = field(default_factory=dict)
    _template: jinja2.Template = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise CheckpointError("empty chat template")
        self._template = compile_template(self.source)

    def render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` (``[{"role": "user", "content": "..."}, ...]``); with
        ``add_generation_prompt`` it ends with the header of the assistant's turn."""
        if not messages:
            raise InvalidInput("a chat needs at least one message")
        chat = []
        for m in messages:
            if not isinstance(m, Mapping) or "role" not in m:
                raise InvalidInput(f"a chat message must be a mapping with a 'role', got {m!r}")
            chat.append({k: v for k, v in m.items() if v is not None})  # as transformers drops None
        try:
            return self._template.render(
                messages=chat,
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except jinja2.exceptions.TemplateError as exc:
            raise InvalidInput(f"the chat template rejected the messages: {exc}") from exc

    def mentions(self, text: str) -> bool:
        """Whether ``text`` (a token string such as ``<|im_end|>``) occurs in the template source."""
        return text in self.source
