"""``python -m lightning_explain.cli``."""

from lightning_explain.cli import main

raise SystemExit(main())
