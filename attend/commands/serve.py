"""``attend serve``: run the API with uvicorn."""

from __future__ import annotations

import argparse


def register(parsers) -> None:
    p = parsers.top.add_parser("serve", help="run the HTTP API")
    p.add_argument("--host", default=None, help="bind address (default from ATTEND_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default from ATTEND_PORT, 8000)")
    p.add_argument("--with-sample", action="store_true", help="index the built-in sample collection first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app
    from api.settings import get_settings

    settings = get_settings()
    host = args.host or settings.host
    port = args.port or settings.port
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level="info")
    return 0
