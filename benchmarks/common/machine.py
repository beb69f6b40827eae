"""What a benchmark record says about where and how it was made: the machine, its load, the checkout, the command."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def machine_description(torch_threads: bool = True) -> str:
    """Cores, CPU model and whether this is a virtual machine, e.g. ``2-core AMD EPYC VM, CPU only``, and (with
    ``torch_threads``) the benchmarks' usual ``torch 1 thread per run``."""
    model, virtual = platform.processor() or platform.machine(), False
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        model = names[0] if names else model
        virtual = any(line.startswith("flags") and " hypervisor" in line for line in lines)
    threads = ", torch 1 thread per run" if torch_threads else ""
    return f"{os.cpu_count()}-core {model}{' VM' if virtual else ''}, CPU only{threads}"


def load_average() -> str:
    """The load averages against the core count (a timing is only as good as the machine is idle)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def checkout_commit() -> str:
    """This checkout's commit, and whether the ``sb3_trpo`` package has uncommitted changes (``unknown`` without git)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "sb3_trpo"):
        commit += " with uncommitted changes in sb3_trpo/"
    return commit


def command_line(module: str, argv: Sequence[str]) -> str:
    """The command that reproduces this invocation: ``python -m <module> <argv>``."""
    return " ".join(["python", "-m", module, *(shlex.quote(arg) for arg in argv)])


def profile_shares(profile_stats: Any, parts: Sequence[tuple[str, str]], width: int = 42) -> list[str]:
    """One line per ``(label, "file.py:function")`` of ``parts``: that function's cumulative share of the profiled
    time (a ``pstats.Stats``). ``ValueError`` when no such function was profiled, so that a renamed function cannot
    show as 0%."""
    total = profile_stats.total_tt
    cumulative = {f"{Path(file).name}:{name}": entry[3] for (file, _, name), entry in profile_stats.stats.items()}
    missing = [key for _, key in parts if key not in cumulative]
    if missing:
        raise ValueError(f"no profiled function named {missing}: update the profile's parts")
    return [f"  {label:{width}s} {100 * cumulative[key] / total:5.1f}%" for label, key in parts]


@dataclass
class Timing:
    """Accumulated env steps, wall-clock seconds (in all and in ``train()``) and iterations of one implementation in
    a speed comparison."""

    steps: int = 0
    total: float = 0.0
    train: float = 0.0
    iterations: int = 0

    @property
    def rate(self) -> float:
        return self.steps / self.total if self.total > 0 else float("nan")

    @property
    def train_share(self) -> float:
        return self.train / self.total if self.total > 0 else float("nan")
