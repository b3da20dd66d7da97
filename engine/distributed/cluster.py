"""Joining a Ray cluster: the one place Attend calls ``ray.init``."""

from __future__ import annotations

import logging
from typing import Any

from common.errors import InvalidInput

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


def connect(address: str | None = None) -> Any:
    """Ray, initialised: joins the cluster at ``address`` (``ray://host:10001`` or ``host:6379``;
    ``"auto"`` finds a running local one), or starts a local cluster when ``address`` is None.
    A process already connected keeps its connection."""
    ray = import_ray()
    if not ray.is_initialized():
        logger.info("joining Ray at %s", address or "a new local cluster")
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray
