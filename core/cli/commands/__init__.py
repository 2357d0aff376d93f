"""Subcommands of ``python -m core``: one module each, discovered by :mod:`core.cli`."""
