"""Which device and which arithmetic: CUDA when present, bf16 where the hardware has it natively.

One place for both, used by extraction, fine-tuning, the advisor and style alike.
"""

from __future__ import annotations

import torch

from .errors import HeadstartError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise HeadstartError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'.") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise HeadstartError(f"device {device!r}, but PyTorch sees no CUDA GPU here; use 'auto' (CUDA where there is one) or 'cpu'.")
    return chosen


PRECISIONS = ("auto", "bf16", "fp32")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise HeadstartError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}.")
    return precision


def resolve_bf16(precision: str, device: torch.device) -> bool:
    """Whether to run in bfloat16: asked for, or "auto" on hardware with native bf16 arithmetic.
    A CPU without it (no AMX, no AVX512-BF16) would only emulate bf16, slower than fp32."""
    if check_precision(precision) != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    native = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return any(check is not None and check() for check in native)


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)
