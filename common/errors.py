"""Domain errors raised by the core packages.

Only ``api/`` maps these to HTTP status codes and only ``attend.cli`` to exit codes; the core
packages never import FastAPI.
"""

from __future__ import annotations


class AttendError(Exception):
    """Base class of every error Attend raises on purpose."""


class InvalidInput(AttendError, ValueError):
    """The caller passed something malformed or out of range."""


class NotFound(AttendError, LookupError):
    """Something named by the caller does not exist."""


class CollectionNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} does not exist")
        self.name = name


class DocumentNotFound(NotFound):
    def __init__(self, collection: str, doc_id: str) -> None:
        super().__init__(f"document {doc_id!r} does not exist in collection {collection!r}")
        self.collection = collection
        self.doc_id = doc_id


class AlreadyExists(AttendError):
    """Creating something whose name is taken."""


class CollectionUnusable(AttendError):
    """A stored collection whose settings the index code cannot open (written before settings
    were fully validated, or edited by hand). It can still be listed and deleted."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(
            f"collection {name!r} cannot be opened: {reason}; delete it and create it again with valid settings"
        )
        self.name = name
        self.reason = reason


class BudgetExceeded(InvalidInput):
    """A context budget too small to hold the question and the answer reserve."""


class ContextTooLong(InvalidInput):
    """A sequence longer than the model's context window."""


class CheckpointError(AttendError):
    """A model directory that is missing files or holds weights we cannot map."""


class MissingDependency(AttendError, ImportError):
    """An optional dependency is needed for this feature; the message says what to install."""

    def __init__(self, package: str, extra: str | None = None, feature: str = "") -> None:
        hint = f"pip install 'attend[{extra}]'" if extra else f"pip install {package}"
        what = f" for {feature}" if feature else ""
        super().__init__(f"{package} is required{what}: {hint}")
        self.package = package
