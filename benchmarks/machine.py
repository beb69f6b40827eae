"""The machine a benchmark ran on, in words (the one reader of /proc/cpuinfo)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_description() -> str:
    """Cores, CPU model and whether this is a virtual machine, e.g. ``2-core AMD EPYC VM, CPU only``."""
    model, virtual = platform.processor() or platform.machine(), False
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        model = names[0] if names else model
        virtual = any(line.startswith("flags") and " hypervisor" in line for line in lines)
    return f"{os.cpu_count()}-core {model}{' VM' if virtual else ''}, CPU only, torch 1 thread per run"
