"""What the machine can do fast: bf16 matmuls, AVX-512 kernels, a GPU. Read once from /proc/cpuinfo.

`precision: auto` and the 4-bit path of QLoRA decide from here, and every run and benchmark records the flags,
so a number measured on an avx512_bf16 machine is never mistaken for one from an AVX2-only laptop.
Light: torch is consulted only if the process has already imported it.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "amx_tile")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


# An AVX2-only CPU emulated on an AVX-512 one: torch's own kernels, MKL (fp32 matmuls) and oneDNN each have their
# own switch, and all three are needed — with ATEN_CPU_CAPABILITY alone, fp32 matmuls still run MKL's AVX-512 code
# (measured here: 300 vs 190 GFLOP/s at 2048²). `make timed-run EMULATE_AVX2=1` sets them.
AVX2_ENVIRONMENT = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def emulated_capability() -> str | None:
    """`ATEN_CPU_CAPABILITY=avx2` (or `default`) makes torch use its AVX2 kernels on an AVX-512 machine: we then
    treat the CPU as having no AVX-512 and no bf16, so that one machine can measure both paths. Named
    "avx2+mkl+onednn" when MKL and oneDNN are held to AVX2 as well (AVX2_ENVIRONMENT), as a faithful emulation
    needs."""
    value = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    if value not in ("avx2", "default"):
        return None
    libraries = os.environ.get("MKL_ENABLE_INSTRUCTIONS", "").upper() == "AVX2" and \
        os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2"
    return f"{value}+mkl+onednn" if libraries else value


def isa() -> dict[str, bool]:
    flags = cpu_flags()
    found = {flag: flag in flags for flag in ISA_FLAGS}
    if emulated_capability():
        found = {flag: value and flag == "avx2" for flag, value in found.items()}
    return found


def cuda_available() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available())


def bf16_fast() -> bool:
    """bf16 matmuls in hardware: A100-class GPUs, or CPUs with avx512_bf16 / AMX."""
    if cuda_available():
        import torch

        return torch.cuda.is_bf16_supported()
    flags = isa()
    return flags["avx512_bf16"] or flags["amx_bf16"]


def fast_4bit_kernels() -> bool:
    """bitsandbytes' CPU 4-bit (de)quantisation kernels are vectorised for AVX-512 only; on other CPUs they run
    scalar code, many times slower (and every training step dequantises every 4-bit weight twice)."""
    return cuda_available() or isa()["avx512f"]


def summary() -> str:
    flags = [flag for flag, present in isa().items() if present]
    emulated = f" (emulating {emulated_capability()})" if emulated_capability() else ""
    return f"{os.cpu_count()} cores, {' '.join(flags) or 'no vector flags found'}{emulated}"
