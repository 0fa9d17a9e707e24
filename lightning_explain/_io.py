"""Writing output files safely: CSV cells that spreadsheets will not run, and atomic writes.

* :func:`csv_writer`: a ``csv.writer`` whose string cells starting with ``=``, ``+``, ``-``,
  ``@``, a tab or a carriage return are prefixed with ``'`` (OWASP's advice against CSV formula
  injection: a checkpoint named ``=HYPERLINK(...)`` must not become a formula). Numbers are
  written as they are.
* :func:`atomic_write_bytes` / :func:`atomic_write_text`: write to a temporary file in the same
  folder, then ``os.replace`` it onto the target, so a reader never sees a half-written file.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Union

__all__ = ["SafeCSVWriter", "atomic_write_bytes", "atomic_write_text", "csv_cell", "csv_writer"]

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """``value``, with a ``'`` in front if it is a string a spreadsheet would read as a formula.

    Example:
        >>> csv_cell("=1+1"), csv_cell("-x"), csv_cell(-0.5), csv_cell("gradcam")
        ("'=1+1", "'-x", -0.5, 'gradcam')
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class SafeCSVWriter:
    """``csv.writer`` with every cell passed through :func:`csv_cell`."""

    def __init__(self, f: IO[str], **kwargs: Any) -> None:
        self._writer = csv.writer(f, **kwargs)

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([csv_cell(c) for c in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(f: IO[str], **kwargs: Any) -> SafeCSVWriter:
    """A :class:`SafeCSVWriter` on ``f`` (keyword arguments as ``csv.writer``)."""
    return SafeCSVWriter(f, **kwargs)


def atomic_write_bytes(path: Union[str, os.PathLike[str]], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``); return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: Union[str, os.PathLike[str]], text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))
