"""LightningCLI entry point: every part of the run, the explanation callback included, from YAML.

Run from the repository root::

    python examples/lightning_cli.py fit --config examples/configs/simclr_digits.yaml

Change anything on the command line, e.g. ``--trainer.max_epochs 20`` or
``--trainer.callbacks.init_args.methods '[gradcam, smoothgrad]'``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # makes `ssl_models` importable

from pytorch_lightning.cli import LightningCLI


def main() -> None:
    LightningCLI(save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
