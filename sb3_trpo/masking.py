"""Invalid-action masks (sb3-contrib's maskable policies) where TRPO needs them beyond sb3-contrib's own code.

A mask has one entry per action of each component of the action space, in sb3-contrib's layout: ``n`` for
``Discrete(n)``, ``sum(nvec)`` for ``MultiDiscrete(nvec)`` (one block per component) and ``2 n`` for
``MultiBinary(n)`` (a block of two, "0" and "1", per bit); a true (non-zero) entry marks a valid action. sb3-contrib's
distributions apply them (invalid logits become ``-1e8``, probability 0); this module checks them
(:func:`check_action_masks`: shape, and a valid action in every block), carries them with a batch's states for the
policy step (:class:`MaskedStates`), and draws the vine's uniform first actions over the valid actions only
(:func:`uniform_valid_actions`, which keeps eq. 16's ``q`` covering the support of the masked policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_trpo.arrays import batch_length, index_obs, join_observations
from sb3_trpo.states import PolicyStates

MASKABLE_SPACES = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def read_action_masks(env: Any) -> np.ndarray:
    """The current action masks of ``env`` (a ``VecEnv``: one row per sub-env; a gymnasium env: one flat row), through
    sb3-contrib's ``get_action_masks``; imported here, where masks are first read, so that ``import sb3_trpo`` does
    not import sb3-contrib."""
    from sb3_contrib.common.maskable.utils import get_action_masks

    return np.asarray(get_action_masks(env))


def mask_blocks(space: spaces.Space) -> list[int]:
    """The sizes of the mask's blocks, one per component of ``space`` (``Discrete``, ``MultiDiscrete``, ``MultiBinary``)."""
    if isinstance(space, spaces.Discrete):
        return [int(space.n)]
    if isinstance(space, spaces.MultiDiscrete):
        return [int(n) for n in np.asarray(space.nvec).reshape(-1)]
    if isinstance(space, spaces.MultiBinary):
        return [2] * int(np.prod(space.shape))
    raise TypeError(f"action masks need a Discrete, MultiDiscrete or MultiBinary action space; got {space}")


def check_action_masks(masks: object, space: spaces.Space, n_rows: int, where: str) -> np.ndarray:
    """``masks`` as a boolean array ``(n_rows, mask_dims)``, or a ``ValueError`` that names ``where`` they came from, the
    expected shape, and the first row and component without a valid action.

    A single row may come flat (``(mask_dims,)``, as one env's ``action_masks()`` returns it) when ``n_rows`` is 1.
    """
    blocks = mask_blocks(space)
    width = sum(blocks)
    array = np.asarray(masks)
    if array.shape == (width,) and n_rows == 1:
        array = array.reshape(1, width)
    if array.shape != (n_rows, width):
        raise ValueError(
            f"action masks from {where} have shape {array.shape}; expected ({n_rows}, {width}): one row per env (or "
            f"state) and one entry per action of {space} (MultiDiscrete: the components' actions one after the other; "
            "MultiBinary: two per bit, for 0 and 1)"
        )
    valid = array.astype(bool)
    for component, (start, size) in enumerate(zip(np.cumsum([0, *blocks[:-1]]), blocks, strict=True)):
        empty = ~valid[:, start : start + size].any(axis=1)
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            what = "" if len(blocks) == 1 else f" in component {component}"
            raise ValueError(
                f"action mask row {row} from {where} allows no action{what}: every state needs at least one valid "
                f"action; got {array[row].tolist()}"
            )
    return valid


@dataclass(frozen=True)
class MaskedStates:
    """States of a maskable policy: observations and the action masks the rollout stored with them.

    ``distribution`` is the policy's masked distribution (sb3-contrib's ``get_distribution(obs, action_masks)``): the
    surrogate, the KL and the Fisher products of the policy step are all those of the masked policy.
    """

    observations: PyTorchObs
    action_masks: th.Tensor

    def __len__(self) -> int:
        return batch_length(self.observations)

    def distribution(self, policy: BasePolicy) -> Distribution:
        return policy.get_distribution(self.observations, action_masks=self.action_masks)  # type: ignore[operator]

    def subset(self, index: slice | np.ndarray) -> MaskedStates:
        return MaskedStates(index_obs(self.observations, index), self.action_masks[index])

    def join(self, other: PolicyStates) -> MaskedStates:
        assert other.action_masks is not None, "masked states join masked states only"
        return MaskedStates(
            join_observations(self.observations, other.observations), th.cat([self.action_masks, other.action_masks])
        )


def uniform_valid_actions(
    space: spaces.Space, masks: np.ndarray, n_actions: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n_actions`` draws at each of N states, uniform over each state's valid actions (each component independently),
    ``(K, N, ...)`` in the policy's action format, and their ``log q``, ``(K, N)``.

    ``masks`` is ``(N, mask_dims)``; ``q`` is ``prod_c 1 / (valid actions of component c)`` at each state.
    """
    blocks = mask_blocks(space)
    valid = np.asarray(masks).astype(bool)
    n_states = len(valid)
    components = []
    log_q = np.zeros(n_states)
    for start, size in zip(np.cumsum([0, *blocks[:-1]]), blocks, strict=True):
        block = valid[:, start : start + size]
        counts = block.sum(axis=1)
        log_q -= np.log(counts)
        picks = (rng.random((n_actions, n_states)) * counts).astype(np.int64)  # the k-th valid action, k < count
        order = np.argsort(~block, axis=1, kind="stable")  # valid action indices first, in increasing order
        components.append(np.take_along_axis(order[None], picks[..., None], axis=2)[..., 0])
    indices = np.stack(components, axis=-1)
    actions: np.ndarray = indices
    if isinstance(space, spaces.Discrete):
        actions = indices[..., 0]
    elif isinstance(space, spaces.MultiBinary):
        actions = indices.astype(np.float32).reshape(n_actions, n_states, *space.shape)
    return actions, np.broadcast_to(log_q, (n_actions, n_states)).copy()
