"""Load LightningModules and probe sets from Lightning checkpoints, safely and with helpful errors.

Used by ``lightning-explain compare`` and ``lightning-explain probe export`` (see
:mod:`lightning_explain.cli`), and usable on its own::

    ckpt = load_checkpoint("epoch=3-step=400.ckpt")          # weights_only=True
    module = build_module("epoch=3-step=400.ckpt", ckpt, model_class="my_pkg.models:SimCLR")
    probe = checkpoint_probe(ckpt)                            # the callback's probe set, or None

Safety: checkpoints are read with ``torch.load(weights_only=True)``, which only rebuilds tensors and
plain Python containers. A Lightning checkpoint whose hyper-parameters hold other objects (a
``pathlib.Path``, a custom config class) fails that load with a "non-allowlisted global" error;
:func:`load_checkpoint` then explains which globals were found and requires ``trust=True``
(``--trust-checkpoint`` on the command line) before it falls back to ``weights_only=False``, which
can run arbitrary code from the file.

Every user-facing failure raises :class:`CheckpointError` (a ``ValueError``) with a one-paragraph
message that names the file or class path and the fix.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from lightning_explain.data.probe import PROBE_FORMAT, ProbeSet

__all__ = [
    "CheckpointError",
    "CheckpointMeta",
    "build_module",
    "checkpoint_meta",
    "checkpoint_probe",
    "from_one_run",
    "load_checkpoint",
    "load_probe_file",
    "recorded_class_path",
    "resolve_class",
]

PathLike = Union[str, "os.PathLike[str]"]

# Keys under which a callback state or the hyper-parameters may record the module's class path.
_CLASS_PATH_KEYS = ("model_class", "module_class", "class_path", "_class_path")


class CheckpointError(ValueError):
    """A checkpoint, probe file or class path that cannot be used; the message says why and how to
    fix it."""


# --------------------------------------------------------------------------------------------------
# Loading files


def _unsafe_globals(path: Path, err: BaseException) -> list[str]:
    """Names of the non-allowlisted globals a ``weights_only`` load refused (empty: not that error)."""
    found = re.findall(r"GLOBAL ([\w.]+)", str(err), flags=re.IGNORECASE)
    try:
        listed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # the helper only reads zip checkpoints; fall back to the error's names
        listed = []
    return sorted(set(found) | set(listed))


def _torch_load(path: Path, *, trust: bool, what: str, flag: str) -> Any:
    """``torch.load`` with ``weights_only=True``, the trust fallback and helpful errors."""
    if not path.exists():
        raise CheckpointError(f"The {what} {str(path)!r} does not exist. Check the path.")
    if not path.is_file():
        raise CheckpointError(f"The {what} {str(path)!r} is not a file (it is a directory?).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        names = _unsafe_globals(path, err)
        if not names:
            # torch's own message advises weights_only=False: not quoted here.
            raise CheckpointError(
                f"The {what} {str(path)!r} cannot be read safely: a weights-only load refused its "
                f"contents (it is corrupt, truncated, or holds pickled Python objects). Re-save "
                f"or re-download it; load it with --trust-checkpoint only if you trust its origin."
            ) from err
        if not trust:
            raise CheckpointError(
                f"The {what} {str(path)!r} holds Python objects that a safe load "
                f"(torch.load(weights_only=True)) refuses to rebuild: {', '.join(names)}. Lightning "
                f"stores such objects when save_hyperparameters() records non-plain values. If you "
                f"trust the file's origin, pass {flag} to load it with weights_only=False, which "
                f"can execute code stored in the file."
            ) from err
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        raise CheckpointError(
            f"The {what} {str(path)!r} cannot be read: it is corrupt, truncated or not a PyTorch "
            f"file ({_first_line(err)}). Re-save or re-download it."
        ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"The {what} {str(path)!r} cannot be read even with weights_only=False "
            f"({_first_line(err)})."
        ) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


def load_checkpoint(path: PathLike, *, trust: bool = False) -> dict[str, Any]:
    """Read a Lightning checkpoint onto the CPU, safely.

    Args:
        path: the ``.ckpt`` file.
        trust: allow a fallback to ``torch.load(weights_only=False)`` when the safe load refuses
            non-allowlisted globals. Default ``False``.

    Returns:
        The checkpoint dict (``state_dict``, ``epoch``, ``global_step``, ``hyper_parameters``,
        ``callbacks``, ...).

    Raises:
        CheckpointError: missing, corrupt or non-checkpoint file, or unsafe globals without
            ``trust`` (the message lists them).
    """
    p = Path(path)
    ckpt = _torch_load(p, trust=trust, what="checkpoint", flag="--trust-checkpoint")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        kind = type(ckpt).__name__
        keys = f" with keys {sorted(map(str, ckpt))[:10]}" if isinstance(ckpt, dict) else ""
        raise CheckpointError(
            f"The file {str(p)!r} is not a Lightning checkpoint: expected a dict with a "
            f"'state_dict' entry, but it holds a {kind}{keys}. Pass a .ckpt file written by "
            f"Trainer/ModelCheckpoint."
        )
    return ckpt


def load_probe_file(path: PathLike, *, trust: bool = False) -> ProbeSet:
    """Read a probe file (``PairExplanationCallback.save_probe`` / ``ProbeSet.save``).

    A checkpoint is accepted too: its stored probe set is used.

    Args:
        path: the probe file.
        trust: allow the ``weights_only=False`` fallback (for a checkpoint). Default ``False``.

    Raises:
        CheckpointError: missing or corrupt file, or a file that holds no probe set.
    """
    p = Path(path)
    data = _torch_load(p, trust=trust, what="probe file", flag="--trust-checkpoint")
    if isinstance(data, dict) and data.get("format") == PROBE_FORMAT:
        try:
            return ProbeSet.from_dict(data, origin=f"the probe file {str(p)!r}")
        except ValueError as err:
            raise CheckpointError(str(err)) from err
    if isinstance(data, dict) and "state_dict" in data:
        probe = checkpoint_probe(data, origin=str(p))
        if probe is not None:
            return probe
    raise CheckpointError(
        f"The file {str(p)!r} holds no lightning-explain probe set (expected a dict with format "
        f"{PROBE_FORMAT!r}). Export one from a checkpoint with `lightning-explain probe export "
        f"CKPT --out PROBE`, or write one with `PairExplanationCallback.save_probe(path)`."
    )


# --------------------------------------------------------------------------------------------------
# Metadata and the probe set stored by the callback


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint records about its training run.

    Attributes:
        path: the file.
        epoch: the ``epoch`` entry (``None`` if absent).
        global_step: the ``global_step`` entry (``None`` if absent).
        class_path: the LightningModule's class path if recorded (see :func:`recorded_class_path`).
        probe_shape: ``(C, H, W)`` of the stored probe images, if a probe set is stored.
    """

    path: Path
    epoch: int | None
    global_step: int | None
    class_path: str | None
    probe_shape: tuple[int, int, int] | None


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return int(value.item())
    return None


def _callback_states(ckpt: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    states = ckpt.get("callbacks")
    if not isinstance(states, Mapping):
        return []
    return [(str(k), v) for k, v in states.items() if isinstance(v, Mapping)]


def _find_probe_dict(state: Mapping[str, Any], depth: int = 0) -> Mapping[str, Any] | None:
    if state.get("format") == PROBE_FORMAT:
        return state
    if depth >= 2:
        return None
    for value in state.values():
        if isinstance(value, Mapping):
            found = _find_probe_dict(value, depth + 1)
            if found is not None:
                return found
    return None


def checkpoint_probe(ckpt: Mapping[str, Any], *, origin: str = "checkpoint") -> ProbeSet | None:
    """The probe set stored by ``PairExplanationCallback`` in a checkpoint, or ``None``.

    The callback keeps its probe set in its ``state_dict()``, which Lightning saves under
    ``checkpoint["callbacks"][<state key>]``; the probe is recognised by its format tag, so any
    state key (several callback instances, either Lightning namespace) works. The first stored
    probe set is returned.

    Raises:
        CheckpointError: if a stored probe set is malformed.
    """
    for key, state in _callback_states(ckpt):
        found = _find_probe_dict(state)
        if found is not None:
            try:
                return ProbeSet.from_dict(dict(found), origin=f"{origin} (callback {key})")
            except ValueError as err:
                raise CheckpointError(str(err)) from err
    return None


def recorded_class_path(ckpt: Mapping[str, Any]) -> str | None:
    """The LightningModule class path recorded in a checkpoint, or ``None``.

    Looked up in the callback states (``model_class`` and similar keys, as
    ``PairExplanationCallback`` records ``type(pl_module)``), then in the hyper-parameters
    (``_class_path``, which LightningCLI stores).
    """
    for _, state in _callback_states(ckpt):
        if not str(state.get("format", "")).startswith("lightning-explain"):
            continue
        for key in _CLASS_PATH_KEYS:
            value = state.get(key)
            if isinstance(value, str) and value:
                return value
    hparams = ckpt.get("hyper_parameters")
    if isinstance(hparams, Mapping):
        value = hparams.get("_class_path")
        if isinstance(value, str) and value:
            return value
    return None


def checkpoint_meta(path: PathLike, ckpt: Mapping[str, Any]) -> CheckpointMeta:
    """Epoch, global step, recorded class path and probe shape of a loaded checkpoint."""
    probe = checkpoint_probe(ckpt, origin=str(path))
    shape = None if probe is None else tuple(int(s) for s in probe.x1.shape[1:])
    return CheckpointMeta(
        path=Path(path),
        epoch=_int_or_none(ckpt.get("epoch")),
        global_step=_int_or_none(ckpt.get("global_step")),
        class_path=recorded_class_path(ckpt),
        probe_shape=None if shape is None else (shape[0], shape[1], shape[2]),
    )


def from_one_run(metas: Sequence[CheckpointMeta]) -> bool:
    """Whether checkpoints look like one training run: at least two, all in one folder (as
    ModelCheckpoint writes them), the same recorded class path, and distinct recorded epochs or
    global steps."""
    if len(metas) < 2:
        return False
    if len({m.path.resolve().parent for m in metas}) != 1:
        return False
    if len({m.class_path for m in metas}) != 1:
        return False
    steps = [m.global_step for m in metas]
    epochs = [m.epoch for m in metas]
    distinct_steps = None not in steps and len(set(steps)) == len(steps)
    distinct_epochs = None not in epochs and len(set(epochs)) == len(epochs)
    return distinct_steps or distinct_epochs


# --------------------------------------------------------------------------------------------------
# Class paths


def _public_classes(module: object) -> list[str]:
    here = getattr(module, "__name__", None)
    return sorted(
        name
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and not name.startswith("_")
        and issubclass(value, nn.Module)
        and getattr(value, "__module__", "") == here
    )


def resolve_class(class_path: str) -> type[nn.Module]:
    """Import the ``nn.Module`` subclass named by ``"pkg.module:Class"`` (or ``"pkg.module.Class"``).

    Args:
        class_path: module path and class name, separated by ``:`` (or a final ``.``); nested
            attributes (``"pkg.mod:Outer.Inner"``) are followed.

    Returns:
        The class.

    Raises:
        CheckpointError: saying which part failed: the module (and the import error it raised),
            the attribute (listing the module's ``nn.Module`` classes), or a non-module class.
    """
    text = class_path.strip()
    if ":" in text:
        module_name, _, attr_path = text.partition(":")
    else:
        module_name, _, attr_path = text.rpartition(".")
    if not module_name or not attr_path or any(not p for p in attr_path.split(".")):
        raise CheckpointError(
            f"The class path {class_path!r} is malformed: expected 'package.module:ClassName' "
            f"(for example 'my_project.models:SimCLRModule')."
        )
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        try:
            importlib.import_module(prefix)
        except ModuleNotFoundError as err:
            if err.name is not None and (err.name == prefix or prefix.startswith(err.name + ".")):
                where = "" if i == 1 else f" (its parent {'.'.join(parts[: i - 1])!r} imported)"
                raise CheckpointError(
                    f"Cannot import the class path {class_path!r}: there is no module "
                    f"{prefix!r}{where}. Check the spelling, install the package, or run from the "
                    f"folder that contains it (the current directory is on the import path)."
                ) from err
            raise CheckpointError(
                f"Cannot import the class path {class_path!r}: importing module {prefix!r} failed "
                f"because it imports {err.name!r}, which is not installed ({err})."
            ) from err
        except Exception as err:
            raise CheckpointError(
                f"Cannot import the class path {class_path!r}: importing module {prefix!r} raised "
                f"{_first_line(err)}. Fix the module or pass another --model-class."
            ) from err
    obj: object = importlib.import_module(module_name)
    walked = module_name
    for name in attr_path.split("."):
        if not hasattr(obj, name):
            classes = _public_classes(obj) if inspect.ismodule(obj) else []
            listed = (
                f" nn.Module classes defined there: {', '.join(classes)}."
                if classes
                else " It defines no nn.Module class."
            )
            raise CheckpointError(
                f"Cannot import the class path {class_path!r}: module {module_name!r} imported, "
                f"but {walked!r} has no attribute {name!r}.{listed}"
            )
        obj = getattr(obj, name)
        walked = f"{walked}.{name}"
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        raise CheckpointError(
            f"The class path {class_path!r} names {obj!r}, which is not a LightningModule (or "
            f"nn.Module) class."
        )
    return obj


def _is_lightning_module(cls: type) -> bool:
    return any(
        k.__name__ == "LightningModule"
        and k.__module__.split(".")[0] in ("pytorch_lightning", "lightning")
        for k in cls.__mro__
    )


# --------------------------------------------------------------------------------------------------
# Building the module


def build_module(
    path: PathLike,
    ckpt: Mapping[str, Any],
    *,
    model_class: str | None = None,
    model_factory: str | None = None,
    trust: bool = False,
) -> nn.Module:
    """Instantiate the checkpoint's module and load its weights, on the CPU, in eval mode.

    A LightningModule class is loaded with its public ``load_from_checkpoint`` (hyper-parameters
    saved by ``save_hyperparameters()``, ``on_load_checkpoint``, strict state-dict loading), with
    ``weights_only`` as for :func:`load_checkpoint`. A plain ``nn.Module`` class is built from the
    hyper-parameters its ``__init__`` accepts and given ``checkpoint["state_dict"]``.

    Args:
        path: the checkpoint file (read again by ``load_from_checkpoint``).
        ckpt: the checkpoint dict from :func:`load_checkpoint`.
        model_class: ``"pkg.module:Class"``; default: the class path recorded in the checkpoint
            (see :func:`recorded_class_path`), used only with ``trust=True``: importing a module
            runs its code, and a recorded path is text from the file (``"evilmod:Model"`` with
            an ``evilmod.py`` planted in the working directory would run).
        model_factory: ``"pkg.module:function"`` returning the module instead of a class, for
            models defined in a script (lightly's examples define theirs in ``__main__``): called
            with the checkpoint's hyper-parameters it accepts, then given the checkpoint's
            ``state_dict`` (strict). Excludes ``model_class``.
        trust: the file is trusted: its recorded class path may be imported and
            ``weights_only=False`` is allowed. Default ``False``.

    Returns:
        The module in eval mode.

    Raises:
        CheckpointError: no class path, a class path that does not import, hyper-parameters the
            class does not accept, or weights that do not fit the class.
    """
    p = Path(path)
    if model_factory is not None:
        if model_class is not None:
            raise CheckpointError(
                "Pass either --model-class or --model-factory, not both: a factory builds the "
                "module itself."
            )
        return _from_factory(p, ckpt, model_factory)
    recorded = recorded_class_path(ckpt)
    class_path = model_class or recorded
    if class_path is None:
        raise CheckpointError(
            f"The checkpoint {str(p)!r} does not record which LightningModule class it belongs to. "
            f"Pass --model-class package.module:ClassName (the class you trained, importable from "
            f"the current directory or an installed package)."
        )
    if model_class is None and recorded is not None and recorded.startswith("__main__:"):
        raise CheckpointError(
            f"The checkpoint {str(p)!r} records the class {recorded!r}: a class defined in the "
            f"script that trained it (as in lightly's examples), which cannot be imported. Pass "
            f"--model-factory package.module:function with a function that builds the model "
            f"(the script's model code, importable), or --model-class package.module:ClassName "
            f"for a copy of the class in an importable module."
        )
    if model_class is None and not trust:
        module_name = recorded.partition(":")[0] if recorded else ""
        raise CheckpointError(
            f"The checkpoint {str(p)!r} records the model class {recorded!r}. Importing it would "
            f"run the code of module {module_name!r}, and a class path recorded in a file is used "
            f"only for files you trust. Pass --model-class {recorded} (after checking that it is "
            f"the class you trained), or --trust-checkpoint if you trust the file's origin."
        )
    cls = resolve_class(class_path)
    name = f"{cls.__module__}.{cls.__qualname__}"
    try:
        if _is_lightning_module(cls):
            module: nn.Module = cls.load_from_checkpoint(  # type: ignore[attr-defined]
                p, map_location="cpu", weights_only=not trust
            )
        else:
            hparams = dict(ckpt.get("hyper_parameters") or {})
            params = inspect.signature(cls.__init__).parameters
            if not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
                hparams = {k: v for k, v in hparams.items() if k in params}
            module = cls(**hparams)
            module.load_state_dict(ckpt["state_dict"])
    except CheckpointError:
        raise
    except TypeError as err:
        raise CheckpointError(
            f"Cannot build {name} from the hyper-parameters saved in {str(p)!r}: "
            f"{_first_line(err)}. Call self.save_hyperparameters() in __init__ when training, or "
            f"check that --model-class names the class the checkpoint was trained with."
        ) from err
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:400]
        raise CheckpointError(
            f"The weights in {str(p)!r} do not fit {name}: {detail}. Check that --model-class names "
            f"the class the checkpoint was trained with and its hyper-parameters match."
        ) from err
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"The checkpoint {str(p)!r} holds Python objects a safe load refuses "
            f"({', '.join(_unsafe_globals(p, err)) or 'unknown globals'}); loading it as {name} "
            f"needs --trust-checkpoint, which can run code stored in the file."
        ) from err
    module.eval()
    return module


def _from_factory(path: Path, ckpt: Mapping[str, Any], factory: str) -> nn.Module:
    """Build the module with ``factory`` and load the checkpoint's weights into it."""
    from lightning_explain._lightning import resolve_dotted

    try:
        fn = resolve_dotted(factory, argument="--model-factory", owner="build_module")
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    if not callable(fn):
        raise CheckpointError(
            f"--model-factory {factory!r} names a {type(fn).__name__}, not a function."
        )
    hparams = dict(ckpt.get("hyper_parameters") or {})
    try:
        params = inspect.signature(fn).parameters
        if not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
            hparams = {k: v for k, v in hparams.items() if k in params}
    except (TypeError, ValueError):  # builtins without a signature: call without arguments
        hparams = {}
    try:
        module = fn(**hparams)
    except Exception as err:
        raise CheckpointError(
            f"--model-factory {factory!r} raised {_first_line(err)} when called with "
            f"{sorted(hparams) or 'no arguments'}."
        ) from err
    if not isinstance(module, nn.Module):
        raise CheckpointError(
            f"--model-factory {factory!r} returned {type(module).__name__}; expected an nn.Module "
            f"(the LightningModule that was trained)."
        )
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:400]
        raise CheckpointError(
            f"The weights in {str(path)!r} do not fit the module built by --model-factory "
            f"{factory!r} ({type(module).__name__}): {detail}."
        ) from err
    module.eval()
    return module
