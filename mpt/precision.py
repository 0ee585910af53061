"""A run's numeric precision: fp32, or bf16 mixed precision (autocast: matmuls in bf16, the trainable weights
and the losses in fp32), and `auto`, which takes bf16 where the device computes it natively.

On this project's CPU (AVX512-BF16) bf16 halves the time of the frozen encoder's matmuls; on a CPU without
native bf16 it would be emulated, and slower than fp32, so `auto` keeps fp32 there. `python -m benchmarks.run --only
precision` measures both, and docs/defaults.md the accuracy of each.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from mpt.config import PRECISIONS


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 matmuls natively (CUDA from Ampere on; a CPU with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`fp32` or `bf16`: `auto` resolved for `device`, the others as given."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is unknown: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


@contextlib.contextmanager
def autocast(precision: str, device: torch.device, training: bool = False) -> Iterator[None]:
    """The context a forward pass runs in at `precision` (a resolved one: fp32 or bf16)."""
    if precision != "bf16":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        if training and device.type == "cpu":
            # the CPU flash-attention kernel's bf16 backward is ~4x slower than its fp32 one (torch 2.13,
            # measured), while the math kernel's bf16 matmuls are fast: train with that one, evaluate with flash
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel([SDPBackend.MATH]):
                yield
        else:
            yield
