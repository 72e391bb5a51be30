"""The CPU a benchmark ran on: its model and the vector extensions that decide int8 and fp32 speed.

Every benchmark prints this beside its figures: int8 gains depend on the CPU (VNNI and AMX make int8
matrix multiplies several times faster; AVX2-only machines gain much less).
"""

from __future__ import annotations

import os
import platform

FLAGS = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
    "amx_int8": "AMX-INT8",
}


def cpu_info() -> dict[str, object]:
    """``{"model": ..., "extensions": [...], "cores": n}`` from /proc/cpuinfo (Linux), else platform."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "extensions": [name for flag, name in FLAGS.items() if flag in flags], "cores": cores}


def describe() -> str:
    info = cpu_info()
    return f"CPU: {info['model']} ({info['cores']} cores; {', '.join(info['extensions']) or 'no AVX2'})"


if __name__ == "__main__":
    print(describe())
