"""A thin, typed wrapper over the ``tokenizers`` library shared by the encoder, the chunker and the
generator: one way to turn text into ids with character offsets into the original string.

Loads ``tokenizer.json`` when a checkpoint has one, else builds a BERT WordPiece tokenizer from
``vocab.txt``. Truncation and padding baked into a ``tokenizer.json`` are switched off: callers say
how long a sequence may be, and batching code pads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from common.errors import CheckpointError


@dataclass(frozen=True)
class Encoded:
    """Token ids of one text and, per token, the ``(start, end)`` character span it came from
    (``(0, 0)`` for special tokens)."""

    ids: list[int]
    offsets: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.ids)


class Tokenizer:
    """Text to ids with offsets. ``max_length`` counts special tokens."""

    def __init__(self, backend: _HFTokenizer, *, lowercase: bool | None = None) -> None:
        backend.no_truncation()
        backend.no_padding()
        self._tok = backend
        self.lowercase = lowercase
        vocab = backend.get_vocab()
        self.vocab_size = backend.get_vocab_size()
        self.pad_id = self._first_id(vocab, "[PAD]", "<pad>", "<|endoftext|>", default=0)
        self.cls_id = self._first_id(vocab, "[CLS]", "<s>", "<|begin_of_text|>", default=None)
        self.sep_id = self._first_id(vocab, "[SEP]", "</s>", "<|end_of_text|>", default=None)
        self.unk_id = self._first_id(vocab, "[UNK]", "<unk>", default=None)
        # Number of special tokens added around a single sequence (e.g. [CLS] ... [SEP] -> 2).
        self.num_special = backend.post_processor.num_special_tokens_to_add(False) if backend.post_processor else 0

    @staticmethod
    def _first_id(vocab: dict[str, int], *names: str, default: int | None) -> int | None:
        for name in names:
            if name in vocab:
                return vocab[name]
        return default

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load from a checkpoint directory (``tokenizer.json``, else BERT ``vocab.txt``)."""
        path = Path(path)
        lowercase = None
        cfg = path / "tokenizer_config.json"
        if cfg.is_file():
            lowercase = json.loads(cfg.read_text()).get("do_lower_case")
        if (path / "tokenizer.json").is_file():
            return cls(_HFTokenizer.from_file(str(path / "tokenizer.json")), lowercase=lowercase)
        if (path / "vocab.txt").is_file():
            return cls.from_vocab(path / "vocab.txt", lowercase=True if lowercase is None else lowercase)
        raise CheckpointError(f"{path} has neither tokenizer.json nor vocab.txt")

    @classmethod
    def from_vocab(cls, vocab_file: str | Path, *, lowercase: bool = True) -> Tokenizer:
        """A BERT WordPiece tokenizer from a ``vocab.txt`` (same behaviour as ``BertTokenizerFast``)."""
        from tokenizers import decoders, normalizers, pre_tokenizers, processors
        from tokenizers.models import WordPiece

        vocab = {}
        for i, line in enumerate(Path(vocab_file).read_text(encoding="utf-8").splitlines()):
            vocab[line.rstrip("\n")] = i
        tok = _HFTokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        tok.decoder = decoders.WordPiece(prefix="##")
        return cls(tok, lowercase=lowercase)

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` into a directory."""
        Path(path).mkdir(parents=True, exist_ok=True)
        self._tok.save(str(Path(path) / "tokenizer.json"))

    def encode(self, text: str, *, max_length: int | None = None, add_special_tokens: bool = True) -> Encoded:
        return self.encode_batch([text], max_length=max_length, add_special_tokens=add_special_tokens)[0]

    def encode_batch(
        self, texts: list[str], *, max_length: int | None = None, add_special_tokens: bool = True
    ) -> list[Encoded]:
        """Encode texts; with ``max_length``, keep the first ``max_length`` tokens including the
        special ones (the last kept special token, e.g. ``[SEP]``, stays at the end)."""
        encs = self._tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        out = []
        for e in encs:
            ids, offs = list(e.ids), [tuple(o) for o in e.offsets]
            if max_length is not None and len(ids) > max_length:
                if add_special_tokens and self.num_special and max_length >= self.num_special:
                    tail = self.num_special - 1  # special tokens after the text ([SEP])
                    keep = max_length - tail
                    ids = ids[:keep] + ids[len(ids) - tail :] if tail else ids[:max_length]
                    offs = offs[:keep] + offs[len(offs) - tail :] if tail else offs[:max_length]
                else:
                    ids, offs = ids[:max_length], offs[:max_length]
            out.append(Encoded(ids=ids, offsets=offs))  # type: ignore[arg-type]
        return out

    def count(self, text: str, *, add_special_tokens: bool = False) -> int:
        """Number of tokens of ``text``."""
        return len(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: list[int], *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self._tok.id_to_token(idx)

    def add_special_tokens(self, tokens: list[str]) -> list[int]:
        """Add special tokens (kept whole, never split) and return their ids."""
        from tokenizers import AddedToken

        self._tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])
        self.vocab_size = self._tok.get_vocab_size()
        return [self._tok.token_to_id(t) for t in tokens]

    @property
    def backend(self) -> _HFTokenizer:
        return self._tok
