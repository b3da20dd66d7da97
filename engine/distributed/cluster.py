"""Joining a Ray cluster: the one place Attend calls ``ray.init``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from common.errors import AttendError, InvalidInput

logger = logging.getLogger(__name__)

INSTALL_HINT = "Ray is not installed: install the distributed extra (pip install 'attend[distributed]')"


def import_ray() -> Any:
    """The ``ray`` module, or ``InvalidInput`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InvalidInput(INSTALL_HINT) from None
    return ray


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class ClusterUnreachable(AttendError):
    """``ray.init`` could not join the cluster at the address given."""


def _token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")) or (
        Path.home() / ".ray" / "auth_token"
    ).is_file()


def _enable_token_auth() -> None:
    """``RAY_AUTH_MODE=token`` for this process, also where Ray has read its configuration already
    (at import): through Ray's own switch where this Ray version has it."""
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._private.authentication.authentication_token_setup import (
            _enable_token_auth as enable,
        )
    except ImportError:  # another Ray version: the variable alone, read when Ray starts
        return
    enable()


def connect(address: str | None = None) -> Any:
    """Ray, initialised: joins the cluster at ``address`` (``ray://host:10001`` or ``host:6379``;
    ``"auto"`` finds a running local one), or starts a local cluster when ``address`` is None.
    A process already connected keeps its connection.

    Ray 2.5x starts clusters with token authentication, but a driver joining one by its address
    sends its token only when ``RAY_AUTH_MODE=token`` (``auto`` and a new local cluster enable it
    themselves): where that variable is unset and a token is at hand (``~/.ray/auth_token``,
    ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``) it is set here, so ``--ray HOST:6379`` works as
    ``ray start`` printed it. An address that cannot be joined is ``ClusterUnreachable`` with the
    reason, not Ray's traceback."""
    ray = import_ray()
    if not ray.is_initialized():
        logger.info("joining Ray at %s", address or "a new local cluster")
        if address and address != "auto" and "RAY_AUTH_MODE" not in os.environ and _token_available():
            _enable_token_auth()
        try:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise ClusterUnreachable(
                f"cannot join the Ray cluster at {address!r}: {exc}. Check the address (the one `ray start --head` "
                "printed) and that this machine has the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN) "
                "or that the cluster runs with RAY_AUTH_MODE=disabled"
            ) from None
    return ray
