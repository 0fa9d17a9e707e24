"""The ``lightning-explain`` command line: compare checkpoints, tabulate one, export probe sets.

Commands::

    lightning-explain compare CKPT [CKPT ...] --out DIR [--probe PROBE] [--methods ...]
                                              [--metrics ...] [--model-class pkg.mod:Class] ...
    lightning-explain report CKPT [--probe PROBE] [--out DIR] [same options as compare]
    lightning-explain probe export CKPT --out PROBE
    lightning-explain methods [--json]
    lightning-explain metrics [--json]

``compare`` loads each checkpoint, explains the same probe pairs with every method, scores every
explanation with the faithfulness metrics of Sammani et al. (IEEE TIP, arXiv 2206.09753), and
writes a self-contained HTML dashboard (see :mod:`lightning_explain.dashboard`) plus
``metrics.csv`` and ``metrics.json`` to ``--out``; ``--wandb`` / ``--tensorboard DIR`` also log the
comparison to those trackers. When the probe set holds a kNN set (``PairExplanationCallback(knn=
...)``), each checkpoint's kNN accuracy is computed too, and the correlation of every score with it
across the checkpoints goes to the dashboard, ``correlations.csv`` and the trackers (see
:mod:`lightning_explain.downstream`). ``report`` runs the same machinery on one checkpoint and
writes the paper-style method x metric table (see :mod:`lightning_explain.report`).

Errors a user can fix (a missing or corrupt checkpoint, a probe set of another image size, a class
path that does not import, a layer the model lacks, an unknown method) end the command with exit
code 2 and a one-paragraph message; ``--debug`` adds the traceback. ``main(argv)`` returns the exit
code instead of exiting, so the commands can be run in-process.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence

from lightning_explain.cli._common import EXIT_USAGE, PROG, CLIError
from lightning_explain.cli._compare import cmd_compare, cmd_report
from lightning_explain.cli._listing import cmd_methods, cmd_metrics, cmd_probe_export
from lightning_explain.cli._parser import build_parser

__all__ = ["CLIError", "build_parser", "main"]


def _paragraph(message: str) -> str:
    text = " ".join(str(message).split())
    return textwrap.fill(
        f"{PROG}: error: {text}", width=100, break_on_hyphens=False, break_long_words=False
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 success, 2 usage or input error, 1 bug).

    Args:
        argv: the arguments without the program name; default ``sys.argv[1:]``.
    """
    from lightning_explain.checkpoints import CheckpointError

    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "compare": cmd_compare,
        "report": cmd_report,
        "methods": cmd_methods,
        "metrics": cmd_metrics,
        "probe": cmd_probe_export,
    }
    try:
        return handlers[args.command](args)
    except (CLIError, CheckpointError, FileNotFoundError, ModuleNotFoundError) as err:
        if debug:
            traceback.print_exc()
        print(_paragraph(str(err)), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            traceback.print_exc()
        print(
            _paragraph(
                f"unexpected {type(err).__name__}: {err}. This is probably a bug in "
                f"lightning-explain; rerun with --debug for the traceback and report it."
            ),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
