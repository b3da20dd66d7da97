"""API keys: stored hashed (sha256) in the settings, sent as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``.

Keys are required on every route but the health checks whenever any key is configured or the
server listens beyond loopback (with no key configured such a server refuses everything: safer
than open). A missing or unknown key is 401; a key whose scope is too low (read < write < admin)
or whose collections do not include the one named in the path is 403.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.deps import SettingsDep
from common.settings import ApiKeySpec, Settings, hash_key

logger = logging.getLogger(__name__)

SCOPES = ("read", "write", "admin")
SCOPE_RANK = {s: i for i, s in enumerate(SCOPES)}


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``anonymous`` when keys are not required (a loopback server without keys)."""

    scope: str
    collections: tuple[str, ...]
    name: str = ""
    anonymous: bool = False

    def can_access(self, collection: str) -> bool:
        return "*" in self.collections or collection in self.collections

    def has_scope(self, needed: str) -> bool:
        return SCOPE_RANK[self.scope] >= SCOPE_RANK[needed]


ANONYMOUS = Principal(scope="admin", collections=("*",), name="anonymous", anonymous=True)


def presented_key(request: Request) -> str | None:
    """The key from ``Authorization: Bearer`` or ``X-API-Key``, if any."""
    auth = request.headers.get("authorization")
    if auth:
        kind, _, value = auth.partition(" ")
        if kind.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def match_key(key: str, specs: Sequence[ApiKeySpec]) -> ApiKeySpec | None:
    """The configured key whose hash matches ``key`` (constant-time comparison)."""
    digest = hash_key(key)
    found = None
    for spec in specs:
        if hmac.compare_digest(digest, spec.hash.lower()):
            found = spec
    return found


def authenticate(request: Request, settings: Settings) -> Principal:
    """The caller, or 401."""
    if not settings.auth_required:
        return ANONYMOUS
    key = presented_key(request)
    if key is None:
        raise HTTPException(401, "an API key is required (Authorization: Bearer <key> or X-API-Key)",
                            headers={"WWW-Authenticate": "Bearer"})
    spec = match_key(key, settings.api_keys)
    if spec is None:
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
    return Principal(scope=spec.scope, collections=tuple(spec.collections), name=spec.name)


def authorize(principal: Principal, scope: str, collection: str | None = None) -> None:
    """403 unless ``principal`` has ``scope`` and (when given) access to ``collection``."""
    if not principal.has_scope(scope):
        raise HTTPException(403, f"this API key has scope {principal.scope!r}; {scope!r} is needed")
    if collection is not None and not principal.can_access(collection):
        raise HTTPException(403, f"this API key does not give access to collection {collection!r}")


def require(scope: str) -> Callable[..., Principal]:
    """A dependency: authenticate, then check ``scope`` and the collection named ``{name}`` in
    the path (if the route has one)."""
    if scope not in SCOPE_RANK:
        raise ValueError(f"unknown scope {scope!r}")

    def dependency(request: Request, settings: SettingsDep) -> Principal:
        principal = authenticate(request, settings)
        authorize(principal, scope, request.path_params.get("name"))
        request.state.principal = principal
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


ReadKey = Annotated[Principal, Depends(require("read"))]
WriteKey = Annotated[Principal, Depends(require("write"))]
AdminKey = Annotated[Principal, Depends(require("admin"))]
