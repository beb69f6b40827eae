"""Batches of observations and actions: the one place where they are indexed, joined and converted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch as th
from gymnasium import spaces

Batch = TypeVar("Batch", np.ndarray, th.Tensor)
Observation = np.ndarray | dict[str, np.ndarray]  # a batch of observations as a VecEnv returns it


def index_obs(observations: Batch | dict[str, Batch], index: slice | np.ndarray | None) -> Batch | dict[str, Batch]:
    """Rows ``index`` of an observation batch (an array or tensor, or a dict of them); ``None`` keeps all rows."""
    if index is None:
        return observations
    if isinstance(observations, dict):
        return {key: value[index] for key, value in observations.items()}
    return observations[index]


def concat_obs(parts: Sequence[np.ndarray | dict[str, np.ndarray]]) -> np.ndarray | dict[str, np.ndarray]:
    """Observation batches joined along the first axis (dicts key by key)."""
    first = parts[0]
    if isinstance(first, dict):
        return {key: np.concatenate([part[key] for part in parts]) for key in first}  # type: ignore[index]
    return np.concatenate(parts)  # type: ignore[arg-type]


def action_tensor(actions: np.ndarray | th.Tensor, space: spaces.Space, device: th.device | str = "cpu") -> th.Tensor:
    """Actions as SB3's ``Distribution.log_prob`` takes them: ``long`` indices ``(n,)`` for ``Discrete`` (the rollout
    buffer stores them as floats ``(n, 1)``), float tensors otherwise."""
    if isinstance(space, spaces.Discrete):
        return th.as_tensor(actions, device=device).long().reshape(-1)
    return th.as_tensor(actions, dtype=th.float32, device=device)
