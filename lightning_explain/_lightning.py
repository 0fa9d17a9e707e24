"""Namespace handling: ``lightning.pytorch`` and ``pytorch_lightning`` without importing either eagerly.

Both packages carry the same Trainer code under two names, and their classes are distinct
(``lightning.pytorch.Callback is not pytorch_lightning.Callback``). LightningCLI and
``is_overridden`` reject a callback from the other namespace, so the package keeps its callback logic
namespace-free (duck-typed on the Trainer's public attributes) and builds one class per namespace.
The core dependency is ``pytorch-lightning``; ``lightning`` may be absent.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, Literal

import torch

__all__ = [
    "Namespace",
    "callback_base",
    "check_strategy",
    "default_namespace",
    "gather_objects",
    "has_lightning",
    "import_namespace",
    "resolve_dotted",
    "saved_state",
    "trainer_device",
    "trainer_precision",
    "trainer_skips",
    "trainer_stage",
    "unsupported_strategy",
]

Namespace = Literal["lightning.pytorch", "pytorch_lightning"]

_UNSUPPORTED_STRATEGIES = {
    "FSDPStrategy": "FSDP",
    "DeepSpeedStrategy": "DeepSpeed",
    "ModelParallelStrategy": "ModelParallel",
}


def has_lightning() -> bool:
    """Whether the unified ``lightning`` package (``lightning.pytorch``) can be imported."""
    try:
        importlib.import_module("lightning.pytorch")
    except ImportError:
        return False
    return True


def default_namespace() -> Namespace:
    """``"lightning.pytorch"`` when installed, else ``"pytorch_lightning"``."""
    return "lightning.pytorch" if has_lightning() else "pytorch_lightning"


def import_namespace(namespace: Namespace) -> ModuleType:
    """Import ``lightning.pytorch`` or ``pytorch_lightning``.

    Raises:
        ModuleNotFoundError: with the install command, if the package is missing.
    """
    try:
        return importlib.import_module(namespace)
    except ImportError as err:
        package = "lightning" if namespace == "lightning.pytorch" else "pytorch-lightning"
        raise ModuleNotFoundError(
            f"`{namespace}` is not installed. Install it with `pip install {package}`."
        ) from err


def callback_base(namespace: Namespace) -> type:
    """The ``Callback`` base class of one namespace."""
    cls: type = import_namespace(namespace).Callback
    return cls


def unsupported_strategy(strategy: object) -> str | None:
    """The name of a sharded strategy the callback refuses (FSDP, DeepSpeed), else ``None``.

    Checked by class name along the MRO, so that it works for both namespaces and for subclasses.
    """
    for klass in type(strategy).__mro__:
        if klass.__name__ in _UNSUPPORTED_STRATEGIES:
            return _UNSUPPORTED_STRATEGIES[klass.__name__]
    return None


def check_strategy(strategy: object, *, owner: str) -> None:
    """Refuse sharded strategies (FSDP, DeepSpeed), whose parameters a single rank cannot run.

    Raises:
        ValueError: naming the strategy, what is supported and the alternative.
    """
    name = unsupported_strategy(strategy)
    if name is not None:
        raise ValueError(
            f"`{owner}` does not support the {name} strategy ({type(strategy).__name__}): it "
            f"explains the probe set on global rank 0 with the unsharded LightningModule, which "
            f"sharded parameters do not allow. Supported: single-device training and the DDP "
            f"family (strategy='ddp', 'ddp_spawn', 'ddp_fork', 'ddp_notebook'). Remove the "
            f"callback and explain saved checkpoints instead."
        )


def resolve_dotted(path: str, *, argument: str, owner: str) -> Any:
    """Import ``"pkg.mod:attr.sub"`` or ``"pkg.mod.attr"`` and return the object.

    Raises:
        ValueError: naming ``argument`` if the path cannot be imported.
    """
    if ":" in path:
        module_name, _, attr_path = path.partition(":")
        candidates = [(module_name, attr_path)]
    else:
        parts = path.split(".")
        candidates = [
            (".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)
        ]
    errors: list[str] = []
    for module_name, attr_path in candidates:
        if not module_name or not attr_path:
            continue
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as err:
            errors.append(f"{module_name}: {err}")
            continue
        try:
            for name in attr_path.split("."):
                obj = getattr(obj, name)
        except AttributeError as err:
            errors.append(f"{module_name}:{attr_path}: {err}")
            continue
        return obj
    detail = f" ({'; '.join(errors)})" if errors else ""
    raise ValueError(
        f"`{owner}`: could not import `{argument}={path!r}`{detail}. Expected a dotted path "
        f"'package.module:function' or 'package.module.function'."
    )


# --------------------------------------------------------------------------------------------------
# Public Trainer attributes, read the same way in both namespaces


def trainer_device(trainer: Any, pl_module: Any) -> torch.device:
    """The device the strategy runs the module on (``strategy.root_device``), else the device of
    the module's parameters, else the CPU."""
    device = getattr(getattr(trainer, "strategy", None), "root_device", None)
    if isinstance(device, torch.device):
        return device
    return next((p.device for p in pl_module.parameters()), torch.device("cpu"))


def trainer_precision(trainer: Any) -> Any:
    """The trainer's precision plugin (``None`` if it has none)."""
    plugin = getattr(trainer, "precision_plugin", None)
    if plugin is None:
        plugin = getattr(getattr(trainer, "strategy", None), "precision_plugin", None)
    return plugin


def trainer_stage(trainer: Any) -> str:
    """``"fit"``, ``"validate"``, ... (``trainer.state.fn``)."""
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    return str(getattr(fn, "value", fn))


def trainer_skips(trainer: Any) -> bool:
    """Whether callbacks should skip work now: the sanity check or ``fast_dev_run``."""
    return bool(trainer.sanity_checking) or bool(trainer.fast_dev_run)


def saved_state(
    checkpoint: Mapping[str, Any],
    callback: Any,
    trainer: Any,
    state_format: str,
    *,
    config_hash: object,
) -> tuple[str, Mapping[str, Any]] | None:
    """The state of ``callback`` saved under another key: the one state of format
    ``state_format`` that no callback of the trainer claims (among several, the one with the same
    ``config_hash``); ``None`` when the checkpoint has the callback's own key, or no unambiguous
    candidate. Lets a callback whose ``state_key`` holds its settings keep its state when those
    settings change."""
    states = checkpoint.get("callbacks") or {}
    if not isinstance(states, Mapping) or callback.state_key in states:
        return None
    taken = {getattr(cb, "state_key", None) for cb in getattr(trainer, "callbacks", [])}
    found = [
        (str(key), state)
        for key, state in states.items()
        if isinstance(state, Mapping) and state.get("format") == state_format and key not in taken
    ]
    if len(found) > 1:
        found = [(k, v) for k, v in found if v.get("config_hash") == config_hash]
    return found[0] if len(found) == 1 else None


def scatter_objects(objs: Sequence[Any] | None, *, rank: int, world_size: int) -> Any:
    """Rank ``r`` gets ``objs[r]`` of rank 0 (other ranks pass ``None``); a collective: every
    rank of the default process group must call it. With one process: ``objs[0]``."""
    import torch.distributed as dist

    if world_size < 2 or not (dist.is_available() and dist.is_initialized()):
        return objs[0] if objs else None
    out: list[Any] = [None]
    dist.scatter_object_list(out, list(objs) if rank == 0 and objs is not None else None, src=0)
    return out[0]


def gather_objects(obj: Any, *, rank: int, world_size: int) -> list[Any]:
    """``obj`` of every rank, in rank order, on rank 0 (``[]`` elsewhere); a collective: every
    rank of the default process group must call it. With one process: ``[obj]``."""
    import torch.distributed as dist

    if world_size < 2 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] | None = [None] * world_size if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return list(out) if out is not None else []
