"""``pytorch_lightning`` flavour of the callback, for ``pytorch_lightning.Trainer`` (lightly's namespace).

``lightning_explain.pl.PairExplanationCallback`` subclasses ``pytorch_lightning.Callback``, so
``pytorch_lightning.cli.LightningCLI`` accepts it. It shares all of its logic with
:class:`lightning_explain.PairExplanationCallback` (which subclasses ``lightning.pytorch.Callback``);
only the base class differs. Without the ``lightning`` package both names are the same class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_explain._lightning import callback_base
from lightning_explain.callback import PairExplanationCallback as _Default
from lightning_explain.callback import PairExplanationLogic

__all__ = ["PairExplanationCallback"]

if TYPE_CHECKING:
    from pytorch_lightning import Callback as _Callback

    class PairExplanationCallback(PairExplanationLogic, _Callback):  # type: ignore[misc]
        """The callback for ``pytorch_lightning``; see
        :class:`lightning_explain.PairExplanationCallback`."""

else:
    _Callback = callback_base("pytorch_lightning")
    if issubclass(_Default, _Callback):  # `lightning` is not installed
        PairExplanationCallback = _Default
    else:

        class PairExplanationCallback(PairExplanationLogic, _Callback):
            __doc__ = _Default.__doc__
