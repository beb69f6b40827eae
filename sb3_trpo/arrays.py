"""Batches of observations and actions: the one place where they are indexed, joined and converted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

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


def join_observations(first: th.Tensor | dict[str, th.Tensor], second: th.Tensor | dict[str, th.Tensor]) -> Any:
    """Two observation batches (tensors, or dicts of them) joined along the first axis (dicts key by key)."""
    if isinstance(first, dict):
        assert isinstance(second, dict)
        return {key: th.cat([first[key], second[key]]) for key in first}
    assert isinstance(second, th.Tensor)
    return th.cat([first, second])


def tensors_like(observations: Any, like: th.Tensor | dict[str, th.Tensor], device: th.device | str) -> Any:
    """A batch of observation arrays (or a dict of them) as tensors of ``like``'s dtypes, key by key, on ``device``."""
    if isinstance(like, dict):
        return {key: th.as_tensor(observations[key], dtype=value.dtype, device=device) for key, value in like.items()}
    return th.as_tensor(observations, dtype=like.dtype, device=device)


def batch_length(observations: np.ndarray | th.Tensor | dict[str, Any]) -> int:
    """The number of rows of an observation batch (an array or tensor, or a dict of them)."""
    if isinstance(observations, dict):
        return len(next(iter(observations.values())))
    return len(observations)


def buffer_rows(values: np.ndarray | dict[str, np.ndarray], steps: np.ndarray, env_indices: np.ndarray) -> Any:
    """The entries ``(steps[n], env_indices[n])`` of a rollout buffer's ``(n_steps, n_envs, ...)`` array (or dict of
    them), one row per pair."""
    if isinstance(values, dict):
        return {key: value[steps, env_indices] for key, value in values.items()}
    return values[steps, env_indices]
