"""What the machine computes natively, so that recipes choose precision by detection rather than assumption."""

from __future__ import annotations

import logging
from functools import lru_cache

import torch

logger = logging.getLogger(__name__)

#: CPU flags of native bfloat16 arithmetic (Linux `/proc/cpuinfo`).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: str = "cpu") -> tuple[bool, str]:
    """Whether `device` computes bfloat16 natively, and why (a sentence for the log). On a CPU without
    AVX512-BF16 or AMX, bfloat16 is emulated and many times slower than float32."""
    if device.startswith("cuda"):
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return supported, f"CUDA device {'supports' if supported else 'lacks'} bfloat16"
    flags = sorted(NATIVE_BF16_FLAGS & cpu_flags())
    if flags:
        return True, f"the CPU has {' and '.join(flags)}"
    return False, "the CPU has neither AVX512-BF16 nor AMX: bfloat16 would be emulated"


def choose_precision(requested: str, device: str = "cpu") -> tuple[bool, str]:
    """`(use_bf16, reason)` for a recipe's `precision` argument: `auto` (bfloat16 where native), `bf16` or `fp32`."""
    if requested not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {requested!r}.")
    native, reason = native_bf16(device)
    if requested == "fp32":
        return False, "float32 (asked for)"
    if requested == "bf16":
        return True, "bfloat16 autocast (asked for" + ("" if native else "; " + reason) + ")"
    return native, ("bfloat16 autocast: " if native else "float32: ") + reason
