"""MLflow sink, through ``MLFlowLogger.experiment`` (an ``MlflowClient``) and ``logger.run_id``."""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Any

from torch import Tensor

from lightning_explain.sinks.base import (
    ExplanationSink,
    check_image,
    check_table,
    image_to_numpy,
    release_figure,
    require,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MLflowSink", "mlflow_key"]

_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_\-. /]+")


def mlflow_key(key: str) -> str:
    """Make ``key`` a valid MLflow image key and artifact sub-path.

    MLflow keys may contain alphanumerics, ``_ - . /`` and spaces; anything else becomes ``_``.
    Empty, ``.`` and ``..`` path segments are dropped, so the key can also be used as a path.

    Raises:
        ValueError: if nothing usable is left of ``key``.
    """
    parts = [p.strip() for p in _NOT_ALLOWED.sub("_", str(key)).split("/")]
    parts = [p for p in parts if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(
            f"`MLflowSink`: expected a `key` with letters or digits, such as "
            f"'explain/gradcam/pairs', but got {key!r}."
        )
    return "/".join(parts)


class MLflowSink(ExplanationSink):
    """Log to MLflow with ``MlflowClient.log_image`` / ``log_figure`` / ``log_table``.

    * Images: ``log_image(run_id, image, key=key, step=step)``, MLflow's step-indexed images
      (MLflow >= 2.12), stored as ``images/<key with / as ~>+step+<step>+...png`` and shown with a
      step slider in the run's UI. With an older MLflow the image is saved as the artifact
      ``explanations/step=<step:08d>/<key>.png`` instead. Captions are saved as
      ``explanations/step=<step:08d>/<key>.txt``.
    * Figures: ``log_figure(run_id, figure, artifact_file="explanations/step=<step:08d>/<key>.png")``.
    * Tables: ``log_table(run_id, data={column: values}, artifact_file=".../<key>.json")``, which
      the MLflow UI shows in its artifact viewer and ``mlflow.load_table`` reads back.

    Keys are sanitised with :func:`mlflow_key`.

    Args:
        logger: an ``MLFlowLogger`` from ``lightning.pytorch.loggers`` or
            ``pytorch_lightning.loggers``.

    Raises:
        ModuleNotFoundError: if ``mlflow`` is not installed.
    """

    def __init__(self, logger: Any) -> None:
        require("mlflow", extra="mlflow", owner="MLflowSink")
        self.logger = logger
        self._stepped_images: bool | None = None

    @property
    def client(self) -> Any:
        """The logger's ``MlflowClient``."""
        return self.logger.experiment

    @property
    def run_id(self) -> str:
        """The MLflow run the logger writes to."""
        return str(self.logger.run_id)

    @staticmethod
    def artifact_path(key: str, step: int, suffix: str) -> str:
        """``explanations/step=<step:08d>/<sanitised key><suffix>``."""
        return f"explanations/step={int(step):08d}/{mlflow_key(key)}{suffix}"

    def _supports_stepped_images(self, client: Any) -> bool:
        if self._stepped_images is None:
            try:
                params = inspect.signature(client.log_image).parameters
                self._stepped_images = "key" in params and "step" in params
            except (TypeError, ValueError):
                self._stepped_images = False
        return self._stepped_images

    def log_image(self, key: str, image: Tensor, step: int, caption: str | None = None) -> None:
        picture = image_to_numpy(check_image(image, owner="MLflowSink.log_image"))
        client, run_id = self.client, self.run_id
        if self._supports_stepped_images(client):
            client.log_image(run_id, picture, key=mlflow_key(key), step=int(step))
        else:
            client.log_image(run_id, picture, artifact_file=self.artifact_path(key, step, ".png"))
        if caption is not None:
            client.log_text(run_id, str(caption), self.artifact_path(key, step, ".txt"))

    @property
    def figure_dpi(self) -> float | None:
        """What ``MlflowClient.log_figure`` saves at: matplotlib's ``savefig.dpi`` (``None`` when
        it is ``"figure"``, the default: the figure's own dpi)."""
        import matplotlib

        dpi = matplotlib.rcParams["savefig.dpi"]
        return None if dpi == "figure" else float(dpi)

    def log_figure(self, key: str, figure: Figure, step: int) -> None:
        self.client.log_figure(
            self.run_id, figure, artifact_file=self.artifact_path(key, step, ".png")
        )
        release_figure(figure)

    def log_table(self, key: str, columns: list[str], rows: list[list[object]], step: int) -> None:
        columns, rows = check_table(columns, rows, owner="MLflowSink.log_table")
        data = {name: [row[i] for row in rows] for i, name in enumerate(columns)}
        self.client.log_table(
            self.run_id, data=data, artifact_file=self.artifact_path(key, step, ".json")
        )

    def __repr__(self) -> str:
        return f"MLflowSink({type(self.logger).__name__})"
