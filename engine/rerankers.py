"""Which reranker re-scores a search: the names a request or a collection may ask for, the choice
between a request's ``rerank`` and its collection's, and the loaded models (each loaded once, on
first use).

A request may name a reranker folder under ``models/`` (one whose ``config.json`` carries the
``attend_reranker`` section) or the reranker the server is configured with (``ATTEND_RERANKER``:
by that setting's value or by its folder name). Any other name is ``InvalidInput``: a request cannot
make the server load an arbitrary path.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common.errors import InvalidInput
from common.paths import MODELS_DIR, resolve_model_dir
from retriever.rerank import RERANK_KEYS, RerankSettings, Scorer

logger = logging.getLogger(__name__)

RerankOption = RerankSettings | Mapping[str, Any] | None


def choose_rerank(request: RerankOption, default: Mapping[str, Any] | None) -> RerankSettings | None:
    """The rerank a search runs: the request's when it gives one, else the collection's ``default``
    (a ``rerank`` collection setting), else none. A request ``{"model": None}`` turns reranking off
    even where the collection has a default."""
    if request is None:
        return RerankSettings.from_mapping(default) if default is not None else None
    if isinstance(request, RerankSettings):
        return request
    if isinstance(request, Mapping) and "model" in request and request["model"] is None:
        unknown = set(request) - RERANK_KEYS
        if unknown:
            raise InvalidInput(f"unknown rerank settings {sorted(unknown)}; known: {sorted(RERANK_KEYS)}")
        return None
    return RerankSettings.from_mapping(request)


def is_reranker_dir(path: Path) -> bool:
    """Whether ``path`` holds a reranker written by ``retriever.cross_encoder.save_reranker``
    (judged by its ``config.json``; nothing is loaded)."""
    from retriever.cross_encoder import FORMAT

    try:
        meta = json.loads((path / "config.json").read_text()).get("attend_reranker")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


class Rerankers:
    """The engine's rerankers. ``configured``: the server's reranker (a folder name under
    ``models/`` or a directory; None for none); ``models_dir``: where shipped rerankers are found.
    ``loader`` loads a reranker directory (default: ``retriever.cross_encoder.load_reranker``)."""

    def __init__(
        self,
        configured: str | None = None,
        *,
        device: str = "auto",
        models_dir: Path = MODELS_DIR,
        loader: Callable[[Path], Scorer] | None = None,
    ) -> None:
        self.configured = configured or None
        self.device = device
        self.models_dir = Path(models_dir)
        self._loader = loader
        self._loaded: dict[Path, Scorer] = {}  # by directory: two names of one folder share it
        self._by_name: dict[str, Scorer] = {}
        self._lock = threading.Lock()

    def shipped(self) -> list[str]:
        """The folders under ``models_dir`` that hold a reranker."""
        if not self.models_dir.is_dir():
            return []
        return sorted(p.name for p in self.models_dir.iterdir() if p.is_dir() and is_reranker_dir(p))

    def choices(self) -> list[str]:
        """The reranker names a request or a collection may ask for (the configured one by its
        folder name: a server's paths stay out of its error messages)."""
        names = list(self.shipped())
        if self.configured:
            names.append(Path(self.configured).name)
        return list(dict.fromkeys(names))

    def resolve(self, name: str) -> Path:
        """The directory of the reranker ``name`` (see the module docstring); InvalidInput
        ("unknown reranker") for a name the server does not allow."""
        if self.configured and name in (self.configured, Path(self.configured).name):
            return resolve_model_dir(self.configured, "reranker")
        plain = bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
        if plain and is_reranker_dir(self.models_dir / name):
            return self.models_dir / name
        raise InvalidInput(f"unknown reranker {name!r}; choose one of {self.choices()}")

    def get(self, name: str) -> Scorer:
        """The reranker ``name`` (see :meth:`resolve`), loaded on first use and shared by every
        caller after that. A name seen before is answered from memory: a search does not read
        ``config.json`` from disk again."""
        found = self._by_name.get(name)
        if found is not None:
            return found
        path = self.resolve(name).resolve()
        with self._lock:
            found = self._loaded.get(path)
            if found is None:
                found = self._load(path)
                self._loaded[path] = found
            self._by_name[name] = found
        return found

    def _load(self, path: Path) -> Scorer:
        if self._loader is not None:
            return self._loader(path)
        from retriever.cross_encoder import load_reranker

        logger.info("loading reranker %s", path)
        return load_reranker(path, device=None if self.device == "auto" else self.device)
