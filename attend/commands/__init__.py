"""Subcommands of the ``attend`` CLI, one module per command (see ``attend.cli``)."""
