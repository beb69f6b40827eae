"""The zoo CLI run in the test process, shared by the zoo tests."""

from __future__ import annotations

from pathlib import Path

import torch as th

from sb3_trpo.zoo import main


def zoo(*args: str | Path) -> None:
    """Run ``python -m sb3_trpo.zoo <args>`` in this process (a zoo run changes torch's thread count: restore it)."""
    threads = th.get_num_threads()
    try:
        main([str(arg) for arg in args])
    finally:
        th.set_num_threads(threads)
