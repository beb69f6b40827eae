"""Argument checks that raise before anything is built, naming the argument and what it allows."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence


def check_choice(name: str, value: object, allowed: Sequence[str]) -> None:
    """``name`` must be one of the ``allowed`` strings (``TypeError`` if not a string, else ``ValueError``)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {list(allowed)}; got {value!r}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}; got {value!r}")


def check_bool(name: str, value: object) -> None:
    """``name`` must be ``True`` or ``False`` (``TypeError`` otherwise: ``"no"`` or ``1`` is not a bool)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}")


def check_int(name: str, value: object, minimum: int) -> None:
    """``name`` must be an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def check_real(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """``name`` must be a finite real number (not a bool) within the given bounds."""
    lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
    hi = "" if high is None else f"{high}" + (")" if high_open else "]")
    allowed = f"in {lo}, {hi}" if low is not None and high is not None else f"{'>' if low_open else '>='} {low}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number {allowed}; got {value!r}")
    x = float(value)
    ok = math.isfinite(x)
    if low is not None:
        ok = ok and (x > low if low_open else x >= low)
    if high is not None:
        ok = ok and (x < high if high_open else x <= high)
    if not ok:
        raise ValueError(f"{name} must be {allowed}; got {value!r}")
