"""What is explained: the ``(B, D)`` embedding of a (Lightning) module, named by a spec.

The training callback, ``lightning-explain compare`` and ``report`` accept the same ``embedding``
specs and resolve them here:

* ``"forward"``: ``module(x)``;
* an attribute path such as ``"backbone"`` or ``"model.encoder"``: ``module.backbone(x)``, flattened
  to ``(B, D)`` when the output has more dimensions (pooled ``(B, D, 1, 1)`` features);
* a dotted function path ``"pkg.mod:fn"`` (or ``"pkg.mod.fn"``): ``fn(module, x)``;
* a callable ``fn(module, x) -> (B, D)``.

:func:`bind_embedding` turns a resolved spec into the ``x -> z`` callable that the methods and
metrics take: a ``functools.partial`` over the module, so that the guest guard and layer lookup
find the module behind it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Union

import torch
from torch import Tensor, nn

from lightning_explain._checks import describe
from lightning_explain._lightning import resolve_dotted

__all__ = [
    "EmbeddingFn",
    "EmbeddingSpec",
    "attribute_embedding",
    "bind_embedding",
    "check_embedding_spec",
    "forward_embedding",
    "resolve_embedding",
]

EmbeddingFn = Callable[[Any, Tensor], Tensor]
"""``(module, x) -> z``: the embedding of ``(B, C, H, W)`` images as ``(B, D)``."""

EmbeddingSpec = Union[str, EmbeddingFn]


def forward_embedding(module: Any, x: Tensor) -> Tensor:
    """``module(x)``: the embedding of ``embedding="forward"``."""
    z: Tensor = module(x)
    return z


def attribute_embedding(path: str, module: Any, x: Tensor) -> Tensor:
    """The output of the submodule or method at the dotted ``path`` of ``module``, flattened to
    ``(B, D)`` when it has more than two dimensions."""
    target: Any = module
    for part in path.split("."):
        target = getattr(target, part)
    z = target(x)
    if isinstance(z, Tensor) and z.ndim > 2:
        z = z.flatten(1)
    out: Tensor = z
    return out


def _has_attribute_path(module: object, path: str) -> bool:
    target: object = module
    for part in path.split("."):
        if not part.isidentifier() or not hasattr(target, part):
            return False
        target = getattr(target, part)
    return callable(target)


def check_embedding_spec(
    spec: object, *, argument: str = "embedding", owner: str
) -> EmbeddingFn | None:
    """Check a spec without the module; resolve what needs no module (callables, ``"forward"``,
    ``"pkg.mod:fn"``). ``None``: an attribute path, resolved against the module later.

    Raises:
        TypeError: for something that is not a non-empty string or a callable.
        ValueError: for a ``"pkg.mod:fn"`` path that does not import.
    """
    if callable(spec) and not isinstance(spec, str):
        fn: EmbeddingFn = spec  # type: ignore[assignment]
        return fn
    if not isinstance(spec, str) or not spec:
        raise TypeError(
            f"`{owner}`: expected `{argument}` to be 'forward', an attribute path of the "
            f"LightningModule such as 'backbone', a dotted function path 'pkg.mod:fn', or a "
            f"callable (module, x) -> (B, D), but got {describe(spec)}."
        )
    if spec == "forward":
        return forward_embedding
    if ":" in spec:
        obj = resolve_dotted(spec, argument=argument, owner=owner)
        if not callable(obj):
            raise TypeError(
                f"`{owner}`: `{argument}={spec!r}` is not callable; expected a function "
                f"(module, x) -> (B, D)."
            )
        found: EmbeddingFn = obj
        return found
    return None


def resolve_embedding(
    spec: object, module: Any, *, argument: str = "embedding", owner: str
) -> EmbeddingFn:
    """Resolve a spec against ``module`` into ``fn(module, x) -> z``.

    Raises:
        ValueError: for an attribute path the module lacks (the message lists its submodules) that
            is not an importable function either.
        TypeError: for a spec of the wrong type.
    """
    if spec is None:
        spec = "forward"
    early = check_embedding_spec(spec, argument=argument, owner=owner)
    if early is not None:
        return early
    path = str(spec)
    if _has_attribute_path(module, path):
        return functools.partial(attribute_embedding, path)
    try:
        obj = resolve_dotted(path, argument=argument, owner=owner)
    except ValueError:
        obj = None
    if obj is None or not callable(obj):
        names = [n for n, _ in module.named_children()] if isinstance(module, nn.Module) else []
        children = ", ".join(names)
        raise ValueError(
            f"`{owner}`: `{argument}={path!r}` is neither an attribute path of "
            f"{type(module).__name__} (its submodules: {children or 'none'}) nor an importable function. "
            f"Expected 'forward', an attribute path such as 'backbone' (meaning "
            f"`module.backbone(x).flatten(1)`), or 'pkg.mod:fn' with fn(module, x) -> (B, D)."
        )
    fn: EmbeddingFn = obj
    return fn


def _embed(fn: EmbeddingFn, precision: Any, module: Any, x: Tensor) -> Tensor:
    if precision is not None:
        x = precision.convert_input(x)
        with precision.forward_context():
            z = fn(module, x)
    else:
        z = fn(module, x)
    if isinstance(z, Tensor) and z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    return z


def bind_embedding(
    fn: EmbeddingFn, module: Any, precision: Any = None
) -> Callable[[Tensor], Tensor]:
    """The ``x -> z`` callable of a resolved embedding over ``module``.

    With a Lightning precision plugin (``trainer.precision_plugin``) the inputs are converted and
    the forward runs in its context, as in the training step; half-precision embeddings come back
    as float32. The result is a ``functools.partial`` whose arguments include ``module``, so the
    guest guard and the layer lookup of the class-activation methods find it.
    """
    return functools.partial(_embed, fn, precision, module)
