"""NumPy's BLAS on one thread, for the fast path's small matrices."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from threadpoolctl import ThreadpoolController


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()  # inspects the loaded libraries: once per process


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run NumPy's BLAS on one thread inside the block.

    The mirror's matrices are small (a batch of a few thousand rows times 64-unit layers): a second BLAS thread
    gains little on an idle core and stalls when that core is busy (env workers, parallel runs).
    """
    with _blas_controller().select(user_api="blas").limit(limits=1):
        yield
