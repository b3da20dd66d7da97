from __future__ import annotations

import pytest

from attend.cli import build_parser, main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("bench", "train", "serve"):
        assert name in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_unknown_command_is_an_argparse_error():
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_service_commands_do_not_load_the_http_stack():
    """`attend ask`, `search`, `index`, `collections` reach the core through the engine alone: no
    FastAPI, Starlette or api/ import (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import attend.cli, attend.commands.ask, attend.commands.search, attend.commands.index\n"
        "import attend.commands.collections, attend.commands.diagnose, engine, engine.build, engine.schemas\n"
        "print(sorted(m for m in ('fastapi', 'starlette', 'api', 'uvicorn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
