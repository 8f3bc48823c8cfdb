"""Where and how a stage computes: device, precision, memory format and its place among processes.

One :class:`Runtime` is built per process from the ``runtime`` params section and handed to every
loop, extractor and evaluator, so that pre-training, fine-tuning, SpCL, evaluation, search and
explain all run on the same device with the same precision.

Precision: ``bf16`` autocasts the networks to bfloat16; projection heads, losses, distances and
metrics run in float32 (the losses are wrapped in :func:`full_precision`), so a metric never
depends on the precision of a distance. ``auto`` is bf16 on CUDA devices that support it and
fp32 on CPUs: on this project's CPU geometry (ResNet-18, 64x32, batch 64) bf16 autocast measured
no faster than fp32 on an AMX Xeon (MoCo 1.02x, UP-ReID 0.77x; ``benchmarks/bench_pretrain.py``),
and oneDNN's AMX bf16 convolution produced NaN from finite inputs on small maps (a stride-2 3x3
conv from 4x2 to 2x1, in 1-3 of 12 forward passes). An explicit ``bf16`` on a CPU therefore caps
oneDNN at AVX-512 BF16 (``ONEDNN_MAX_CPU_ISA``), where the same case gave no NaN in 12.
On both ISAs, oneDNN's bf16 *weight gradient* of a strided convolution with a one-pixel-wide
output is wrong (1e37, inf or NaN; measured on an AVX-512 BF16 EPYC, capped or not). The trunk
runs every strided convolution whose output is one pixel wide or tall in float32, forward and
backward (:class:`upreid.models.backbone.OnePixelSafeConv2d`; the AMX case above is one of them),
and the training loop stops on a non-finite gradient as on a non-finite loss.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

Precision = Literal["fp32", "bf16"]
PRECISIONS = ("auto", "fp32", "bf16")
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=nn.Module)


class DeviceError(ValueError):
    """A device or precision that this machine cannot provide."""


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` (this process's local rank) or ``cuda:N``.

    Under ``torchrun`` each process takes the GPU of its local rank for ``auto`` and ``cuda``.
    """
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "auto":
        return (
            torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        )
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"runtime.device is {spec!r} but no CUDA device is available; use 'auto' or 'cpu'"
            )
        index = local_rank if spec == "cuda" else int(spec.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"runtime.device {spec!r}: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return torch.device(f"cuda:{index}")
    raise DeviceError(f"runtime.device: {spec!r} is not auto, cpu, cuda or cuda:N")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (Intel AMX, AVX-512 BF16) that oneDNN uses."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return torch.backends.mkldnn.is_available() and any(
        flag in flags for flag in ("amx_bf16", "avx512_bf16")
    )


def resolve_precision(spec: str, device: torch.device) -> Precision:
    """``fp32``, ``bf16`` or ``auto`` (bf16 on CUDA devices with bf16, else fp32)."""
    if spec not in PRECISIONS:
        raise DeviceError(f"runtime.precision: {spec!r} is not one of {list(PRECISIONS)}")
    if spec == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return "bf16" if cuda_bf16 else "fp32"
    return spec  # type: ignore[return-value]


def avoid_amx_bf16_convolution() -> None:
    """Cap oneDNN at AVX-512 BF16 for CPU bf16 (see the module docstring), unless the user set
    ``ONEDNN_MAX_CPU_ISA``. It takes effect only when set before the process's first
    convolution (a bf16 run after fp32 ones in one process still meets the AMX kernel: measured,
    NaN at step 1); stages build their runtime first."""
    if cpu_has_native_bf16():
        os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")


@dataclass(frozen=True)
class Runtime:
    """This process's device, precision and memory format, and its rank among ``world``."""

    device: torch.device
    precision: Precision = "fp32"
    channels_last: bool = False
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.precision == "bf16" and self.device.type == "cpu":
            avoid_amx_bf16_convolution()

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> AbstractContextManager[Any]:
        """bfloat16 autocast on this device when the precision is bf16, else a no-op."""
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        )

    def images(self, x: Tensor) -> Tensor:
        """A batch of images (B, 3, H, W) on the device, in the memory format."""
        return x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def place(self, model: M) -> M:
        """``model`` moved to the device and memory format, in place."""
        # torch's stubs lack the (device, memory_format) overload that Module.to accepts
        return model.to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` under DDP when there are several processes (one device each)."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def embedder(
        self, model: nn.Module, output: Callable[[Any], Tensor] | None = None
    ) -> Callable[[Tensor], Tensor]:
        """``(B, 3, H, W) -> (B, E)`` float32 features of ``model`` in eval mode, computed on the
        device; ``output`` picks the feature from the model's output (default: the output)."""
        model.eval()
        pick = output or (lambda out: out)

        def embed(x: Tensor) -> Tensor:
            with self.autocast():
                return pick(model(self.images(x))).float()

        return embed

    def describe(self) -> dict[str, Any]:
        """What ran where, for the run's params and logs."""
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {
            "device": str(self.device),
            "device_name": name,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "world": self.world,
        }


CPU = Runtime(torch.device("cpu"))  # one process on the CPU in fp32: the library's default


def build_runtime(device: str, precision: str, channels_last: bool) -> Runtime:
    """This process's runtime: ``torchrun``'s ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` when
    set, the device and precision resolved for this machine."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return Runtime(dev, resolve_precision(precision, dev), channels_last, rank, world, local_rank)


def full_precision(fn: F) -> F:
    """Run ``fn`` in float32 whatever autocast is active: floating tensor arguments are cast to
    float32 and autocast is off inside (losses and similarities need the range and precision)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        def up(v: Any) -> Any:
            return v.float() if isinstance(v, Tensor) and v.is_floating_point() else v

        args = tuple(up(a) for a in args)
        kwargs = {k: up(v) for k, v in kwargs.items()}
        device = next(
            (a.device.type for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), "cpu"
        )
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
