"""The attack suite reuses the CLI tests' tiny training run (session fixture)."""

from tests.cli.conftest import run

__all__ = ["run"]
