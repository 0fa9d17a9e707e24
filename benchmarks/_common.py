"""What the benchmark scripts share: the ResNet-18 embedding, a forward recorder, timing and the
machine line. Imported by the scripts (``python benchmarks/bench_*.py``), not run itself."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn


def resnet18_embedding(device: torch.device) -> nn.Module:
    """torchvision ``resnet18(weights=None)`` (seed 0, nothing downloaded), ``fc = Identity``,
    in eval mode on ``device``."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = resnet18(weights=None)
    net.fc = nn.Identity()
    model: nn.Module = net.eval().to(device)
    return model


class ForwardRecorder(nn.Module):
    """Wraps an embedding model; records every forward's ``(batch size, autograd on)``, the largest
    input in bytes, and with ``record_inputs`` a copy of every input batch."""

    def __init__(self, net: nn.Module, record_inputs: bool = False) -> None:
        super().__init__()
        self.net = net
        self.calls: list[tuple[int, bool]] = []
        self.max_bytes = 0
        self.inputs: list[Tensor] | None = [] if record_inputs else None

    def forward(self, x: Tensor) -> Tensor:
        grad = torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        self.calls.append((int(x.shape[0]), grad))
        self.max_bytes = max(self.max_bytes, x.numel() * x.element_size())
        if self.inputs is not None:
            self.inputs.append(x.clone())
        z: Tensor = self.net(x)
        return z

    @property
    def images(self) -> int:
        """Images forwarded so far."""
        return sum(n for n, _ in self.calls)

    def max_batch(self, grad: bool) -> int:
        """The largest batch forwarded with autograd on (``grad``) or off; 0 if none."""
        return max((n for n, g in self.calls if g == grad), default=0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn`` (CUDA work included)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    return statistics.median(timed(fn, device) for _ in range(repeats))


def machine_line(device: torch.device) -> str:
    """``device: cpu (torch 2.x, threads: N)``, the start of the scripts' first line."""
    return f"device: {device} (torch {torch.__version__}, threads: {torch.get_num_threads()})"
