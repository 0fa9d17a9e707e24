"""``PairExplanationCallback``: explain a fixed probe set of image pairs while a contrastive model trains.

The callback is orchestration only: it schedules evaluations, applies the rank policy, keeps the
resumable state and hands results to the loggers. What is explained comes from
:mod:`lightning_explain.data` (the probe set and its policy), the explaining and scoring from
:func:`lightning_explain.evaluation.evaluate_probe`, the rendering and sink calls from
:mod:`lightning_explain.publish`, the score history from :mod:`lightning_explain.downstream`.

The logic lives in :class:`PairExplanationLogic`, which touches the Trainer only through public
attributes that both ``lightning.pytorch`` and ``pytorch_lightning`` provide. Each namespace gets its
own ``Callback`` subclass (LightningCLI accepts only callbacks of its own namespace):
``lightning_explain.PairExplanationCallback`` (``lightning.pytorch``, or ``pytorch_lightning``
without the ``lightning`` package) and ``lightning_explain.pl.PairExplanationCallback``
(``pytorch_lightning``, the namespace lightly uses).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import torch
from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_explain._checks import (
    check_batch_size,
    check_bool,
    check_int,
    check_layer,
    check_literal,
    check_positive_int,
    check_schedule,
)
from lightning_explain._lightning import (
    callback_base,
    check_strategy,
    default_namespace,
    gather_objects,
    saved_state,
    scatter_objects,
    trainer_device,
    trainer_precision,
    trainer_skips,
    trainer_stage,
)
from lightning_explain._perf import check_autocast_dtype
from lightning_explain.data.probe import ProbeSet
from lightning_explain.data.sources import KNNSettings, ProbeSettings, ProbeSource
from lightning_explain.diagnostics import diagnose, dry_run
from lightning_explain.downstream import DownstreamPoint, ScoreHistory
from lightning_explain.embedding import EmbeddingSpec, check_embedding_spec
from lightning_explain.evaluation import (
    DEFAULT_METHODS,
    MethodEntry,
    ProbeEvaluation,
    evaluate_module,
    evaluate_sharded,
    parse_interactions,
    parse_methods,
)
from lightning_explain.live_dashboard import (
    LiveDashboard,
    check_dashboard_dir,
    update_live_dashboard,
)
from lightning_explain.metrics import DEFAULT_METRICS
from lightning_explain.metrics._registry import resolve_metrics
from lightning_explain.publish import (
    RenderedPicture,
    build_sinks,
    evaluation_for,
    picture_formats,
    plan_rendering,
    publish_evaluation,
    render_jobs,
)
from lightning_explain.similarity import SimilarityFn, SimilarityName, resolve_similarity

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from lightning.pytorch import Callback as _Base
else:
    _Base = object

__all__ = ["PairExplanationCallback", "PairExplanationLogic"]

_OWNER = "PairExplanationCallback"
_FORMAT = "lightning-explain-callback"
_STATE_VERSION = 1
_PREFIX = "explain"

OnError = Literal["warn", "raise"]
Hook = Literal["train_epoch_end", "validation_epoch_end"]


class PairExplanationLogic(_Base):
    """Everything :class:`PairExplanationCallback` does, without a Lightning base class at run
    time (each namespace's callback class adds its own); see :class:`PairExplanationCallback`."""

    def __init__(
        self,
        methods: Sequence[MethodEntry] = DEFAULT_METHODS,
        metrics: Sequence[str] | None = None,
        *,
        probe: Union[ProbeSettings, Mapping[str, Any], None] = None,
        knn: Union[KNNSettings, Mapping[str, Any], None] = None,
        embedding: EmbeddingSpec = "forward",
        layer: str = "auto",
        similarity: Union[SimilarityName, SimilarityFn] = "cosine",
        seed: int = 0,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        hook: Hook = "train_epoch_end",
        n_steps: int = 32,
        batch_size: int | None = None,
        autocast: str | None = None,
        log_images: bool = True,
        on_error: OnError = "warn",
        dashboard_dir: Union[str, os.PathLike[str], None] = None,
        interactions: Sequence[MethodEntry] | None = None,
    ) -> None:
        super().__init__()
        self._specs = parse_methods(methods, owner=_OWNER)
        self._interactions = parse_interactions(interactions, owner=_OWNER)
        self.interactions = [s.label for s in self._interactions]
        self.methods = [s.label for s in self._specs]
        self.metrics = None if metrics is None else resolve_metrics(metrics, owner=_OWNER)
        self.probe_settings = ProbeSettings.coerce(
            ProbeSettings() if probe is None else probe, owner=_OWNER
        )
        self.knn_settings = KNNSettings.coerce(knn, owner=_OWNER)
        check_embedding_spec(embedding, owner=_OWNER)
        resolve_similarity(similarity)
        self.embedding, self.similarity = embedding, similarity
        self.layer = check_layer(layer, owner=_OWNER)
        self.seed = check_int(seed, name="seed", owner=_OWNER)
        self.every_n_epochs, self.every_n_train_steps, self.hook = check_schedule(
            every_n_epochs, every_n_train_steps, hook, owner=_OWNER
        )
        self.n_steps = check_positive_int(n_steps, name="n_steps", owner=_OWNER)
        self.batch_size = check_batch_size(batch_size, owner=_OWNER)
        check_autocast_dtype(autocast, name="autocast", owner=_OWNER, optional=True)
        self.autocast = autocast
        self.log_images = check_bool(log_images, name="log_images", owner=_OWNER)
        self.on_error: OnError = check_literal(on_error, OnError, name="on_error", owner=_OWNER)
        self.dashboard_dir = check_dashboard_dir(dashboard_dir, owner=_OWNER)
        self._dashboard: LiveDashboard | None = None

        knn_spec = None if self.knn_settings is None else self.knn_settings.embedding
        knn_text = embedding if knn_spec is None else knn_spec
        self._source = ProbeSource(
            self.probe_settings,
            self.knn_settings,
            seed=self.seed,
            knn_embedding=knn_text if isinstance(knn_text, str) else "",
            owner=_OWNER,
        )
        self._history = ScoreHistory()
        self._errors = 0
        self._evaluations = 0
        self._last_step = -1
        self._model_class: str | None = None
        self._checked = False
        self._sinks: list[Any] | None = None
        self._warned: set[str] = set()

    # ----------------------------------------------------------------------------------------------
    # Public API

    @property
    def state_key(self) -> str:
        """Checkpoint key: the class name plus the method labels and the hook."""
        return f"{type(self).__qualname__}{{'methods': {self.methods!r}, 'hook': {self.hook!r}}}"

    @property
    def probe(self) -> ProbeSet | None:
        """The probe set, once drawn, restored or loaded (``None`` before)."""
        return self._source.probe

    @property
    def error_count(self) -> int:
        """How many failures so far (logged as ``explain/errors``)."""
        return self._errors

    @property
    def history(self) -> list[dict[str, Any]]:
        """One entry per evaluation with a kNN accuracy: ``{"step", "epoch", "knn_accuracy",
        "scores": {"<label>/<metric>": mean score}}`` (a copy; kept in the checkpoint state)."""
        return self._history.state()

    def history_points(self) -> list[DownstreamPoint]:
        """The recorded evaluations as :class:`~lightning_explain.downstream.DownstreamPoint`."""
        return self._history.points()

    def save_probe(self, path: Union[str, os.PathLike[str]]) -> Path:
        """Write the probe set to ``path`` (``torch.save`` of tensors and metadata); return the path.

        Raises:
            RuntimeError: if no probe set exists yet (it is drawn when fitting starts).
        """
        if self.probe is None:
            raise RuntimeError(
                f"`{_OWNER}.save_probe`: there is no probe set yet; it is drawn when `trainer.fit` "
                f"starts (or use `load_probe`, or `lightning_explain.data.draw_probe_set`)."
            )
        return self.probe.save(path)

    def load_probe(self, path: Union[str, os.PathLike[str]]) -> ProbeSet:
        """Use the probe set saved at ``path`` (read with ``weights_only=True``) from now on.

        It takes precedence over a probe set restored from a checkpoint.
        """
        probe = self._source.use(ProbeSet.load(path))
        self._checked = False
        self._history.clear()  # scores on other pairs are not comparable
        return probe

    def compute_scores(self, module: nn.Module) -> dict[str, float]:
        """Explain and score the probe set with ``module``, outside any Trainer.

        Returns the scalars the callback logs (``explain/sim``, ``explain/<label>/<metric>`` and,
        with ``knn`` set and a kNN set stored with the probe set, ``explain/knn_accuracy``),
        computed on the module's device without the trainer's precision plugin.

        Raises:
            RuntimeError: if there is no probe set, or a method or metric fails.
        """
        if self.probe is None:
            raise RuntimeError(
                f"`{_OWNER}.compute_scores`: there is no probe set; call `load_probe(path)` first."
            )
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        evaluation = self._evaluate(module, self.probe, device=device, precision=None)
        evaluation.raise_on_failure(f"{_OWNER}.compute_scores")
        return evaluation.scalars(_PREFIX)

    # ----------------------------------------------------------------------------------------------
    # Checkpoint state

    @override
    def state_dict(self) -> dict[str, Any]:
        """Probe tensors (small: the pairs, plus the kNN set with ``knn``), settings hashes, the
        counters and the history of (step, epoch, scores, kNN accuracy) behind the correlations."""
        probe = self.probe
        return {
            "format": _FORMAT,
            "version": _STATE_VERSION,
            "probe": None if probe is None else probe.to_dict(),
            "config_hash": self._source.probe_hash,
            "knn_hash": self._source.knn_hash,
            "errors": self._errors,
            "evaluations": self._evaluations,
            "last_step": self._last_step,
            # Lets `lightning-explain compare` rebuild the module without `--model-class`.
            "model_class": self._model_class,
            "history": self._history.state(),
            "probe_identity": self._source.identity(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counters and, if the probe settings are unchanged, the probe set."""
        if not isinstance(state_dict, Mapping) or state_dict.get("format") != _FORMAT:
            rank_zero_warn(
                f"`{_OWNER}`: the checkpoint's state for this callback is not recognised; starting "
                f"with a fresh probe set."
            )
            return
        self._errors = int(state_dict.get("errors", 0))
        self._evaluations = int(state_dict.get("evaluations", 0))
        self._last_step = int(state_dict.get("last_step", -1))
        same_probe = state_dict.get("config_hash") == self._source.probe_hash
        same_knn = state_dict.get("knn_hash") == self._source.knn_hash
        keep = same_probe and same_knn and self.knn_settings is not None
        self._history = ScoreHistory((state_dict.get("history") or []) if keep else [])
        self._source.restore(
            state_dict.get("probe"),
            state_dict.get("config_hash"),
            identity=state_dict.get("probe_identity"),
        )

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Adopt this callback's state when it was saved under another key: the key holds the
        method labels and the hook, and changing those must not lose the probe set and history."""
        found = saved_state(checkpoint, self, trainer, _FORMAT, config_hash=self._source.probe_hash)
        if found is not None:
            key, state = found
            rank_zero_info(
                f"`{_OWNER}`: restoring the state saved under {key!r} (the methods or the hook "
                f"changed since), so the probe set, the counters and the history carry on."
            )
            self.load_state_dict(copy.deepcopy(dict(state)))

    # ----------------------------------------------------------------------------------------------
    # Hooks

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse sharded strategies (FSDP, DeepSpeed) before anything runs."""
        check_strategy(trainer.strategy, owner=_OWNER)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After a checkpoint restore: take the restored probe set or draw one, then the dry run."""
        self._checked = False
        self._sinks = None
        cls = type(pl_module)
        self._model_class = f"{cls.__module__}:{cls.__qualname__}"
        self._prepare(trainer, pl_module, final=False)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Retry drawing the probe set once the trainer has loaded the dataloaders; while the
        validation set is not loaded yet (no sanity check), dry-run on a training pair."""
        if not self._checked:
            self._prepare(trainer, pl_module, final=False, provisional=True)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """For ``trainer.validate`` with ``hook='validation_epoch_end'``: prepare and dry-run."""
        if self.hook == "validation_epoch_end" and trainer_stage(trainer) == "validate":
            self._sinks = None
            if not self._checked:
                self._prepare(trainer, pl_module, final=True)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Default evaluation point: after the epoch's validation, before its checkpoint."""
        if (
            self.hook == "train_epoch_end"
            and self.every_n_train_steps is None
            and not trainer_skips(trainer)
            and self._epoch_due(trainer)
        ):
            self._run(trainer, pl_module)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Evaluation point for ``hook='validation_epoch_end'`` (fit, and ``trainer.validate``)."""
        if self.hook != "validation_epoch_end" or trainer_skips(trainer):
            return
        stage = trainer_stage(trainer)
        if stage == "validate" or (stage == "fit" and self._epoch_due(trainer)):
            self._run(trainer, pl_module)

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Evaluation point for ``every_n_train_steps``."""
        n = self.every_n_train_steps
        if n is None or trainer_skips(trainer):
            return
        step = int(trainer.global_step)
        if step > 0 and step % n == 0 and step != self._last_step:
            self._run(trainer, pl_module)

    def _epoch_due(self, trainer: Any) -> bool:
        return (int(trainer.current_epoch) + 1) % (self.every_n_epochs or 1) == 0

    # ----------------------------------------------------------------------------------------------
    # One evaluation

    def _evaluate(
        self, module: Any, probe: ProbeSet, *, device: torch.device, precision: Any
    ) -> ProbeEvaluation:
        """Explain and score ``probe``; failures (also of resolving the embeddings) are
        collected, never raised."""
        knn = self.knn_settings
        return evaluate_module(
            module,
            probe,
            self._specs,
            self.metrics,
            embedding=self.embedding,
            knn_embedding=None if knn is None else knn.embedding,
            precision=precision,
            knn=None if knn is None else probe.knn,
            knn_k=None if knn is None else knn.k,
            knn_temperature=None if knn is None else knn.temperature,
            similarity=self.similarity,
            layer=self.layer,
            seed=self.seed,
            batch_size=self.batch_size,
            n_steps=self.n_steps,
            autocast=self.autocast,
            device=device,
            interactions=self._interactions,
            errors="collect",
            owner=_OWNER,
        )

    def _prepare(
        self, trainer: Any, pl_module: Any, *, final: bool, provisional: bool = False
    ) -> None:
        probe = self._ensure_probe(trainer, pl_module, final=final)
        if probe is not None and not self._checked:
            self._dry_run(trainer, pl_module, probe)
        elif probe is None and provisional:
            # Everything but the draw from the validation set is checked now, on a training pair;
            # the probe set itself (and its own dry run) comes with the first evaluation.
            stand_in = self._source.stand_in(trainer, pl_module)
            if stand_in is not None:
                self._dry_run(trainer, pl_module, stand_in, checked=False)

    def _ensure_probe(self, trainer: Any, pl_module: Any, *, final: bool) -> ProbeSet | None:
        probe = self._source.ensure(trainer, pl_module, final=final)
        if self._source.knn_redrawn:
            self._source.knn_redrawn = False
            self._history.clear()
        return probe

    def _dry_run(
        self, trainer: Any, pl_module: Any, probe: ProbeSet, *, checked: bool = True
    ) -> None:
        """Fail fast: the whole evaluation (and the rendering) on one probe pair, then report the
        layers and what looks wrong (see :func:`lightning_explain.diagnostics.dry_run`)."""
        device, precision = trainer_device(trainer, pl_module), trainer_precision(trainer)
        rank0 = bool(trainer.is_global_zero)
        info, warnings = dry_run(
            lambda p: self._evaluate(pl_module, p, device=device, precision=precision),
            probe,
            render=self.log_images and rank0,
            report=rank0,
            module=pl_module,
            precision=precision,
            device=device,
            settings=self.probe_settings,
            embedding=self.embedding,
            knn_embedding=None if self.knn_settings is None else self.knn_settings.embedding,
            specs=self._specs,
            layer=self.layer,
            metrics=self.metrics,
            similarity=self.similarity,
            owner=_OWNER,
        )
        if self.log_images and rank0:
            self._build_sinks(trainer)
        for line in info:
            rank_zero_info(f"`{_OWNER}`: {line}")
        self._speak_up(warnings)
        self._checked = checked

    def _speak_up(self, warnings: Mapping[str, str]) -> None:
        """Warn about each kind of problem once per run (rank 0)."""
        for kind, text in warnings.items():
            if kind not in self._warned:
                self._warned.add(kind)
                rank_zero_warn(f"`{_OWNER}`: {text}")

    def _build_sinks(self, trainer: Any) -> list[Any]:
        if self._sinks is None:
            knn = self.knn_settings
            self._sinks = (
                build_sinks(
                    trainer.loggers,
                    trainer.default_root_dir,
                    self.methods,
                    self.metrics or list(DEFAULT_METRICS),
                    knn=knn is not None,
                    correlations=knn is not None and knn.correlations,
                    warn=lambda text: rank_zero_warn(f"`{_OWNER}`: {text}"),
                )
                if self.log_images
                else []
            )
        return self._sinks

    def _run(self, trainer: Any, pl_module: Any) -> None:
        """One scheduled evaluation. Rank policy: every rank explains its share of the pairs and
        draws its share of the pictures, global rank 0 logs, every failure collected; then one
        broadcast gives every rank the scalars and the failures, so all ranks agree on the
        outcome (a failure anywhere is counted, or raised, everywhere)."""
        probe = self._ensure_probe(trainer, pl_module, final=True)
        if probe is None:  # pragma: no cover - final=True always draws or raises
            return
        if not self._checked:
            self._dry_run(trainer, pl_module, probe)
        step, epoch = int(trainer.global_step), int(trainer.current_epoch)
        payload: dict[str, Any] = {"scalars": {}, "errors": []}
        cause: BaseException | None = None
        evaluation = self._evaluate_sharded(trainer, pl_module, probe)  # every rank: its pairs
        drawn = self._render_sharded(trainer, probe, evaluation, step, epoch)  # its pictures
        if evaluation is not None:  # rank 0
            try:
                payload, cause = self._compute_and_log(
                    trainer, probe, evaluation, step, epoch, drawn
                )
            except Exception as err:  # a bug must not leave the other ranks waiting
                payload = {"scalars": {}, "errors": [f"{type(err).__name__}: {err}"]}
                cause = err
        # Reached by every rank: the outcome of the evaluation, the same everywhere.
        payload = trainer.strategy.broadcast(payload, src=0)
        errors: list[str] = list(payload["errors"])
        scalars: dict[str, float] = dict(payload["scalars"])
        if not trainer.is_global_zero:  # rank 0 recorded its history before logging
            self._history.record(scalars, step=step, epoch=epoch, labels=self.methods)
        self._errors += len(errors)
        self._evaluations += 1
        self._last_step = step
        for key, value in scalars.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        for message in errors:
            rank_zero_warn(
                f"`{_OWNER}`: at epoch {epoch}, step {step}, {message}. The run goes on; failures "
                f"are counted in `explain/errors`. Pass on_error='raise' to stop instead."
                if self.on_error == "warn"
                else f"`{_OWNER}`: at epoch {epoch}, step {step}, {message}."
            )
        if errors and self.on_error == "raise":
            raise RuntimeError(
                f"`{_OWNER}` (on_error='raise'): {len(errors)} failure(s) at epoch {epoch}, "
                f"step {step}: " + "; ".join(errors)
            ) from cause

    def _evaluate_sharded(
        self, trainer: Any, pl_module: Any, probe: ProbeSet
    ) -> ProbeEvaluation | None:
        """Every rank explains and scores its share of the pairs; rank 0 gets the whole
        evaluation, the others ``None`` (:func:`lightning_explain.evaluation.evaluate_sharded`)."""
        device, precision = trainer_device(trainer, pl_module), trainer_precision(trainer)
        return evaluate_sharded(
            lambda part: self._evaluate(pl_module, part, device=device, precision=precision),
            probe,
            rank=int(trainer.global_rank),
            world_size=int(trainer.world_size),
        )

    def _render_sharded(
        self,
        trainer: Any,
        probe: ProbeSet,
        evaluation: ProbeEvaluation | None,
        step: int,
        epoch: int,
    ) -> list[RenderedPicture]:
        """Under DDP every rank draws its share of the pictures that rank 0 then logs
        (:func:`~lightning_explain.publish.plan_rendering`: grids, captions, curves figures at
        the sinks' resolutions, PNG files for the sinks that store them), and rank 0 gets them
        all. A collective (one scatter, one gather)
        that never raises. ``[]`` with one process, without images, or when rank 0 could not
        plan (then it draws what it logs itself, and reports what fails)."""
        world, rank = int(trainer.world_size), int(trainer.global_rank)
        if world < 2 or not self.log_images:
            return []
        shares: list[Any] = [None] * world
        if evaluation is not None:  # rank 0
            # On a failure here, publish draws on rank 0 and reports what fails.
            with contextlib.suppress(Exception):
                shares = self._rendering_shares(trainer, probe, evaluation, world) or shares
        share = scatter_objects(shares, rank=rank, world_size=world)
        drawn: list[RenderedPicture] = []
        if share is not None:
            jobs, part, formats, mean, std = share
            drawn = render_jobs(
                probe, part, jobs, formats=formats, mean=mean, std=std, epoch=epoch, step=step
            )
        gathered = gather_objects(drawn, rank=rank, world_size=world)
        return [picture for pictures in gathered for picture in pictures]

    def _rendering_shares(
        self, trainer: Any, probe: ProbeSet, evaluation: ProbeEvaluation, world: int
    ) -> list[Any] | None:
        """Rank 0: what each rank draws (its jobs, the part of the evaluation they need, the
        formats the sinks take, the display statistics); ``None`` when nothing will be logged."""
        if evaluation.failures and self.on_error == "raise":
            return None
        sinks = self._build_sinks(trainer)
        if not sinks:
            return None
        formats = picture_formats(sinks, prefix=_PREFIX)
        mean, std = self.probe_settings.display_stats(probe)
        plan = plan_rendering(evaluation, curves=formats.curves, world_size=world)
        return [(jobs, evaluation_for(evaluation, jobs), formats, mean, std) for jobs in plan]

    def _compute_and_log(
        self,
        trainer: Any,
        probe: ProbeSet,
        evaluation: ProbeEvaluation,
        step: int,
        epoch: int,
        drawn: Sequence[RenderedPicture] = (),
    ) -> tuple[dict[str, Any], BaseException | None]:
        """Rank 0: unless the evaluation failed and ``on_error="raise"``, log the scalars to
        every logger and the pictures to the sinks (``drawn``: those drawn by every rank, see
        :meth:`_render_sharded`). Nothing raises: failures become messages."""
        self._speak_up(diagnose(evaluation, embedding=self.embedding))
        errors = [f.message() for f in evaluation.failures]
        cause = evaluation.failures[0].error if evaluation.failures else None
        scalars = evaluation.scalars(_PREFIX)
        scalars[f"{_PREFIX}/errors"] = float(self._errors + len(errors))
        corr = self._history.record(scalars, step=step, epoch=epoch, labels=self.methods)
        correlate = self.knn_settings is not None and self.knn_settings.correlations
        if correlate:
            scalars.update(corr)
        if errors and self.on_error == "raise":
            return {"scalars": scalars, "errors": errors}, cause

        def failed(what: str, err: BaseException) -> None:
            nonlocal cause
            errors.append(f"logging the explanations failed ({what}): {type(err).__name__}: {err}")
            cause = cause or err

        try:
            sinks = self._build_sinks(trainer) if self.log_images else []
        except Exception as err:
            failed("building the sinks", err)
            sinks = []
        mean, std = self.probe_settings.display_stats(probe)
        publish_evaluation(
            trainer.loggers,
            sinks,
            evaluation,
            probe,
            scalars,
            history=self._history if correlate else None,
            labels=self.methods,
            step=step,
            epoch=epoch,
            mean=mean,
            std=std,
            prefix=_PREFIX,
            on_error=failed,
            drawn=drawn,
        )
        if self.dashboard_dir is not None:  # the live page, rewritten atomically (rank 0)
            try:
                self._dashboard = update_live_dashboard(
                    self._dashboard,
                    self.dashboard_dir,
                    probe,
                    evaluation,
                    epoch=epoch,
                    global_step=step,
                    mean=mean,
                    std=std,
                    info=[("model", type(trainer.lightning_module).__qualname__)],
                )
            except Exception as err:
                failed("writing the live dashboard", err)
        return {"scalars": scalars, "errors": errors}, cause


# --------------------------------------------------------------------------------------------------
# The lightning.pytorch (or, without `lightning`, pytorch_lightning) class

if TYPE_CHECKING:
    from lightning.pytorch import Callback as _Callback
else:
    _Callback = callback_base(default_namespace())


class PairExplanationCallback(PairExplanationLogic, _Callback):
    """Explain a fixed probe set of image pairs during training, score and log the explanations.

    At each scheduled point the callback explains why the model finds each probe pair similar with
    every method of ``methods`` (pairwise heatmaps of Sammani et al. [0]), scores each explanation
    with the pairwise faithfulness metrics of ``metrics``, and logs the results to every logger of
    the trainer, with ``trainer.global_step`` as the step. The run is left untouched: the model is
    explained in eval mode with every submodule's train/eval flag restored, gradients are taken
    with ``torch.autograd.grad`` with respect to inputs and activations only (parameter ``.grad``,
    optimizer state and BatchNorm statistics are never written), no hook is left behind, and the
    global torch, NumPy and Python RNGs are restored, so training with the callback is bitwise
    identical to training without it.

    Every argument is expressible in a LightningCLI YAML file (the probe and kNN settings as
    nested mappings, or ``class_path``/``init_args``)::

        trainer:
          callbacks:
            - class_path: lightning_explain.PairExplanationCallback   # lightning_explain.pl.* for
              init_args:                                             # pytorch_lightning / lightly
                methods: [gradcam, {name: interaction_cam, reduction: max}]
                metrics: [insertion_simultaneous, deletion_simultaneous]
                embedding: backbone
                probe: {n_pairs: 8, pairing: two_views, source: val}
                knn: {k: 200, embedding: backbone}
                every_n_epochs: 5

    Logged keys (``<label>``: the method's label, see ``methods``; ``<metric>``: a metric key;
    details in the callback guide of the docs):

    ==================================== ====== ===================================================
    key                                  kind   content
    ==================================== ====== ===================================================
    ``explain/<label>/<metric>``         scalar mean score over the probe pairs (monitorable)
    ``explain/sim``                      scalar mean similarity of the probe pairs
    ``explain/errors``                   scalar failures so far (``on_error="warn"``)
    ``explain/<label>/degenerate_maps``  scalar maps that are all zero or constant (of ``2B``)
    ``explain/<label>/pairs``            image  x1 / heatmap 1 / x2 / heatmap 2 per pair, captioned
    ``explain/<label>/curves``           curves insertion/deletion curves: data for W&B (a line
                                                chart), a figure (mean and band) elsewhere
    ``explain/<label>/scores``           table  per-pair scores
    ``explain/knn_accuracy``             scalar with ``knn``: top-1 accuracy of the kNN probe
    ``explain_corr/<label>/<metric>/..`` scalar ``knn.correlations``: ``spearman``, ``pearson``
    ``explain_corr/table``               table  the correlations of every method x metric
    ``explain_corr/scatter``             figure kNN accuracy against each score, per method
    ``explain/correspondence/<l>/...``   image  ``interactions``: ``matches`` (the top matches);
                                                with view geometry, ``accuracy`` and
                                                ``error_px`` scalars
    ==================================== ====== ===================================================

    Scalars also go to ``trainer.callback_metrics``; correlations start at the third evaluation
    (NaN when undefined). Images, figures and tables go through :mod:`lightning_explain.sinks`
    (W&B, TensorBoard, MLflow; PNG/CSV files under ``<log_dir>/explanations/`` otherwise).

    Rank policy: under DDP every rank explains and scores its share of the probe pairs, rank 0
    gathers them, every rank draws a share of the pictures, rank 0 logs them, and one
    ``strategy.broadcast`` gives every rank the scalars and the failures (FSDP and DeepSpeed are
    refused at setup). Cost per probe pair: 2
    forwards, each method's cost (``method_info(name).cost``) and the metrics' (default set:
    ``4 * n_steps + 2`` forwards); the dry run at fit start costs the same for one pair.

    Args:
        methods: explanation methods: names (see :func:`lightning_explain.list_methods`) or dicts
            ``{"name": <method>, <option>: <value>, ...}`` (optional ``"label"``: the name in the
            logged keys). Entries sharing a method get labels with their option values, e.g.
            ``interaction_cam-max``. Default ``("gradcam", "interaction_cam")``.
        metrics: metric keys (see :func:`lightning_explain.metrics.list_metrics`), or ``None``
            for the metrics' default set (insertion, deletion, average drop and increase, each
            simultaneous and conditional). Default ``None``.
        probe: what the probe pairs are and where they come from: a
            :class:`~lightning_explain.data.ProbeSettings` or a mapping of its fields
            (``n_pairs``, ``pairing``, ``source``, ``clean_transform``, ``augment_transform``,
            ``mean``, ``std``). Default ``None``: 8 pairs of two views from the validation set.
        knn: the online kNN probe, as :class:`~lightning_explain.data.KNNSettings` or a mapping of
            its fields (``k``, ``temperature``, ``samples``, ``queries``, ``embedding``): every
            evaluation also logs the kNN accuracy of labelled validation images against labelled
            training images and the correlation of every score with it (see
            :mod:`lightning_explain.downstream`); ``samples + queries`` forwards per evaluation.
            Default ``None`` (off).
        embedding: the ``(B, D)`` embedding explained: ``"forward"`` (``module(x)``), an attribute
            path such as ``"backbone"`` (``module.backbone(x).flatten(1)``), ``"pkg.mod:fn"`` or a
            callable ``fn(module, x)`` (see :mod:`lightning_explain.embedding`). lightly models
            differ in what ``forward`` returns, so choose here. Default ``"forward"``.
        layer: layer of the class-activation methods: ``"auto"`` or a dotted submodule name of the
            LightningModule (``"backbone.layer4"``). A ``"layer"`` in a method entry overrides it.
            Default ``"auto"``.
        similarity: ``"cosine"`` (the paper's), ``"dot"``, ``"neg_l2"`` or a callable
            ``(z1, z2) -> (N,)``. Default ``"cosine"``.
        seed: seed of the probe draw (indices and dataset transforms), of the kNN draw and of
            stochastic methods. Default 0.
        every_n_epochs: evaluate every n epochs (at the epoch's end). Default ``None``: every epoch
            unless ``every_n_train_steps`` is set.
        every_n_train_steps: evaluate every n optimizer steps (after the training batch) instead of
            at epoch ends. Default ``None``.
        hook: ``"train_epoch_end"`` (after the epoch's validation, before its checkpoint; with
            gradients on) or ``"validation_epoch_end"`` (also runs in ``trainer.validate``).
            Default ``"train_epoch_end"``. Sanity checks and ``fast_dev_run`` are skipped (the dry
            run still checks the configuration).
        n_steps: insertion/deletion steps of the metrics (the paper uses 224 at 224 px). Default 32.
        batch_size: images per forward pass for chunked methods and metrics. Default ``None``:
            chosen from the device's memory.
        autocast: ``"bf16"`` or ``"fp16"`` to run the gradient-free perturbation forwards under
            ``torch.autocast``, scores in float32 (see
            :func:`lightning_explain.perturbation_autocast`). Default ``None``: the trainer's
            precision (a ``"bf16-mixed"`` trainer already autocasts every forward).
        log_images: log heatmap grids, curve figures and tables (scalars are always logged).
            Default ``True``.
        on_error: ``"warn"``: an exception inside a method, metric, renderer, logger or sink is
            caught, warned about and counted in ``explain/errors``, and the run goes on;
            ``"raise"``: stop the run. Configuration errors found by the dry run at fit start
            always raise. Default ``"warn"``.
        dashboard_dir: a folder for a live dashboard: after every evaluation rank 0 rewrites
            ``<dashboard_dir>/index.html`` (atomically: a temporary file, then ``os.replace``),
            the interactive page of ``lightning-explain compare`` with one step per evaluation
            (see :class:`lightning_explain.live_dashboard.LiveDashboard`), so that a run with only
            the CSV logger can be watched in a browser; the page reloads itself. A failure to
            write it is handled as ``on_error`` says. Default ``None`` (off).
        interactions: correspondence entries (``"point_to_point"``, ``"bilrp"`` or dicts with
            options; see :mod:`lightning_explain.correspondence`): which part of view 1 the
            model matches with which part of view 2, logged as ``explain/correspondence/<label>/
            matches`` (both views side by side, the top matches drawn as lines) and, when the
            probe set records its view geometry, scored against the true correspondence
            (``.../accuracy``, ``.../error_px``). They take ``layer``, ``seed``,
            ``batch_size`` and (``"cosine"``/``"dot"``) ``similarity`` like the methods.
            Default ``None`` (none).

    Raises:
        ValueError: at construction, for an unknown method, metric, pairing, hook or on_error
            value (the message lists the valid choices), a missing probe file, or bad numbers; at
            fit start, when the dry run fails (the message names the argument to fix) or the
            strategy is FSDP/DeepSpeed.
        TypeError: for arguments of the wrong type, or an option a method does not take.

    References:
        [0] Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive
        Learning", IEEE TIP, arXiv 2206.09753.
    """
