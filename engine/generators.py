"""Which generator answers: names, aliases, the allowlist a request may choose from, and the
loaded models (each loaded once, on first use)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from common.errors import CheckpointError, InvalidInput, MissingDependency
from engine.protocols import Answerer
from generator.chat_model import is_generative

logger = logging.getLogger(__name__)

EXTRACTIVE = "extractive"  # the extractive generator the engine is configured with (attend-qa)
GENERATIVE = "generative"  # the generative (chat) model the engine is configured with (smollm2)
DEFAULT_EXTRACTIVE = "attend-qa"
DEFAULT_GENERATIVE = "smollm2"


class Generators:
    """The engine's generators. ``default`` answers when nothing else is asked for (None: the
    engine has none, e.g. a retrieval benchmark); ``extractive`` and ``generative`` name the
    configured model of each kind."""

    def __init__(
        self,
        default: str | None = DEFAULT_EXTRACTIVE,
        *,
        generative: str = DEFAULT_GENERATIVE,
        device: str = "auto",
        quantize: str = "auto",
        preloaded: Answerer | None = None,
    ) -> None:
        self.default = default
        self.device = device
        self.quantize = quantize
        default_is_generative = bool(default) and is_generative(default)  # type: ignore[arg-type]
        self.extractive = DEFAULT_EXTRACTIVE if default_is_generative or not default else default
        self.generative = default if default_is_generative else generative
        self._loaded: dict[str, Answerer] = {}
        self._lock = threading.RLock()
        if preloaded is not None:
            self._loaded[default or DEFAULT_EXTRACTIVE] = preloaded

    def choices(self) -> list[str]:
        """The generator names a request or a collection may ask for."""
        names = [EXTRACTIVE, GENERATIVE, DEFAULT_EXTRACTIVE, DEFAULT_GENERATIVE, self.extractive, self.generative]
        if self.default:
            names.append(self.default)
        return list(dict.fromkeys(names))

    def resolve(self, name: str | None) -> str:
        """The model ``name`` stands for: the default when None, the configured model of a kind for
        ``extractive``/``generative``; other names must be among :meth:`choices` (a request cannot
        make the server load an arbitrary path)."""
        if name is None:
            if not self.default:
                raise InvalidInput("no generator is configured")
            return self.default
        if name == EXTRACTIVE:
            return self.extractive
        if name == GENERATIVE:
            return self.generative
        if name not in self.choices():
            raise InvalidInput(f"unknown generator {name!r}; choose one of {self.choices()}")
        return name

    def get(self, name: str | None = None) -> Answerer:
        """The generator ``name`` (see :meth:`resolve`), loaded on first use: an extractive
        ``Answerer`` or a ``GenerativeAnswerer`` whose verifier reads with the extractive model."""
        key = self.resolve(name)
        found = self._loaded.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._loaded.get(key)
            if found is None:
                device = None if self.device == "auto" else self.device
                if is_generative(key):
                    from generator.generative import GenerativeAnswerer

                    found = GenerativeAnswerer.load(key, device=device, reader=self._reader(), quantize=self.quantize)
                else:
                    from generator.answer import Answerer as ExtractiveAnswerer

                    found = ExtractiveAnswerer.load(key, device=device)
                self._loaded[key] = found
        return found

    def _reader(self) -> Any:
        """The extractive model a generative answer's verifier reads with; None (token overlap
        only) when it cannot be loaded."""
        try:
            reader = self.get(self.extractive)
        except (CheckpointError, MissingDependency, InvalidInput) as exc:
            logger.warning("the verifier runs on token overlap only: %s", exc)
            return None
        return reader if getattr(reader, "kind", "extractive") == "extractive" else None
